"""`sever counts`: do a submission's defect counts look like the data?

The share of images predicted to hold each class is set beside a reference: the training
data's share, or an expected distribution the user gives (one probed from the
leaderboard, say). A class is flagged when the two differ by more than sampling alone
explains: 1.96 standard errors of the difference of two proportions, sqrt(p (1 - p)
(1/n_pred + 1/n_ref)) at the pooled share p (for a given expected share, only the
prediction's sample counts). The top teams did this by hand; a submission predicting class
2 on twice as many images as training suggests is one to look at before it is chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sever.data.tables import DEFAULT_CLASSES, read_labels
from sever.errors import DataError, OptionError

Z95 = 1.96


@dataclass(frozen=True)
class ClassCount:
    """One class: images predicted with it and the reference, as counts and shares.

    Attributes:
        images: images predicted to hold the class; `of` images in all.
        reference: the reference share; `reference_images` the reference's sample size
            (None for an expected share, taken as exact).
        spread: 1.96 standard errors of the difference (what sampling alone gives).
    """

    class_id: int
    images: int
    of: int
    reference: float
    reference_images: int | None
    spread: float

    @property
    def share(self) -> float:
        return self.images / self.of

    @property
    def flagged(self) -> bool:
        return abs(self.share - self.reference) > self.spread

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "of": self.of,
            "share": self.share,
            "reference": self.reference,
            "reference_images": self.reference_images,
            "spread": self.spread,
            "flagged": self.flagged,
        }


@dataclass(frozen=True)
class CountReport:
    submission: Path
    reference: str  # 'training data DIR' or 'expected'
    classes: list[ClassCount]

    def to_dict(self) -> dict[str, Any]:
        return {
            "submission": str(self.submission),
            "reference": self.reference,
            "classes": {str(c.class_id): c.to_dict() for c in self.classes},
        }

    def lines(self) -> list[str]:
        lines = [f"class  {'predicted':>20}  {'reference':>20}  difference  (reference: "
                 f"{self.reference})"]  # fmt: skip
        for c in self.classes:
            ref = f"{c.reference:.1%}"
            if c.reference_images is not None:
                ref = f"{round(c.reference * c.reference_images)}/{c.reference_images} ({ref})"
            pred = f"{c.images}/{c.of} ({c.share:.1%})"
            diff = f"{(c.share - c.reference) * 100:+.1f} pts"
            flag = (
                f"  ! more than sampling explains (+-{c.spread * 100:.1f} pts)" if c.flagged else ""
            )
            lines.append(f"{c.class_id:>5}  {pred:>20}  {ref:>20}  {diff:>10}{flag}")
        flagged = [str(c.class_id) for c in self.classes if c.flagged]
        verdict = "every class within sampling of the reference"
        if flagged:
            many = len(flagged) > 1
            verdict = (
                f"class{'es' * many} {', '.join(flagged)} differ{'s' * (not many)} from the "
                "reference beyond sampling"
            )
        return [*lines, verdict]


def class_counts(
    predicted: dict[int, int],
    images: int,
    reference: dict[int, float],
    reference_images: int | None,
) -> list[ClassCount]:
    """Pure: per class, the predicted count against a reference share; `reference_images`
    None takes the reference as exact."""
    found = []
    for c in sorted(reference):
        count, ref = predicted.get(c, 0), reference[c]
        if reference_images is None:
            p, inverse = ref, 1 / images
        else:
            p = (count + ref * reference_images) / (images + reference_images)
            inverse = 1 / images + 1 / reference_images
        spread = Z95 * math.sqrt(p * (1 - p) * inverse)
        found.append(ClassCount(c, count, images, ref, reference_images, spread))
    return found


def images_per_class(
    csv: Path, images_dir: Path | None, classes: int
) -> tuple[dict[int, int], int]:
    """How many images hold each class, and how many images in all (a long CSV's images
    are known only with their folder)."""
    labels = read_labels(csv, images_dir, None, classes)
    if labels.format == "long" and images_dir is None:
        raise OptionError(
            f"{csv}: the long format lists only defects, so the defect-free images are known "
            "only from the image folder: give --images DIR"
        )
    if not labels.images:
        raise DataError(f"{csv}: no images")
    per_class = labels.defects.groupby("ClassId")["ImageId"].nunique()
    found = zip(per_class.index.astype(int), per_class.to_numpy(), strict=True)
    return {int(c): int(n) for c, n in found}, len(labels.images)


def parse_expected(spec: str, classes: int) -> dict[int, float]:
    """'1:0.07,2:0.02,3:0.4,4:0.06' -> {1: 0.07, ...}: a share in [0, 1] for every class."""
    found: dict[int, float] = {}
    for part in spec.split(","):
        key, _, value = part.partition(":")
        try:
            c, share = int(key), float(value)
        except ValueError:
            raise OptionError(
                f"--expected {spec}: expected CLASS:SHARE pairs, e.g. 1:0.07,2:0.02,3:0.4,4:0.06"
            ) from None
        if not 1 <= c <= classes or not 0 <= share <= 1:
            raise OptionError(
                f"--expected {spec}: {part}: classes run 1..{classes}, shares from 0 to 1"
            )
        found[c] = share
    missing = [str(c) for c in range(1, classes + 1) if c not in found]
    if missing:
        raise OptionError(f"--expected {spec}: no share for class {', '.join(missing)}")
    return found


def check_counts(
    submission: Path,
    images_dir: Path | None = None,
    train: Path | None = None,
    expected: str | None = None,
    classes: int = DEFAULT_CLASSES,
) -> CountReport:
    """Compare a submission's images per class with the training data (`train`, a dataset
    folder) or an expected distribution (`expected`, CLASS:SHARE pairs)."""
    if (train is None) == (expected is None):
        raise OptionError("give --train DATA_DIR or --expected 1:SHARE,2:SHARE,... (one of them)")
    wanted = parse_expected(expected, classes) if expected is not None else None
    predicted, images = images_per_class(submission, images_dir, classes)
    if wanted is not None:
        return CountReport(submission, "expected", class_counts(predicted, images, wanted, None))
    assert train is not None
    counts, total = images_per_class(train / "train.csv", train / "train_images", classes)
    shares = {c: counts.get(c, 0) / total for c in range(1, classes + 1)}
    found = class_counts(predicted, images, shares, total)
    return CountReport(submission, f"training data {train}", found)
