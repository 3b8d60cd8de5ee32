"""`sever evaluate`: score checkpoints on their own runs' validation splits, at full size.

One checkpoint, or an ensemble: segmenters with classifiers beside them (their presence
gates or scales the masks, as in predict), and k-fold runs, each scored on its own fold
(out of fold, as `tune` scores them), the scores pooled over every image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sever.fileio import atomic_path
from sever.inference.models import Member
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.predict import check_members, predict_batches
from sever.inference.validation import group_by_split, masks_aside, validation_set
from sever.model.metrics import DiceMeter, PresenceMeter
from sever.progress import Tracker


def training_postprocess(member: Member) -> PostProcess:
    """The post-processing the trainer validated with: its threshold and min pixels only."""
    trainer = member.config.trainer
    return PostProcess(
        threshold=(trainer.threshold,) * 4,
        min_pixels=tuple(trainer.min_pixels or (0,) * 4),
        one_class_per_pixel=False,
    )


def evaluate(
    members: list[Member],
    postprocess: PostProcess | None = None,
    tta: str = "none",
    averaging: str = "mean",
    batch_size: int = 4,
    workers: int = 2,
    data_dir: Path | None = None,
) -> dict:
    """Kaggle Dice, per class, on pairs with a defect, the all-empty baseline, and
    per-class image-level precision, recall and F1 of the post-processed masks, for the
    members on their runs' validation images.

    Members sharing a validation split are ensembled; runs of different folds are each
    scored on their own fold's images. Classifiers beside the segmenters give the presence
    that `postprocess.gate` and `scale_c` use. Classifiers alone get the image-level
    scores of their presence probabilities above `trainer.threshold`.

    Args:
        postprocess: default: the trainer's threshold and min_pixels (of the first
            segmenter), which reproduces the run's own validation.
        data_dir: the dataset folder, when the run's data.dir is not found (see
            `sever.inference.validation.data_dir_of`).
    """
    classifiers_only = all(m.task == "classify" for m in members)
    if not classifiers_only:
        segmenter = next(m for m in members if m.task == "segment")
        postprocess = postprocess or training_postprocess(segmenter)
        check_members(members, postprocess)
    groups = group_by_split(members, need_segmenter=not classifiers_only)
    classes = members[0].config.model.classes
    dice, presence = DiceMeter(classes), PresenceMeter(classes)
    sets = [(group, validation_set(run, group[0], data_dir)) for group, run in groups]
    images = sum(len(dataset) for _, dataset in sets)
    with Tracker(images, "evaluate", "images") as progress:
        for group, dataset in sets:
            loader = DataLoader(dataset, batch_size, num_workers=workers)
            truths: list[np.ndarray] = []
            batches = predict_batches(group, masks_aside(loader, truths), tta, averaging)
            for ids, probs, heads in batches:
                truth = torch.from_numpy(truths.pop(0))
                if classifiers_only:
                    threshold = group[0].config.trainer.threshold
                    presence.update(torch.from_numpy(heads > threshold), truth.amax((2, 3)))
                else:
                    pred = torch.from_numpy(postprocess_batch(probs, postprocess, heads))
                    dice.update(pred, truth)
                    presence.update(pred.flatten(2).any(2), truth.amax((2, 3)))
                progress.update(len(ids))
    scores = presence.compute() if classifiers_only else dice.compute() | presence.compute()
    return {
        **scores,
        "images": images,
        "folds": len(groups),
        "checkpoints": [str(m.path) for m in members],
        "weights": [m.weight for m in members],
        "postprocess": None if classifiers_only else postprocess.to_dict(),
        "tta": tta,
        "averaging": averaging,
    }


def report_path(report: dict, run: Path, plain: bool) -> Path:
    """Where a report goes by default, in the first model's run: `eval-<checkpoint>.json`
    for one checkpoint with the trainer's post-processing and no TTA (it reproduces the
    run's validation), else `eval-<checkpoint>-<key>.json`, the key naming the models and
    options, so that an evaluation with other options never replaces another's report."""
    stem = Path(report["checkpoints"][0]).stem
    if plain:
        return run / f"eval-{stem}.json"
    options = {k: report[k] for k in ("weights", "postprocess", "tta", "averaging")}
    options["checkpoints"] = [str(Path(p).resolve()) for p in report["checkpoints"]]
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return run / f"eval-{stem}-{key}.json"


def write_report(report: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
