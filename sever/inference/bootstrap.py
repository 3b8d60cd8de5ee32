"""How sure is a difference of scores? A paired bootstrap over images.

Kaggle's private leaderboard is a sample of images, so the uncertainty that matters when
choosing between two options scored on the same validation images is that of the image
sample. The paired bootstrap resamples images with replacement, the same images for both
options, and recomputes the difference of their mean Dice. Everything works on per-image
Dice (image x class), never re-predicting: resample b is a row of counts (how often each
image was drawn), and its means are one matrix product, so 1,000 resamples of the
competition's 12,568 images take a fraction of a second.

Pure numpy; `bench/bench_bootstrap.py` times it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic with its bootstrap interval.

    Attributes:
        value: the statistic on the images as they are.
        low, high: the central `CONFIDENCE` percentile interval of the resampled values.
    """

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def text(self, digits: int = 4) -> str:
        """`0.9012 [0.8950, 0.9071]`."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Difference:
    """A minus B, paired over the same images, overall ('mean') and per class.

    Attributes:
        diff: per key ('mean', then 1, 2, ...), the difference of mean Dice with its
            interval.
        p_better: per key, the share of resamples in which A scores higher than B (ties
            count half).
    """

    diff: dict[str, Interval]
    p_better: dict[str, float]

    def verdict(self, a: str = "A", b: str = "B", key: str = "mean") -> str:
        """'A better', 'B better', or 'within noise' (the interval holds 0)."""
        interval = self.diff[key]
        if interval.low > 0:
            return f"{a} better"
        if interval.high < 0:
            return f"{b} better"
        return "within noise"

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            key: {**interval.to_dict(), "p_better": self.p_better[key]}
            for key, interval in self.diff.items()
        }


def resample_counts(images: int, resamples: int, seed: int) -> npt.NDArray[np.float64]:
    """(resamples, images): how often each image is drawn in each resample, `images`
    draws with replacement per resample, seeded."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(images, size=(resamples, images))
    rows = np.arange(resamples)[:, None] * images
    counts = np.bincount((draws + rows).ravel(), minlength=resamples * images)
    return counts.reshape(resamples, images).astype(np.float64)


def columns(dice: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """(N, C) per-image Dice -> (N, 1 + C): the image's mean over classes, then each
    class: the quantities whose means the bootstrap resamples."""
    dice = np.asarray(dice, np.float64)
    if dice.ndim != 2 or dice.shape[0] == 0:
        raise ValueError(f"expected per-image Dice of shape (images, classes), got {dice.shape}")
    return np.concatenate([dice.mean(1, keepdims=True), dice], axis=1)


def keys(classes: int) -> list[str]:
    return ["mean", *(str(c) for c in range(1, classes + 1))]


def interval(values: npt.NDArray[np.float64], observed: float) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(observed), float(low), float(high))


def score_intervals(
    dice: npt.NDArray[np.floating], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Interval]:
    """Mean Dice ('mean') and per-class Dice of one option, each with its interval.

    Args:
        dice: (N, C) Dice of every (image, class) pair.
    """
    table = columns(dice)
    counts = resample_counts(len(table), resamples, seed)
    means = counts @ table / len(table)
    return {
        key: interval(means[:, j], float(table[:, j].mean()))
        for j, key in enumerate(keys(table.shape[1] - 1))
    }


def paired_difference(
    dice_a: npt.NDArray[np.floating],
    dice_b: npt.NDArray[np.floating],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Difference:
    """A minus B on the same images: the difference of mean Dice, overall and per class,
    each with its interval and the probability that A is the better.

    Args:
        dice_a, dice_b: (N, C) per-image Dice of the two options, the images in the same
            order.
    """
    a, b = columns(dice_a), columns(dice_b)
    if a.shape != b.shape:
        raise ValueError(f"the options were scored on different images: {a.shape} vs {b.shape}")
    delta = a - b
    counts = resample_counts(len(delta), resamples, seed)
    means = counts @ delta / len(delta)
    better = (means > 0).mean(0) + 0.5 * (means == 0).mean(0)
    names = keys(delta.shape[1] - 1)
    return Difference(
        {key: interval(means[:, j], float(delta[:, j].mean())) for j, key in enumerate(names)},
        {key: float(better[j]) for j, key in enumerate(names)},
    )
