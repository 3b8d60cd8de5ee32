"""`sever evaluate`: score a checkpoint on its own run's validation split, at full size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sever.data.augment import build_transform
from sever.data.dataset import SteelDataset
from sever.data.splits import read_split
from sever.data.tables import read_labels
from sever.fileio import atomic_path
from sever.inference.models import Member
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.predict import predict_batches
from sever.model.metrics import DiceMeter, PresenceMeter


def validation_set(run: Path, member: Member) -> SteelDataset:
    """The run's validation images (from its split.csv) with their masks, unaugmented."""
    config = member.config
    split = read_split(run / "split.csv")
    ids = split.loc[split["split"] == "val", "ImageId"].tolist()
    data = config.data
    labels = read_labels(data.dir / "train.csv", data.dir / "train_images", data.image_size)
    transform = build_transform("none", None, data.normalize, train=False)
    return SteelDataset(
        data.dir / "train_images", ids, labels.rles(), transform, config.model.classes
    )


def training_postprocess(member: Member) -> PostProcess:
    """The post-processing the trainer validated with: its threshold and min pixels only."""
    trainer = member.config.trainer
    return PostProcess(
        threshold=(trainer.threshold,) * 4,
        min_pixels=tuple(trainer.min_pixels or (0,) * 4),
        one_class_per_pixel=False,
    )


def masks_aside(loader: DataLoader, truths: list[np.ndarray]):
    """(images, ids) for predict_batches from a labelled loader, appending each batch's
    masks (N, C, H, W) to `truths` as it goes, so one pass reads every image once."""
    for images, masks, ids in loader:
        truths.append(masks.numpy())
        yield images, ids


def evaluate(
    run: Path,
    member: Member,
    postprocess: PostProcess | None = None,
    batch_size: int = 4,
    workers: int = 2,
    tta: str = "none",
) -> dict:
    """Kaggle Dice, per class, on pairs with a defect, the all-empty baseline, and
    per-class image-level precision, recall and F1, for `member` on its run's validation
    split. A classifier gets the image-level scores of its presence probabilities alone.
    """
    classifier = member.task == "classify"
    postprocess = postprocess or training_postprocess(member)
    dataset = validation_set(run, member)
    loader = DataLoader(dataset, batch_size, num_workers=workers)
    truths: list[np.ndarray] = []
    classes = member.config.model.classes
    dice, presence = DiceMeter(classes), PresenceMeter(classes)
    for _, probs, heads in predict_batches([member], masks_aside(loader, truths), tta):
        truth = torch.from_numpy(truths.pop(0))
        if classifier:
            threshold = member.config.trainer.threshold
            presence.update(torch.from_numpy(heads > threshold), truth.amax((2, 3)))
            continue
        pred = torch.from_numpy(postprocess_batch(probs, postprocess, heads))
        dice.update(pred, truth)
        presence.update(pred.flatten(2).any(2), truth.amax((2, 3)))
    scores = presence.compute() if classifier else dice.compute() | presence.compute()
    return {
        **scores,
        "images": len(dataset),
        "checkpoint": str(member.path),
        "postprocess": None if classifier else postprocess.to_dict(),
        "tta": tta,
    }


def write_report(report: dict, run: Path, checkpoint: Path) -> Path:
    path = run / f"eval-{checkpoint.stem}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
