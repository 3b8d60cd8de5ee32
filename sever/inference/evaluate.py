"""`sever evaluate`: score an ensemble on its runs' own validation splits, at full size.

One checkpoint, or an ensemble: segmenters with classifiers beside them (their presence
gates or scales the masks, as in predict), and k-fold runs, each scored on its own fold
(out of fold, as `tune` scores them), the scores pooled over every image.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sever.fileio import atomic_path, writable_or, writing
from sever.inference.bootstrap import Interval, score_intervals
from sever.inference.compare import Candidate
from sever.inference.ensemble import Ensemble
from sever.inference.postprocess import postprocess_batch
from sever.inference.predict import check_members
from sever.inference.validation import group_by_split, run_of, validation_batches, validation_set
from sever.model.metrics import DiceMeter, PresenceMeter, dice_per_pair
from sever.progress import Tracker


@dataclass(frozen=True)
class EvalReport:
    """Scores of an ensemble on its validation images, and what was scored.

    Attributes:
        scores: Kaggle Dice (`dice_mean`, `dice_1`.., `dice_positive`, `empty_baseline`)
            and image-level `precision_c`, `recall_c`, `f1_c`; a classifier alone gets
            the image-level scores and `f1_mean`.
        folds: groups scored apart (k-fold runs, each on its own fold).
        intervals: `dice_mean` and per class (`dice_1`..) with a 95% bootstrap interval
            over the images (`sever.inference.bootstrap`); empty for classifiers alone.
        postprocess: the post-processing applied (None for classifiers alone).
        path: where the report was written; `replaced`: over an earlier report of the
            same options, at the default place.
    """

    scores: dict[str, float]
    images: int
    folds: int
    checkpoints: list[str]
    weights: list[float]
    postprocess: dict[str, Any] | None
    tta: str
    averaging: str
    intervals: dict[str, Interval] = field(default_factory=dict)
    path: Path | None = None
    replaced: bool = False
    # per image, for `evaluate --html` (not in the report file)
    candidate: Candidate | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The report file's and --json's object."""
        return {
            # an undefined score (precision or recall of a class never predicted or never
            # present) is null, not NaN, which JSON has not
            **{k: None if math.isnan(v) else v for k, v in self.scores.items()},
            "images": self.images,
            "folds": self.folds,
            "checkpoints": self.checkpoints,
            "weights": self.weights,
            "postprocess": self.postprocess,
            "tta": self.tta,
            "averaging": self.averaging,
            "intervals": {k: i.to_dict() for k, i in self.intervals.items()},
        }

    def lines(self) -> list[str]:
        lines = []
        for key, value in self.scores.items():
            interval = self.intervals.get(key)
            shown = interval.text() if interval else f"{value:.4f}"
            lines.append(f"{key:>15}: {'' if math.isnan(value) else shown}".rstrip())
        if self.intervals:
            lines.append(f"[95% intervals: a bootstrap over the {self.images} images]")
        note = " (replacing its report of the same options)" if self.replaced else ""
        return [*lines, f"wrote {self.path}{note}"]


def evaluate_runs(
    ensemble: Ensemble, data_dir: Path | None = None, out: Path | None = None
) -> EvalReport:
    """Score the ensemble on its runs' validation images and write the report as JSON.

    Members sharing a validation split are ensembled; runs of different folds are each
    scored on their own fold's images. Classifiers beside the segmenters give the presence
    that the post-processing's `gate` and `scale_c` use. Classifiers alone get the
    image-level scores of their presence probabilities above `trainer.threshold`.

    Args:
        ensemble: without a post-processing, the one default (`Ensemble.applied_postprocess`),
            which validation during training uses too, so it reproduces the run's own.
        data_dir: the dataset folder, when the run's data.dir is not found (see
            `sever.inference.validation.data_dir_of`).
        out: the report's path; default: the first model's run, `report_path`, or when
            the run cannot be written (a read-only mount) the current folder, the run's
            name before the checkpoint's (`eval-<experiment>-<run>-<checkpoint>...json`).
    """
    run = run_of(ensemble.members[0])
    folder = run if out is not None else writable_or(run, Path.cwd(), "evaluate's report")
    report = score_validation(ensemble, data_dir)
    plain = len(ensemble.members) == 1 and ensemble.tta == "none" and ensemble.postprocess is None
    path = out or report_path(report, run, plain)
    if folder != run:
        path = folder / path.name.replace("eval-", f"eval-{run.parent.name}-{run.name}-", 1)
    replaced = out is None and path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_report(report, path)
    return replace(report, path=path, replaced=replaced)


def score_validation(ensemble: Ensemble, data_dir: Path | None = None) -> EvalReport:
    """The scores of `evaluate_runs`, written nowhere."""
    members = ensemble.members
    classifiers_only = all(m.task == "classify" for m in members)
    postprocess = None
    if not classifiers_only:
        postprocess = ensemble.applied_postprocess
        check_members(members, postprocess)
    groups = group_by_split(members, need_segmenter=not classifiers_only)
    classes = members[0].config.model.classes
    dice, presence = DiceMeter(classes), PresenceMeter(classes)
    # per image, for the intervals and the HTML report: ids, Dice, truth empty, predicted
    ids_seen: list[str] = []
    pairs: list[np.ndarray] = []
    empty: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    sets = [(group, validation_set(run, group[0], data_dir)) for group, run in groups]
    images = sum(len(dataset) for _, dataset in sets)
    with Tracker(images, "evaluate", "images") as progress:
        for group, dataset in sets:
            batches = validation_batches(replace(ensemble, members=group), dataset)
            for ids, probs, heads, masks in batches:
                truth = torch.from_numpy(masks)
                if postprocess is None:  # classifiers alone: image-level scores
                    assert heads is not None  # every member is a classifier
                    threshold = group[0].config.trainer.threshold
                    presence.update(torch.from_numpy(heads > threshold), truth.amax((2, 3)))
                else:
                    assert probs is not None  # group_by_split: each group has a segmenter
                    pred = torch.from_numpy(postprocess_batch(probs, postprocess, heads))
                    pair = dice_per_pair(pred, truth)  # once, for the meter and the intervals
                    shown, present = pred.flatten(2).any(2), truth.bool().flatten(2).any(2)
                    dice.add(pair, present)
                    presence.update(shown, present)
                    pairs.append(pair.double().numpy())
                    empty.append(~present.numpy())
                    predicted.append(shown.numpy())
                    ids_seen += ids
                progress.update(len(ids))
    scores = presence.compute() if classifiers_only else dice.compute() | presence.compute()
    intervals, candidate = {}, None
    if pairs:
        found = score_intervals(np.concatenate(pairs))
        intervals = {("dice_mean" if k == "mean" else f"dice_{k}"): i for k, i in found.items()}
        name = ", ".join(Path(m.path).name for m in members)
        per_image = (np.concatenate(pairs), np.concatenate(empty), np.concatenate(predicted))
        candidate = Candidate(name, ids_seen, *per_image)
    return EvalReport(
        scores,
        images,
        len(groups),
        [str(m.path) for m in members],
        [m.weight for m in members],
        None if postprocess is None else postprocess.to_dict(),
        ensemble.tta,
        ensemble.averaging,
        intervals,
        candidate=candidate,
    )


def report_path(report: EvalReport, run: Path, plain: bool) -> Path:
    """Where a report goes by default, in the first model's run: `eval-<checkpoint>.json`
    for one checkpoint with the trainer's post-processing and no TTA (it reproduces the
    run's validation), else `eval-<checkpoint>-<key>.json`, the key naming the models and
    options, so that an evaluation with other options never replaces another's report."""
    stem = Path(report.checkpoints[0]).stem
    if plain:
        return run / f"eval-{stem}.json"
    options: dict[str, Any] = {
        "weights": report.weights,
        "postprocess": report.postprocess,
        "tta": report.tta,
        "averaging": report.averaging,
    }
    options["checkpoints"] = [str(Path(p).resolve()) for p in report.checkpoints]
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return run / f"eval-{stem}-{key}.json"


def write_report(report: EvalReport, path: Path) -> Path:
    with writing(path, "report"), atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n")
    return path
