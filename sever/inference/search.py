"""The exact search behind `sever tune`: pure numpy on per-(image, class) counts.

Probabilities are quantised to 1/255. For every (image, class) pair two 256-bin counts are
kept: pixels above each threshold, and how many of those are truly defect (`pair_stats`).
From them Kaggle's Dice of any threshold, minimum size, presence gate and classifier
scaling factor is a lookup (`dice_sums`, `score`), so the whole grid is searched exactly
at the 1/255 resolution (`search`), and the honest estimate of tuning, searching on some
images and scoring on others, costs a few more searches (`held_out`). `tune_stats` puts
them together; `sever.inference.tune` feeds it from the models and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray

from sever.errors import ConfigError
from sever.inference.postprocess import PostProcess

LEVELS = 256
MIN_PIXELS_GRID = (
    0,
    100,
    200,
    300,
    400,
    600,
    800,
    1000,
    1500,
    2000,
    2500,
    3000,
    4000,
    5000,
    7000,
    10000,
)


@dataclass
class PairStats:
    """Per (image, class) counts at every quantised threshold k/255 (prediction: q > k).

    Attributes:
        above: (N, C, 256) predicted pixels at each threshold.
        hits: (N, C, 256) predicted pixels that are true defect pixels.
        truth: (N, C) true defect pixels.
        presence: (N, C) class-presence probabilities from classification heads, or None.
    """

    above: NDArray[np.int64]
    hits: NDArray[np.int64]
    truth: NDArray[np.integer[Any]]
    presence: NDArray[np.floating[Any]] | None = None

    @classmethod
    def concat(cls, parts: list[PairStats]) -> PairStats:
        above = np.concatenate([p.above for p in parts])
        hits = np.concatenate([p.hits for p in parts])
        truth = np.concatenate([p.truth for p in parts])
        heads = [p.presence for p in parts if p.presence is not None]
        presence = np.concatenate(heads) if len(heads) == len(parts) else None
        return cls(above, hits, truth, presence)

    def subset(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> PairStats:
        """The stats of the images at `index` (positions or a boolean mask)."""
        presence = None if self.presence is None else self.presence[index]
        return PairStats(self.above[index], self.hits[index], self.truth[index], presence)


def quantize(probs: NDArray[np.floating[Any]]) -> NDArray[np.uint8]:
    """Probabilities in [0, 1] -> uint8 levels 0..255."""
    levels: NDArray[np.uint8] = np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8)
    return levels


def pair_stats(
    levels: NDArray[np.uint8],
    truth: NDArray[Any],
    one_class_per_pixel: bool,
    presence: NDArray[np.floating[Any]] | None = None,
    winner: NDArray[np.integer[Any]] | None = None,
) -> PairStats:
    """Counts for a batch.

    Args:
        levels: (N, C, H, W) uint8 quantised probabilities.
        truth: (N, C, H, W) true masks.
        one_class_per_pixel: only the most probable class may claim a pixel (the winner
            does not depend on the thresholds, so this is exact).
        presence: (N, C) classification-head probabilities, or None.
        winner: (N, H, W) each pixel's most probable class, taken from the unquantised
            probabilities (quantising creates ties); default: the argmax of `levels`.
    """
    n, c = levels.shape[:2]
    if one_class_per_pixel:
        winner = levels.argmax(axis=1) if winner is None else winner
        levels = np.where(winner[:, None] == np.arange(c)[None, :, None, None], levels, 0)
    offsets = (np.arange(n * c) * LEVELS).reshape(n, c, 1, 1)
    index = (levels.astype(np.int64) + offsets).ravel()
    counts = np.bincount(index, minlength=n * c * LEVELS).reshape(n, c, LEVELS)
    true = truth.astype(bool).ravel()
    hit_counts = np.bincount(index[true], minlength=n * c * LEVELS).reshape(n, c, LEVELS)
    # above[k] = pixels with level > k: a suffix sum that excludes level k itself.
    above = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1] - counts
    hits = np.cumsum(hit_counts[..., ::-1], axis=-1)[..., ::-1] - hit_counts
    return PairStats(above, hits, truth.reshape(n, c, -1).sum(-1), presence)


def levels_for(
    stats: PairStats, c: int, t0: NDArray[np.float64], scale_c: float | None
) -> NDArray[np.int64]:
    """Per-image threshold levels (N, K) for base thresholds t0 (K,) of one class.

    With `scale_c` (and presence), each image's threshold is the original author's
    t = t0*c - t0*(c-1)*p; a threshold of 1 or more predicts nothing (level 255).
    """
    n = stats.truth.shape[0]
    t = np.broadcast_to(t0[None, :], (n, len(t0)))
    if scale_c is not None:
        if stats.presence is None:
            raise ConfigError("scale_c needs class presence: no model has a classification head")
        t = t * scale_c - t * (scale_c - 1) * stats.presence[:, c, None]
    # Levels are rint(p * 255), so `p > t` is `level > k` for k = floor(t * 255 - 0.5),
    # exactly so for the thresholds search returns, (k + 0.5) / 255.
    # (The 1e-3 absorbs the rounding of thresholds written to YAML with 6 decimals.)
    return np.clip(np.floor(t * 255 - 0.5 + 1e-3), 0, LEVELS - 1).astype(np.int64)


def dice_sums(
    stats: PairStats, c: int, levels: NDArray[np.int64], min_pixels: int, gate: float = 0.0
) -> NDArray[np.float64]:
    """Dice of class c summed over images, for each column of per-image levels (N, K): (K,)."""
    sums: NDArray[np.float64] = pair_dice(stats, c, levels, min_pixels, gate).sum(axis=0)
    return sums


def pair_dice(
    stats: PairStats, c: int, levels: NDArray[np.int64], min_pixels: int, gate: float = 0.0
) -> NDArray[np.float64]:
    """Dice of class c in each image, for each column of per-image levels (N, K): (N, K).

    An image whose class is emptied (fewer than `min_pixels` predicted, or a presence
    probability under `gate`) scores 1 if its truth is empty, else 0."""
    pred = np.take_along_axis(stats.above[:, c, :], levels, axis=1).astype(np.float64)
    inter = np.take_along_axis(stats.hits[:, c, :], levels, axis=1).astype(np.float64)
    truth = stats.truth[:, c, None].astype(np.float64)
    emptied = pred < min_pixels
    if gate > 0:
        assert stats.presence is not None  # `score` and `search` gate only with presence
        emptied = emptied | (stats.presence[:, c, None] < gate)
    pred, inter = np.where(emptied, 0, pred), np.where(emptied, 0, inter)
    total = pred + truth
    dice: NDArray[np.float64] = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    return dice


def score(
    stats: PairStats,
    thresholds: Sequence[float],
    min_pixels: Sequence[int],
    scale_c: float | None = None,
    gate: Sequence[float] | None = None,
) -> dict[str, float]:
    """Kaggle mean Dice and per class for per-class thresholds, minimum sizes, scaling
    factor and presence gates (None: no gating)."""
    n, classes = stats.truth.shape
    gate = (0.0,) * classes if gate is None else gate
    if any(gate) and stats.presence is None:
        raise ConfigError("gate needs class presence: no model has a classification head")
    per_class = []
    for c in range(classes):
        levels = levels_for(stats, c, np.array([thresholds[c]]), scale_c)
        per_class.append(dice_sums(stats, c, levels, min_pixels[c], gate[c])[0] / n)
    out = {"dice_mean": float(np.mean(per_class))}
    out |= {f"dice_{c + 1}": float(v) for c, v in enumerate(per_class)}
    return out


def image_dice(stats: PairStats, postprocess: PostProcess) -> NDArray[np.float64]:
    """(N, C): the Dice of every (image, class) pair under `postprocess` (thresholds,
    minimum sizes, gates, scaling; not min_component, which needs the masks)."""
    if any(postprocess.min_component):
        raise ValueError("image_dice: min_component needs the masks, not the counts")
    if (postprocess.gate is not None or postprocess.scale_c is not None) and (
        stats.presence is None
    ):
        raise ConfigError("gate and scale_c need class presence: no model has a class head")
    gate = postprocess.gate or (0.0,) * postprocess.classes
    columns = []
    for c in range(stats.truth.shape[1]):
        t0 = np.array([postprocess.threshold[c]])
        levels = levels_for(stats, c, t0, postprocess.scale_c)
        columns.append(pair_dice(stats, c, levels, postprocess.min_pixels[c], gate[c])[:, 0])
    return np.stack(columns, axis=1)


SCALE_GRID = (None, 1.5, 2.0, 3.0, 5.0, 8.0)
GATE_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Choice:
    """What `search` picked: per-class thresholds, minimum sizes and presence gates (0 =
    none), and the classifier scaling factor (None = none)."""

    thresholds: list[float]
    min_pixels: list[int]
    gate: list[float]
    scale_c: float | None

    @property
    def gate_or_none(self) -> tuple[float, ...] | None:
        return tuple(self.gate) if any(self.gate) else None


def search(
    stats: PairStats, min_grid: Sequence[int] = MIN_PIXELS_GRID, presence: bool = True
) -> Choice:
    """The best threshold, minimum size and presence gate per class, and the best classifier
    scaling factor. Gates and scaling are searched only when presence is known (and
    `presence` is True). Within one scaling factor each class is searched on its own,
    since the metric is a sum over classes. Thresholds run from 0.05 to 0.95."""
    t0 = (np.arange(13, 243) + 0.5) / 255  # 0.05 .. 0.95, between quantisation levels
    use = presence and stats.presence is not None
    best_total = -1.0
    best: Choice | None = None
    for scale_c in SCALE_GRID if use else (None,):
        total, choice = 0.0, Choice([], [], [], scale_c)
        for c in range(stats.truth.shape[1]):
            levels = levels_for(stats, c, t0, scale_c)
            table = np.stack(
                [
                    [dice_sums(stats, c, levels, m, g) for m in min_grid]
                    for g in (GATE_GRID if use else (0.0,))
                ]
            )  # (G, M, K)
            g, m, k = map(int, np.unravel_index(np.argmax(table), table.shape))
            total += table[g, m, k]
            choice.thresholds.append(round(float(t0[k]), 6))
            choice.min_pixels.append(int(min_grid[m]))
            choice.gate.append(float(GATE_GRID[g]))
        if total > best_total + 1e-9:
            best_total, best = total, choice
    assert best is not None  # a total is never below 0, so the first candidate wins over -1
    return best


def held_out(
    stats: PairStats, parts: NDArray[np.integer[Any]], presence: bool = True
) -> dict[str, float]:
    """An honest estimate of tuning: for each part, search on the other parts' images and
    score on this one; the scores pooled over all images (weighted by part size).

    Args:
        parts: (N,) the part of each image: its fold for k-fold runs, else a random half.
        presence: search gates and scaling too (when presence is known).
    """
    n = stats.truth.shape[0]
    pooled: dict[str, float] = {}
    for part in np.unique(parts):
        inside = parts == part
        choice = search(stats.subset(~inside), presence=presence)
        scores = score(
            stats.subset(inside), choice.thresholds, choice.min_pixels, choice.scale_c, choice.gate
        )
        for key, value in scores.items():
            pooled[key] = pooled.get(key, 0.0) + value * inside.sum() / n
    return pooled


def parts_of(sizes: list[int], seed: int = 0) -> NDArray[np.int64]:
    """Each image's part for `held_out`: its group (fold) when there are several groups,
    else a seeded random half of the one group."""
    if len(sizes) > 1:
        return np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(sizes[0]) % 2


def tuned(base: PostProcess, choice: Choice) -> PostProcess:
    """The base PostProcess with the tuned thresholds, minimum sizes, gates and scaling."""
    return replace(
        base,
        threshold=tuple(choice.thresholds),
        min_pixels=tuple(choice.min_pixels),
        gate=choice.gate_or_none,
        scale_c=choice.scale_c,
    )


class PresenceFindings(TypedDict, total=False):
    """What `tune_stats` measured of presence (gates and scaling), when it is known."""

    without_presence: dict[str, float]
    held_out_without_presence: dict[str, float]
    presence: str
    presence_note: str


@dataclass(frozen=True)
class Tuning:
    """What `tune_stats` found: the post-processing to write and how it scores.

    Attributes:
        postprocess: the base with the tuned thresholds, sizes, gates and scaling.
        before, after: Kaggle Dice (mean and per class) of the base and of the result,
            on the images tuned on ('after' is fitted to them: optimistic).
        held_out: the honest estimate: tuned on the other parts, scored on each in turn.
        without_presence, held_out_without_presence: the same search with neither gates
            nor scaling, scored on these images and held out (None without presence).
        presence: 'kept', 'dropped' or 'unused' (None without presence), and
            `presence_note` why.
    """

    postprocess: PostProcess
    before: dict[str, float]
    after: dict[str, float]
    held_out: dict[str, float]
    without_presence: dict[str, float] | None = None
    held_out_without_presence: dict[str, float] | None = None
    presence: str | None = None
    presence_note: str | None = None


def tune_stats(stats: PairStats, parts: NDArray[np.integer[Any]], base: PostProcess) -> Tuning:
    """Tune `base` on the stats.

    The search covers thresholds and minimum sizes, and with presence also gates and the
    scaling factor. Those are kept only when they improve the held-out estimate (tuned on
    the other parts, scored on each in turn), since a gate fitted to a few images can
    look better on them and be worse on new ones; otherwise the setting without them is
    the result, and `presence_note` says why. The result is never worse than `base` on
    these images.

    Args:
        parts: (N,) each image's part for the held-out estimate (`parts_of`).
    """
    before = score(stats, base.threshold, base.min_pixels, base.scale_c, base.gate)
    choice = search(stats)
    held = held_out(stats, parts)
    found: PresenceFindings = {}
    if stats.presence is not None:  # what the presence (gate, scaling) adds, measured
        alone = search(stats, presence=False)
        found["without_presence"] = score(stats, alone.thresholds, alone.min_pixels)
        found["held_out_without_presence"] = held_out(stats, parts, presence=False)
        with_, without = held["dice_mean"], found["held_out_without_presence"]["dice_mean"]
        if choice.gate_or_none is None and choice.scale_c is None:
            found["presence"] = "unused"
            found["presence_note"] = "the search chose no gate and no scaling"
        elif with_ > without:
            found["presence"] = "kept"
            found["presence_note"] = (
                f"gates and scaling improve the held-out estimate ({with_:.4f} with, "
                f"{without:.4f} without)"
            )
        else:
            choice = alone
            found["presence"] = "dropped"
            found["presence_note"] = (
                f"gates and scaling do not improve the held-out estimate ({with_:.4f} with, "
                f"{without:.4f} without): wrote thresholds and sizes alone"
            )
    after = score(stats, choice.thresholds, choice.min_pixels, choice.scale_c, choice.gate)
    result = tuned(base, choice)
    if after["dice_mean"] < before["dice_mean"]:
        result, after = base, before
    return Tuning(result, before, after, held, **found)
