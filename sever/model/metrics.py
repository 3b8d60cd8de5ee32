"""Kaggle's Severstal metric: mean Dice over every (image, class) pair, pure torch.

A pair whose prediction and truth are both empty scores 1, so an image without a defect
rewards predicting nothing; `DiceMeter.compute` reports that all-empty baseline beside the
score. Runs on whatever device the tensors are on, with no I/O.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor


def as_bool(masks: Tensor) -> Tensor:
    """Binary masks as bool; float masks are positive above 0.5."""
    return masks > 0.5 if masks.is_floating_point() else masks.bool()


def dice_per_pair(pred: Tensor, truth: Tensor) -> Tensor:
    """Dice 2|X∩Y| / (|X| + |Y|) of each (image, class) pair, 1 when both are empty.

    Args:
        pred: predicted masks (N, C, H, W), bool.
        truth: true masks (N, C, H, W), bool or 0/1.

    Returns:
        (N, C) float32.
    """
    pred, truth = as_bool(pred), as_bool(truth)
    inter = (pred & truth).sum((2, 3))
    sizes = pred.sum((2, 3)) + truth.sum((2, 3))
    dice = 2 * inter / sizes.clamp_min(1)
    return torch.where(sizes == 0, torch.ones_like(dice), dice)


M = TypeVar("M", bound="SummedMeter")


class SummedMeter:
    """A meter that keeps only sums in `self.sums` (rows x classes), so a distributed run
    all-reduces `state()` (sum) and rebuilds the meter with `from_state`."""

    sums: Tensor  # set by the subclass's __init__(classes)

    def __init__(self, classes: int) -> None:
        raise NotImplementedError

    def state(self) -> Tensor:
        """The raw sums, a copy safe to all-reduce."""
        return self.sums.clone()

    @classmethod
    def from_state(cls: type[M], state: Tensor) -> M:
        """A meter holding the sums `state`, e.g. all-reduced over processes."""
        meter = cls(state.shape[1])
        meter.sums = state.clone()
        return meter


class DiceMeter(SummedMeter):
    """Exact mean Dice over all (image, class) pairs seen, whatever the batching.

    It keeps sums, not means: row 0 the Dice sum per class, row 1 the pair count, rows 2
    and 3 the same over pairs whose truth is non-empty. A distributed trainer all-reduces
    `state()` (sum) and rebuilds the meter with `from_state`.

    Args:
        classes: the number of classes C.
    """

    def __init__(self, classes: int = 4) -> None:
        self.sums = torch.zeros(4, classes, dtype=torch.float64)

    def update(self, pred: Tensor, truth: Tensor) -> None:
        """Add a batch: binary predictions and truths, both (N, C, H, W)."""
        self.add(dice_per_pair(pred, truth), as_bool(truth).flatten(2).any(2))

    def add(self, dice: Tensor, positive: Tensor) -> None:
        """Add a batch's pair Dice (N, C) and whether each pair's truth has a defect (N, C),
        when the caller has them already."""
        # float64 keeps the sums exact over any dataset; MPS has no float64.
        dtype = torch.float32 if dice.device.type == "mps" else torch.float64
        dice, positive = dice.to(dtype), positive.to(dtype)
        batch = torch.stack(
            [dice.sum(0), torch.ones_like(dice).sum(0), (dice * positive).sum(0), positive.sum(0)]
        )
        self.sums = self.sums.to(batch.device, dtype) + batch

    def merge(self, other: DiceMeter) -> DiceMeter:
        """Add the pairs of `other` to this meter; returns self."""
        self.sums = self.sums + other.sums.to(self.sums.device, self.sums.dtype)
        return self

    def compute(self) -> dict[str, float]:
        """'dice_mean', 'dice_1'..'dice_C' (Kaggle's 1-based ClassIds), 'dice_positive'
        (over pairs with a non-empty truth; nan if none) and 'empty_baseline' (the score of
        predicting nothing: the share of pairs with an empty truth)."""
        dice, pairs, positive_dice, positives = self.sums.double().cpu()
        scores = {"dice_mean": dice.sum() / pairs.sum()}
        scores |= {f"dice_{c + 1}": dice[c] / pairs[c] for c in range(len(dice))}
        scores["dice_positive"] = positive_dice.sum() / positives.sum()
        scores["empty_baseline"] = 1 - positives.sum() / pairs.sum()
        return {name: float(value) for name, value in scores.items()}


class PresenceMeter(SummedMeter):
    """Image-level precision, recall and F1 per class: is the class present at all?

    Keeps counts (true positives, false positives, false negatives per class), so the
    result is exact over any batching; a distributed trainer all-reduces `state()`.
    F1 is 2TP / (2TP + FP + FN), the Dice of the image-level sets: 1 for a class that is
    neither present nor predicted anywhere. Precision and recall are nan when undefined.

    Args:
        classes: the number of classes C.
    """

    def __init__(self, classes: int = 4) -> None:
        self.sums = torch.zeros(3, classes, dtype=torch.int64)  # TP, FP, FN per class

    def update(self, pred: Tensor, truth: Tensor) -> None:
        """Add a batch: predicted and true presence, both (N, C) bool (or 0/1)."""
        p, t = as_bool(pred), as_bool(truth)
        batch = torch.stack([(p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0)])
        self.sums = self.sums.to(batch.device) + batch

    def compute(self) -> dict[str, float]:
        """'f1_mean', and 'f1_c', 'precision_c', 'recall_c' for c = 1..C."""
        tp, fp, fn = self.sums.double().cpu()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        f1 = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), 1.0)
        out = {"f1_mean": float(f1.mean())}
        for c in range(len(tp)):
            out[f"f1_{c + 1}"] = float(f1[c])
            out[f"precision_{c + 1}"] = float(tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else nan)
            out[f"recall_{c + 1}"] = float(tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else nan)
        return out
