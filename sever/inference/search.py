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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sever.errors import ConfigError
from sever.inference.bootstrap import Difference, Interval, paired_difference, score_intervals
from sever.inference.postprocess import PostProcess, scaled_min_pixels, winners

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
        winner = winners(levels) if winner is None else winner
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


def levels_for(t0: NDArray[np.float64], n: int) -> NDArray[np.int64]:
    """Threshold levels (N, K) for base thresholds t0 (K,), the same for each of N images."""
    # Levels are rint(p * 255), so `p > t` is `level > k` for k = floor(t * 255 - 0.5),
    # exactly so for the thresholds search returns, (k + 0.5) / 255.
    # (The 1e-3 absorbs the rounding of thresholds written to YAML with 6 decimals.)
    k = np.clip(np.floor(t0 * 255 - 0.5 + 1e-3), 0, LEVELS - 1).astype(np.int64)
    return np.broadcast_to(k[None, :], (n, len(t0)))


MinPixels = int | NDArray[np.int64]


def least_pixels(stats: PairStats, c: int, m0: int, scale_c: float | None) -> MinPixels:
    """Class c's minimum pixel count: m0, or with `scale_c` each image's (N, 1) from
    `scaled_min_pixels` (the original project's classifier scaling, one home)."""
    if scale_c is None:
        return m0
    if stats.presence is None:
        raise ConfigError("scale_c needs class presence: no model has a classification head")
    return scaled_min_pixels(np.array([m0]), stats.presence[:, c, None], scale_c)


def dice_sums(
    stats: PairStats, c: int, levels: NDArray[np.int64], min_pixels: MinPixels, gate: float = 0.0
) -> NDArray[np.float64]:
    """Dice of class c summed over images, for each column of per-image levels (N, K): (K,)."""
    sums: NDArray[np.float64] = pair_dice(stats, c, levels, min_pixels, gate).sum(axis=0)
    return sums


def pair_dice(
    stats: PairStats, c: int, levels: NDArray[np.int64], min_pixels: MinPixels, gate: float = 0.0
) -> NDArray[np.float64]:
    """Dice of class c in each image, for each column of per-image levels (N, K): (N, K).

    An image whose class is emptied (fewer than `min_pixels` predicted, or a presence
    probability under `gate`) scores 1 if its truth is empty, else 0."""
    pred, inter = kept_counts(stats, c, levels, min_pixels, gate)
    total = pred + stats.truth[:, c, None].astype(np.float64)
    dice: NDArray[np.float64] = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))
    return dice


def kept_counts(
    stats: PairStats, c: int, levels: NDArray[np.int64], min_pixels: MinPixels, gate: float = 0.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Predicted and correctly predicted pixels of class c (N, K) at per-image levels,
    0 where the class is emptied (too small, or gated out). `min_pixels`: one count, or
    (N, 1) per image (`least_pixels`)."""
    pred = np.take_along_axis(stats.above[:, c, :], levels, axis=1).astype(np.float64)
    inter = np.take_along_axis(stats.hits[:, c, :], levels, axis=1).astype(np.float64)
    emptied = pred < min_pixels
    if gate > 0:
        assert stats.presence is not None  # `score` and `search` gate only with presence
        emptied = emptied | (stats.presence[:, c, None] < gate)
    return np.where(emptied, 0, pred), np.where(emptied, 0, inter)


def predicted_present(stats: PairStats, postprocess: PostProcess) -> NDArray[np.bool_]:
    """(N, C): whether `postprocess` leaves a defect of each class in each image."""
    n, gate = stats.truth.shape[0], postprocess.gate or (0.0,) * postprocess.classes
    columns = []
    for c in range(stats.truth.shape[1]):
        t0 = np.array([postprocess.threshold[c]])
        least = least_pixels(stats, c, postprocess.min_pixels[c], postprocess.scale_c)
        pred, _ = kept_counts(stats, c, levels_for(t0, n), least, gate[c])
        columns.append(pred[:, 0] > 0)
    return np.stack(columns, axis=1)


def curves(
    stats: PairStats, postprocess: PostProcess, thresholds: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean Dice of each class (C, K) at each of `thresholds` (the other settings as they
    are), and (C, M) at each minimum size of MIN_PIXELS_GRID (the threshold as it is)."""
    n, gate = stats.truth.shape[0], postprocess.gate or (0.0,) * postprocess.classes
    by_threshold, by_size = [], []
    for c in range(stats.truth.shape[1]):
        least = least_pixels(stats, c, postprocess.min_pixels[c], postprocess.scale_c)
        by_threshold.append(dice_sums(stats, c, levels_for(thresholds, n), least, gate[c]) / n)
        own = levels_for(np.array([postprocess.threshold[c]]), n)
        sizes = [least_pixels(stats, c, m, postprocess.scale_c) for m in MIN_PIXELS_GRID]
        by_size.append([dice_sums(stats, c, own, m, gate[c])[0] / n for m in sizes])
    return np.array(by_threshold), np.array(by_size)


def score(
    stats: PairStats,
    thresholds: Sequence[float],
    min_pixels: Sequence[int],
    scale_c: float | None = None,
    gate: Sequence[float] | None = None,
) -> dict[str, float]:
    """Kaggle mean Dice and per class for per-class thresholds, minimum sizes, scaling
    factor and presence gates (None: no gating)."""
    return means(dice_table(stats, thresholds, min_pixels, scale_c, gate))


def means(dice: NDArray[np.float64]) -> dict[str, float]:
    """(N, C) per-image Dice -> 'dice_mean' and 'dice_1'.. 'dice_C'."""
    per_class = dice.mean(axis=0)
    out = {"dice_mean": float(per_class.mean())}
    return out | {f"dice_{c + 1}": float(v) for c, v in enumerate(per_class)}


def dice_table(
    stats: PairStats,
    thresholds: Sequence[float],
    min_pixels: Sequence[int],
    scale_c: float | None = None,
    gate: Sequence[float] | None = None,
) -> NDArray[np.float64]:
    """(N, C): the Dice of every (image, class) pair under these settings."""
    classes = stats.truth.shape[1]
    gate = (0.0,) * classes if gate is None else gate
    if any(gate) and stats.presence is None:  # scale_c: least_pixels says so
        raise ConfigError("gate needs class presence: no model has a classification head")
    columns = []
    for c in range(classes):
        levels = levels_for(np.array([thresholds[c]]), stats.truth.shape[0])
        least = least_pixels(stats, c, min_pixels[c], scale_c)
        columns.append(pair_dice(stats, c, levels, least, gate[c])[:, 0])
    return np.stack(columns, axis=1)


def image_dice(stats: PairStats, postprocess: PostProcess) -> NDArray[np.float64]:
    """(N, C): the Dice of every (image, class) pair under `postprocess` (thresholds,
    minimum sizes, gates, scaling; not min_component, which needs the masks), at the
    1/255 resolution of the counts."""
    if any(postprocess.min_component):
        raise ValueError("image_dice: min_component needs the masks, not the counts")
    pp = postprocess
    return dice_table(stats, pp.threshold, pp.min_pixels, pp.scale_c, pp.gate)


def choice_dice(stats: PairStats, choice: Choice) -> NDArray[np.float64]:
    return dice_table(stats, choice.thresholds, choice.min_pixels, choice.scale_c, choice.gate)


SCALE_GRID = (None, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)  # the original project tried 5, 10, 20
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
    n, best_total = stats.truth.shape[0], -1.0
    best: Choice | None = None
    for scale_c in SCALE_GRID if use else (None,):
        total, choice = 0.0, Choice([], [], [], scale_c)
        for c in range(stats.truth.shape[1]):
            levels = levels_for(t0, n)
            table = np.stack(
                [
                    [
                        dice_sums(stats, c, levels, least_pixels(stats, c, m, scale_c), g)
                        for m in min_grid
                    ]
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


def search_shared(stats: PairStats, min_grid: Sequence[int] = MIN_PIXELS_GRID) -> Choice:
    """The regularised search: one threshold (0.1 to 0.9 in steps of 0.05) and one minimum
    size for every class, no gates, no scaling: two numbers fitted instead of eight or
    more, so they follow the validation images less closely."""
    t0 = (np.floor(np.arange(0.1, 0.9001, 0.05) * 255) + 0.5) / 255  # between levels
    total = np.zeros((len(min_grid), len(t0)))
    for c in range(stats.truth.shape[1]):
        levels = levels_for(t0, stats.truth.shape[0])
        total += np.stack([dice_sums(stats, c, levels, m) for m in min_grid])
    m, k = map(int, np.unravel_index(np.argmax(total), total.shape))
    classes = stats.truth.shape[1]
    threshold = round(float(t0[k]), 6)
    return Choice([threshold] * classes, [int(min_grid[m])] * classes, [0.0] * classes, None)


def search_alone(stats: PairStats) -> Choice:
    """Per-class thresholds and sizes, without gates or scaling."""
    return search(stats, presence=False)


def held_out_dice(
    stats: PairStats, parts: NDArray[np.integer[Any]], searcher: Callable[[PairStats], Choice]
) -> NDArray[np.float64]:
    """(N, C): an honest estimate of tuning, per image: each part scored with what
    `searcher` found on the other parts' images.

    Args:
        parts: (N,) the part of each image: its fold for k-fold runs, else a random half.
    """
    dice = np.zeros(stats.truth.shape)
    for part in np.unique(parts):
        inside = parts == part
        dice[inside] = choice_dice(stats.subset(inside), searcher(stats.subset(~inside)))
    return dice


def held_out(
    stats: PairStats, parts: NDArray[np.integer[Any]], presence: bool = True
) -> dict[str, float]:
    """`held_out_dice` of the per-class search (with gates and scaling when `presence`),
    as Kaggle scores: the mean and per class, pooled over all images."""
    searcher = search if presence else search_alone
    return means(held_out_dice(stats, parts, searcher))


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


# tune's ladder, from the simplest setting: a more complex one is adopted only when its
# held-out gain over the one adopted before it is above zero with 95% confidence.
LADDER: dict[str, tuple[str, Callable[[PairStats], Choice]]] = {
    "shared": ("one threshold and one minimum size for every class", search_shared),
    "per-class": ("per-class thresholds and minimum sizes", search_alone),
    "presence": ("per-class, with presence gates and the classifier's scaling of sizes", search),
}
SEARCHES = ("auto", *LADDER)


@dataclass(frozen=True)
class Rung:
    """One search of the ladder and how it held out.

    Attributes:
        held_out: its held-out scores (mean and per class).
        gain: its held-out gain over the setting adopted before it (None for the first).
        adopted: whether the ladder moved up to it.
    """

    name: str
    held_out: dict[str, float]
    gain: Difference | None
    adopted: bool

    def line(self, previous: str | None) -> str:
        text = f"{self.name} ({LADDER[self.name][0]}): held out {self.held_out['dice_mean']:.4f}"
        if self.gain is None or previous is None:
            return text
        g = self.gain.diff["mean"]
        verdict = "adopted"
        if not self.adopted:
            verdict = f"{'worse' if g.high < 0 else 'within noise'}: kept {previous}"
        return (
            f"{text}, gain over {previous} {g.value:+.4f} [{g.low:+.4f}, {g.high:+.4f}]: {verdict}"
        )


@dataclass(frozen=True)
class Tuning:
    """What `tune_stats` found: the post-processing to write and how it scores.

    Attributes:
        postprocess: the base with the tuned thresholds, sizes, gates and scaling.
        before, after: Kaggle Dice (mean and per class) of the base and of the result,
            on the images tuned on ('after' is fitted to them: optimistic), each mean
            with its bootstrap interval in `intervals` ('before', 'after').
        held_out: the honest estimate of the adopted search: tuned on the other parts,
            scored on each in turn; `gain` its paired difference from `before`.
        rungs: each search tried, simplest first, and whether it was adopted.
    """

    postprocess: PostProcess
    before: dict[str, float]
    after: dict[str, float]
    held_out: dict[str, float]
    rungs: tuple[Rung, ...] = ()
    intervals: dict[str, Interval] = field(default_factory=dict)
    gain: Difference | None = None

    @property
    def adopted(self) -> str | None:
        return next((r.name for r in reversed(self.rungs) if r.adopted), None)


def climb(
    stats: PairStats, parts: NDArray[np.integer[Any]], names: Sequence[str], seed: int = 0
) -> tuple[list[Rung], NDArray[np.float64]]:
    """Try the searches `names` in order; adopt each whose held-out gain over the last
    adopted one has its 95% interval above zero. Returns the rungs and the adopted
    search's held-out Dice (N, C)."""
    rungs: list[Rung] = []
    best: NDArray[np.float64] | None = None
    for name in names:
        dice = held_out_dice(stats, parts, LADDER[name][1])
        gain = None if best is None else paired_difference(dice, best, seed=seed)
        adopted = gain is None or gain.diff["mean"].low > 0
        rungs.append(Rung(name, means(dice), gain, adopted))
        if adopted:
            best = dice
    assert best is not None  # the first rung is always adopted
    return rungs, best


def tune_stats(
    stats: PairStats,
    parts: NDArray[np.integer[Any]],
    base: PostProcess,
    how: str = "auto",
    seed: int = 0,
) -> Tuning:
    """Tune `base` on the stats.

    With `how` 'auto' the searches run from the simplest ('shared', then 'per-class', then
    'presence' when presence is known), and a more complex one is adopted only when its
    held-out gain over the simpler one is significant (`climb`): fitted to a few images,
    per-class values and gates can look better on them and be worse on new ones. Any other
    `how` is that search alone. The result is never worse than `base` on these images.

    Args:
        parts: (N,) each image's part for the held-out estimate (`parts_of`).

    Raises:
        ConfigError: 'presence' without presence probabilities.
    """
    if how == "presence" and stats.presence is None:
        raise ConfigError(
            "--search presence needs class presence: no model has a class head or is a classifier"
        )
    names = [n for n in LADDER if n != "presence" or stats.presence is not None]
    rungs, held = climb(stats, parts, names if how == "auto" else [how], seed)
    adopted = next(r.name for r in reversed(rungs) if r.adopted)
    choice = LADDER[adopted][1](stats)
    before_dice = image_dice(stats, base)
    after_dice = choice_dice(stats, choice)
    result = tuned(base, choice)
    if after_dice.mean() < before_dice.mean():
        result, after_dice = base, before_dice
    intervals = {
        "before": score_intervals(before_dice, seed=seed)["mean"],
        "after": score_intervals(after_dice, seed=seed)["mean"],
    }
    gain = paired_difference(held, before_dice, seed=seed)
    return Tuning(
        result, means(before_dice), means(after_dice), means(held), tuple(rungs), intervals, gain
    )
