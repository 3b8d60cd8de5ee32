"""`sever tune`: search per-class thresholds and minimum defect sizes on validation images.

The validation split is predicted once; probabilities are quantised to 1/255 and cached on
disk (compressed), so a second tune with the same models costs no inference. From them,
for every (image, class) pair, two 256-bin counts are kept: pixels above each threshold,
and how many of those are truly defect. Any threshold and minimum size then scores in
microseconds, and the whole grid is searched exactly (at the 1/255 resolution).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from torch.utils.data import DataLoader

from sever.errors import ConfigError
from sever.fileio import atomic_path
from sever.inference.ensemble import tuned_with
from sever.inference.postprocess import TUNED_WITH, PostProcess
from sever.inference.predict import check_members, predict_batches
from sever.inference.validation import group_by_split, masks_aside, validation_set
from sever.progress import Tracker

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

    above: np.ndarray
    hits: np.ndarray
    truth: np.ndarray
    presence: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: list[PairStats]) -> PairStats:
        joined = [
            np.concatenate([getattr(p, f) for p in parts]) for f in ("above", "hits", "truth")
        ]
        heads = [p.presence for p in parts]
        presence = None if any(h is None for h in heads) else np.concatenate(heads)
        return cls(*joined, presence)

    def subset(self, index: np.ndarray) -> PairStats:
        """The stats of the images at `index` (positions or a boolean mask)."""
        presence = None if self.presence is None else self.presence[index]
        return PairStats(self.above[index], self.hits[index], self.truth[index], presence)


def quantize(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 levels 0..255."""
    return np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8)


def pair_stats(
    levels: np.ndarray,
    truth: np.ndarray,
    one_class_per_pixel: bool,
    presence: np.ndarray | None = None,
    winner: np.ndarray | None = None,
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


def levels_for(stats: PairStats, c: int, t0: np.ndarray, scale_c: float | None) -> np.ndarray:
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
    stats: PairStats, c: int, levels: np.ndarray, min_pixels: int, gate: float = 0.0
) -> np.ndarray:
    """Dice of class c summed over images, for each column of per-image levels (N, K): (K,).

    An image whose class is emptied (fewer than `min_pixels` predicted, or a presence
    probability under `gate`) scores 1 if its truth is empty, else 0."""
    pred = np.take_along_axis(stats.above[:, c, :], levels, axis=1).astype(np.float64)
    inter = np.take_along_axis(stats.hits[:, c, :], levels, axis=1).astype(np.float64)
    truth = stats.truth[:, c, None].astype(np.float64)
    emptied = pred < min_pixels
    if gate > 0:
        emptied = emptied | (stats.presence[:, c, None] < gate)
    pred, inter = np.where(emptied, 0, pred), np.where(emptied, 0, inter)
    total = pred + truth
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1)).sum(axis=0)


def score(
    stats: PairStats, thresholds, min_pixels, scale_c: float | None = None, gate=None
) -> dict:
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


def search(stats: PairStats, min_grid=MIN_PIXELS_GRID, presence: bool = True) -> Choice:
    """The best threshold, minimum size and presence gate per class, and the best classifier
    scaling factor. Gates and scaling are searched only when presence is known (and
    `presence` is True). Within one scaling factor each class is searched on its own,
    since the metric is a sum over classes. Thresholds run from 0.05 to 0.95."""
    t0 = (np.arange(13, 243) + 0.5) / 255  # 0.05 .. 0.95, between quantisation levels
    use = presence and stats.presence is not None
    best_total, best = -1.0, None
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
            g, m, k = np.unravel_index(np.argmax(table), table.shape)
            total += table[g, m, k]
            choice.thresholds.append(round(float(t0[k]), 6))
            choice.min_pixels.append(int(min_grid[m]))
            choice.gate.append(float(GATE_GRID[g]))
        if total > best_total + 1e-9:
            best_total, best = total, choice
    return best


def held_out(stats: PairStats, parts: np.ndarray, presence: bool = True) -> dict:
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


def parts_of(sizes: list[int], seed: int = 0) -> np.ndarray:
    """Each image's part for `held_out`: its group (fold) when there are several groups,
    else a seeded random half of the one group."""
    if len(sizes) > 1:
        return np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(sizes[0]) % 2


def cache_key(checkpoints: list[Path], tta: str, averaging: str, weights: list[float]) -> str:
    """Names the cached probabilities: the models (path, size, mtime) and how they combine."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in checkpoints]
    text = json.dumps([parts, tta, averaging, weights])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tuned(base, choice: Choice):
    """The base PostProcess with the tuned thresholds, minimum sizes, gates and scaling."""
    return replace(
        base,
        threshold=tuple(choice.thresholds),
        min_pixels=tuple(choice.min_pixels),
        gate=choice.gate_or_none,
        scale_c=choice.scale_c,
    )


def predict_stats(
    groups: list[tuple[list, Path]],
    cache_dir: Path,
    tta: str,
    averaging: str,
    one_class_per_pixel: bool,
    batch_size: int,
    workers: int,
    data_dir: Path | None = None,
) -> tuple[PairStats, list[int]]:
    """Stats over the validation images of every (members, run) group, and the number of
    images of each group.

    Members of one group share a validation split and are ensembled; different groups
    (k-fold runs) have disjoint splits and are concatenated: out-of-fold tuning.
    """
    # Every group's images are found before any is predicted.
    work = []
    for members, run in groups:
        key = cache_key([m.path for m in members], tta, averaging, [m.weight for m in members])
        folder = cache_dir / f"probs-{key}"
        done = (folder / "complete").is_file()
        work.append(
            (members, run, folder, None if done else validation_set(run, members[0], data_dir))
        )
    parts, sizes = [], []
    for members, run, folder, dataset in work:
        if dataset is None:
            batches = cached(folder)
        else:
            batches = predicted(
                members, dataset, run.name, tta, averaging, batch_size, workers, folder
            )
        group = [
            pair_stats(b["levels"], b["truth"], one_class_per_pixel, b.get("presence"), b["winner"])
            for b in batches
        ]
        parts += group
        sizes.append(sum(len(g.truth) for g in group))
    return PairStats.concat(parts), sizes


def predicted(
    members,
    dataset,
    name: str,
    tta: str,
    averaging: str,
    batch_size: int,
    workers: int,
    folder: Path,
):
    """Predict a run's validation set batch by batch, caching each batch as it comes."""
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete cache from an interrupted run
    folder.mkdir(parents=True)
    loader = DataLoader(dataset, batch_size, num_workers=workers)
    truths: list[np.ndarray] = []
    batches = predict_batches(members, masks_aside(loader, truths), tta, averaging)
    with Tracker(len(dataset), f"tune: predict {name}", "images") as progress:
        for index, (ids, probs, presence) in enumerate(batches):
            batch = {
                "levels": quantize(probs),
                "truth": truths.pop(0).astype(bool),
                "winner": probs.argmax(axis=1).astype(np.uint8),
            }
            if presence is not None:
                batch["presence"] = presence
            save_batch(folder / f"batch-{index:05d}.npz", batch)
            progress.update(len(ids))
            yield batch
    (folder / "complete").touch()


def save_batch(path: Path, batch: dict) -> None:
    """Compressed: most pixels sit near probability 0, so levels shrink many times over."""
    truth = batch["truth"]
    packed = {**batch, "truth": np.packbits(truth, axis=-1), "width": truth.shape[-1]}
    with path.open("wb") as handle:
        np.savez_compressed(handle, **packed)


def cached(folder: Path):
    """The batches `predicted` saved, as dicts of levels, truth, winner (and presence)."""
    for path in sorted(folder.glob("batch-*.npz")):
        with np.load(path) as data:
            batch = {key: data[key] for key in data.files if key != "width"}
            batch["truth"] = np.unpackbits(batch["truth"], axis=-1, count=int(data["width"]))
            batch["truth"] = batch["truth"].astype(bool)
            yield batch


def tune_stats(stats: PairStats, parts: np.ndarray, base: PostProcess) -> tuple[PostProcess, dict]:
    """Tune `base` on the stats: the post-processing to write and the report.

    The search covers thresholds and minimum sizes, and with presence also gates and the
    scaling factor. Those are kept only when they improve the held-out estimate (tuned on
    the other parts, scored on each in turn), since a gate fitted to a few images can
    look better on them and be worse on new ones; otherwise the setting without them is
    written, and `presence_note` says why. The result is never worse than `base` on
    these images.

    Args:
        parts: (N,) each image's part for the held-out estimate (`parts_of`).
    """
    before = score(stats, base.threshold, base.min_pixels, base.scale_c, base.gate)
    choice = search(stats)
    report: dict = {"before": before, "held_out": held_out(stats, parts)}
    if stats.presence is not None:  # what the presence (gate, scaling) adds, measured
        alone = search(stats, presence=False)
        report["without_presence"] = score(stats, alone.thresholds, alone.min_pixels)
        report["held_out_without_presence"] = held_out(stats, parts, presence=False)
        with_, without = (report[k]["dice_mean"] for k in ("held_out", "held_out_without_presence"))
        if choice.gate_or_none is None and choice.scale_c is None:
            report["presence"] = "unused"
            report["presence_note"] = "the search chose no gate and no scaling"
        elif with_ > without:
            report["presence"] = "kept"
            report["presence_note"] = (
                f"gates and scaling improve the held-out estimate ({with_:.4f} with, "
                f"{without:.4f} without)"
            )
        else:
            choice = alone
            report["presence"] = "dropped"
            report["presence_note"] = (
                f"gates and scaling do not improve the held-out estimate ({with_:.4f} with, "
                f"{without:.4f} without): wrote thresholds and sizes alone"
            )
    after = score(stats, choice.thresholds, choice.min_pixels, choice.scale_c, choice.gate)
    result = tuned(base, choice)
    if after["dice_mean"] < before["dice_mean"]:
        result, after = base, before
    report |= {
        "after": after,
        "threshold": list(result.threshold),
        "min_pixels": list(result.min_pixels),
        "gate": None if result.gate is None else list(result.gate),
        "scale_c": result.scale_c,
    }
    return result, report


def tune_runs(
    members: list,
    base: PostProcess,
    tta: str,
    averaging: str,
    batch_size: int,
    workers: int,
    out: Path,
    data_dir: Path | None = None,
) -> dict:
    """Tune `base`'s thresholds, minimum sizes, gates and scaling on the members'
    validation images and write the result as YAML to `out`, with the TTA, averaging and
    models it was tuned with (`tuned_with`, which predict checks)."""
    check_members(members, base)
    if any(base.min_component):
        raise ConfigError(
            "tune searches thresholds, min_pixels, gate and scale_c: remove min_component "
            "from the starting post-processing"
        )
    groups = group_by_split(members)
    out.parent.mkdir(parents=True, exist_ok=True)  # before the work, not after it
    stats, sizes = predict_stats(
        groups,
        groups[0][1] / "cache",
        tta,
        averaging,
        base.one_class_per_pixel,
        batch_size,
        workers,
        data_dir,
    )
    result, report = tune_stats(stats, parts_of(sizes), base)
    written = result.to_dict() | {TUNED_WITH: tuned_with(members, tta, averaging)}
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(written, sort_keys=False))
    report_order = ["before", "after", "threshold", "min_pixels", "gate", "scale_c"]
    report = {k: report[k] for k in report_order} | report
    return report | {"images": int(stats.truth.shape[0]), "folds": len(groups), "out": str(out)}
