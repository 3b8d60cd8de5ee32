"""Pseudo-labels: keep the unlabelled images the ensemble is sure about, in train.csv form.

An image is kept only when, for every class, the ensemble is confident either way and its
post-processed mask agrees:

- presence probability p of class c: the classification heads' presence when the models
  have heads, otherwise the largest pixel probability of c in the image;
- p > hi: judged present, and its post-processed mask must be non-empty;
- p < lo: judged absent, and its post-processed mask must be empty;
- lo <= p <= hi: uncertain. A mask that contradicts the judgement: disagreeing.

One uncertain or disagreeing class drops the whole image. The core (`presence_probability`,
`judge`, `kept`, `tally`) is pure numpy; `pseudo_label` runs the ensemble and writes files.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sever import fileio
from sever.data import rle
from sever.data.splits import read_split
from sever.data.tables import LONG, write_labels
from sever.engine.runs import run_dir_of
from sever.errors import CheckpointError, ConfigError, OptionError
from sever.fileio import atomic_path, check_output_file
from sever.inference.ensemble import Ensemble
from sever.inference.models import Member
from sever.inference.postprocess import postprocess_batch
from sever.inference.predict import (
    autocast_dtype,
    check_members,
    image_loader,
    loader_ids,
    predict_batches,
)
from sever.progress import Tracker

# Verdict codes of `judge`, indexes into VERDICTS.
PRESENT, ABSENT, UNCERTAIN, DISAGREE = range(4)
VERDICTS = ("present", "absent", "uncertain", "disagree")


def check_cutoffs(hi: float, lo: float) -> None:
    """Raise ConfigError unless 0 <= lo <= hi <= 1 (hi == lo leaves nothing uncertain)."""
    for name, value in (("--hi", hi), ("--lo", lo)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} {value}: expected a probability in [0, 1]")
    if hi < lo:
        raise ConfigError(
            f"--hi {hi} is below --lo {lo}: expected lo <= hi, e.g. --hi 0.95 --lo 0.05"
        )


def presence_probability(
    probs: NDArray[np.floating[Any]], heads: NDArray[np.floating[Any]] | None = None
) -> NDArray[np.floating[Any]]:
    """Per-image, per-class presence probability (N, C).

    Args:
        probs: (N, C, H, W) pixel probabilities.
        heads: (N, C) classification-head presence, used as is when given; without heads,
            the largest pixel probability of each class in each image.
    """
    if heads is not None:
        return np.asarray(heads, dtype=np.float32)
    peaks: NDArray[np.floating[Any]] = np.asarray(probs).max(axis=(2, 3))
    return peaks


def judge(
    presence: NDArray[np.floating[Any]], masks: NDArray[np.bool_], hi: float, lo: float
) -> NDArray[np.int8]:
    """Verdict codes (N, C): PRESENT, ABSENT, UNCERTAIN or DISAGREE.

    Args:
        presence: (N, C) presence probabilities.
        masks: (N, C, H, W) bool post-processed masks.
        hi: above it a class is judged present (its mask must be non-empty).
        lo: below it a class is judged absent (its mask must be empty).
    """
    presence = np.asarray(presence)
    non_empty: NDArray[np.bool_] = np.any(masks, axis=(2, 3))
    if presence.shape != non_empty.shape:
        raise ValueError(f"presence {presence.shape} does not match masks {masks.shape[:2]}")
    verdicts = np.full(presence.shape, UNCERTAIN, dtype=np.int8)
    present, absent = presence > hi, presence < lo
    verdicts[present] = np.where(non_empty[present], PRESENT, DISAGREE)
    verdicts[absent] = np.where(non_empty[absent], DISAGREE, ABSENT)
    return verdicts


def kept(verdicts: NDArray[np.int8]) -> NDArray[np.bool_]:
    """(N,) bool: images whose every class is confidently present or absent, and agrees."""
    keep: NDArray[np.bool_] = np.all(np.isin(verdicts, (PRESENT, ABSENT)), axis=1)
    return keep


def tally(verdicts: NDArray[np.int8], keep: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per-class counts (C, 5): present kept, absent kept, uncertain, disagree, and
    dropped because of another class; each row sums to the number of images."""
    v, k = np.asarray(verdicts), np.asarray(keep)[:, None]
    return np.stack(
        [
            ((v == PRESENT) & k).sum(0),
            ((v == ABSENT) & k).sum(0),
            (v == UNCERTAIN).sum(0),
            (v == DISAGREE).sum(0),
            (np.isin(v, (PRESENT, ABSENT)) & ~k).sum(0),
        ],
        axis=1,
    )


COUNTS = ("present_kept", "absent_kept", "uncertain", "disagree", "dropped_other")


def sibling(out: Path, suffix: str) -> Path:
    """`<out stem>-<suffix>` beside out: pseudo.csv -> pseudo-images.txt."""
    return out.with_name(f"{out.stem}-{suffix}")


def check_outputs(out: Path) -> None:
    """`out` and the two files written beside it can be written."""
    check_output_file(out, "--out")
    for suffix in ("images.txt", "summary.json"):
        if sibling(out, suffix).is_dir():
            raise OptionError(
                f"--out {out}: {sibling(out, suffix)} is a folder, and pseudo-label writes that "
                "file beside the CSV; move it or choose another --out"
            )


def training_images(member: Member) -> tuple[set[str], Path] | None:
    """The images a member's run trained and validated on (its split.csv), or None when
    the checkpoint is not inside a run directory."""
    try:
        run = run_dir_of(member.path)
    except CheckpointError:
        return None
    split = run / "split.csv"
    return (set(read_split(split)["ImageId"]), split) if split.is_file() else None


def check_unlabelled(images_dir: Path, images: list[str], members: list[Member]) -> None:
    """Refuse to pseudo-label labelled training images: a member's own training folder, or
    images listed in a member's split.csv."""
    for member in members:
        own = Path(member.config.data.dir) / "train_images"
        if own.is_dir() and own.resolve() == images_dir.resolve():
            raise ConfigError(
                f"--images {images_dir}: the training images of {member.path}; pseudo-label "
                "unlabelled images, such as test_images"
            )
        known = training_images(member)
        if known is None:
            continue
        labelled = sorted(set(images) & known[0])
        if labelled:
            raise ConfigError(
                f"--images {images_dir}: {len(labelled)} of its {len(images)} images are "
                f"labelled training images in {known[1]} (e.g. {labelled[0]}); pseudo-label "
                "unlabelled images, such as test_images"
            )


@dataclass(frozen=True)
class PseudoReport:
    """What pseudo-label kept and why it dropped the rest, and the files it wrote.

    Attributes:
        classes: per class ('1'..'N'), the counts of COUNTS; each adds up to `seen`.
        presence: where the presence probabilities came from.
    """

    seen: int
    kept: int
    hi: float
    lo: float
    presence: str
    classes: dict[str, dict[str, int]]
    out: Path

    @property
    def files(self) -> list[Path]:
        return [self.out, sibling(self.out, "images.txt"), sibling(self.out, "summary.json")]

    def to_dict(self) -> dict[str, Any]:
        """The summary: `<out stem>-summary.json` and --json."""
        return {
            "images_seen": self.seen,
            "images_kept": self.kept,
            "images_dropped": self.seen - self.kept,
            "hi": self.hi,
            "lo": self.lo,
            "presence": self.presence,
            "classes": self.classes,
        }

    def lines(self) -> list[str]:
        lines = [f"images: {self.seen} seen, {self.kept} kept"]
        for c, counts in self.classes.items():
            lines.append(f"class {c}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return lines + [f"wrote {path}" for path in self.files]


def pseudo_label(
    ensemble: Ensemble, images_dir: Path, out: Path, hi: float = 0.95, lo: float = 0.05
) -> PseudoReport:
    """Pseudo-label a folder; write the kept images' defects, their ids and a summary.

    Writes, each atomically: `out` (long ImageId,ClassId,EncodedPixels, defect rows only),
    `<out stem>-images.txt` (every kept ImageId, defect-free ones included, one a line)
    and `<out stem>-summary.json` (the report's `to_dict()`).
    """
    # Everything that can be checked is checked before the work, not after it.
    postprocess = ensemble.applied_postprocess
    members = ensemble.members
    check_cutoffs(hi, lo)
    check_members(members, postprocess)
    check_outputs(out)
    heads = any(m.has_class_head for m in members)
    loader = image_loader(images_dir, ensemble)
    ids = loader_ids(loader)
    check_unlabelled(images_dir, ids, members)
    out.parent.mkdir(parents=True, exist_ok=True)
    amp = autocast_dtype(ensemble.device)
    rows: list[tuple[str, int, str]] = []
    kept_ids: list[str] = []
    counts = np.zeros((members[0].config.model.classes, len(COUNTS)), np.int64)
    seen = 0
    with Tracker(len(ids), "pseudo-label", "images") as progress:
        for batch_ids, probs, presence in predict_batches(ensemble, loader, amp):
            assert probs is not None  # check_members: there is a segmenter
            masks = postprocess_batch(probs, postprocess, presence)
            verdicts = judge(presence_probability(probs, presence), masks, hi, lo)
            keep = kept(verdicts)
            counts += tally(verdicts, keep)
            seen += len(batch_ids)
            for image_id, image_masks in zip(np.asarray(batch_ids)[keep], masks[keep], strict=True):
                kept_ids.append(str(image_id))
                rows += [
                    (str(image_id), c + 1, rle.encode(m))
                    for c, m in enumerate(image_masks)
                    if m.any()
                ]
            progress.update(len(batch_ids))
    report = PseudoReport(
        seen,
        len(kept_ids),
        hi,
        lo,
        "classifiers and class heads" if heads else "max pixel probability",
        {str(c + 1): dict(zip(COUNTS, map(int, row), strict=True)) for c, row in enumerate(counts)},
        out,
    )
    beside = {
        sibling(out, "images.txt"): "".join(f"{i}\n" for i in kept_ids),
        sibling(out, "summary.json"): json.dumps(report.to_dict(), indent=2) + "\n",
    }
    # all three written before any is renamed: a failed write (a full disk) replaces none
    with ExitStack() as stack:
        for path, text in beside.items():
            stack.enter_context(fileio.writing(path, "pseudo-label file"))
            stack.enter_context(atomic_path(path)).write_text(text)
        labels = pd.DataFrame(rows, columns=list(LONG))
        with fileio.writing(out, "pseudo-labels"):
            write_labels(labels, kept_ids, out, "long", ensemble.classes)
    return report
