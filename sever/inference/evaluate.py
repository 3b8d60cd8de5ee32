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
from sever.model.metrics import DiceMeter


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


class PresenceMeter:
    """Image-level precision and recall per class: is the class present at all?"""

    def __init__(self, classes: int) -> None:
        self.counts = np.zeros((3, classes), np.int64)  # true pos, false pos, false neg

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """pred, truth: (N, C, H, W) masks."""
        p, t = pred.any(axis=(2, 3)), truth.any(axis=(2, 3))
        self.counts += np.stack([(p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0)])

    def compute(self) -> dict[str, float]:
        tp, fp, fn = self.counts.astype(float)
        out = {}
        for c in range(len(tp)):
            out[f"precision_{c + 1}"] = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else float("nan")
            out[f"recall_{c + 1}"] = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else float("nan")
        return out


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
    per-class image-level precision and recall, for `member` on its run's validation split.
    """
    postprocess = postprocess or training_postprocess(member)
    dataset = validation_set(run, member)
    loader = DataLoader(dataset, batch_size, num_workers=workers)
    truths: list[np.ndarray] = []
    dice, presence = DiceMeter(member.config.model.classes), PresenceMeter(4)
    for _, probs, heads in predict_batches([member], masks_aside(loader, truths), tta):
        pred, truth = postprocess_batch(probs, postprocess, heads), truths.pop(0)
        dice.update(torch.from_numpy(pred), torch.from_numpy(truth))
        presence.update(pred.astype(bool), truth.astype(bool))
    return {
        **dice.compute(),
        **presence.compute(),
        "images": len(dataset),
        "checkpoint": str(member.path),
        "postprocess": postprocess.to_dict(),
        "tta": tta,
    }


def write_report(report: dict, run: Path, checkpoint: Path) -> Path:
    path = run / f"eval-{checkpoint.stem}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
