"""`sever compare`: candidate submissions side by side on the same validation images, each
score and each difference with its bootstrap interval, and the two final picks.

A candidate is what a submission would be: an ensemble file (models, TTA, averaging,
post-processing). Each is scored per (image, class) on its runs' validation images (out
of fold for k-fold runs), from tune's cache of quantised probabilities where there is one,
so comparing after tuning costs no inference. The comparison itself is pure
(`compare_candidates`, `pick_two`): a paired bootstrap over the images all candidates
share (`sever.inference.bootstrap`), which is the uncertainty Kaggle's private split adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from sever.data.splits import read_split
from sever.errors import ConfigError
from sever.inference.bootstrap import (
    RESAMPLES,
    Difference,
    Interval,
    paired_difference,
    score_intervals,
)
from sever.inference.ensemble import Ensemble, EnsembleOptions, file_options
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.postprocess_file import load_postprocess
from sever.inference.predict import check_members
from sever.inference.search import curves, image_dice, predicted_present
from sever.inference.tune import cache_folder, predict_stats
from sever.inference.validation import group_by_split, validation_batches, validation_set
from sever.model.metrics import dice_per_pair
from sever.progress import Tracker

# thresholds between 1/255 levels from 0.05 to 0.95, for the report's curves
CURVE_THRESHOLDS = (np.round(np.arange(0.05, 0.951, 0.01) * 255) + 0.5) / 255
AGREE_AT = 0.5  # two candidates agree on a pair when both score >= this, or both below


@dataclass(frozen=True)
class Candidate:
    """One candidate scored: the Dice of each (image, class) pair of its validation images.

    Attributes:
        name: how the candidate is shown (its ensemble file).
        ids: the validation images, in the rows' order.
        dice: (N, C) Dice of every (image, class) pair.
        empty: (N, C) True where the truth is empty (what an all-empty prediction gets right).
        predicted: (N, C) True where the candidate predicts a defect.
        curves: from tune's counts, each class's mean Dice at each of CURVE_THRESHOLDS and
            at each minimum size of MIN_PIXELS_GRID, the other settings as they are
            (None when scored from masks).
    """

    name: str
    ids: list[str]
    dice: NDArray[np.float64]
    empty: NDArray[np.bool_]
    predicted: NDArray[np.bool_]
    curves: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None


@dataclass(frozen=True)
class Pick:
    name: str
    why: str


@dataclass(frozen=True)
class Comparison:
    """Candidates on the images they share: scores with intervals, the all-empty baseline,
    every pairwise difference, how often each pair agrees, and (with `pick_two`) the picks.

    Attributes:
        scores: per candidate, 'mean' and per class ('1', '2', ...) with intervals.
        differences: (a, b, a minus b) for every pair, a listed before b.
        agreement: per (a, b), the share of (image, class) pairs on which both are right
            (Dice >= 0.5) or both wrong.
        scored_on: per candidate, how many validation images it had before sharing.
    """

    names: list[str]
    images: int
    classes: int
    resamples: int
    scores: dict[str, dict[str, Interval]]
    empty: float
    differences: list[tuple[str, str, Difference]]
    agreement: dict[tuple[str, str], float]
    scored_on: dict[str, int]
    picks: tuple[Pick, ...] = ()
    aligned: tuple[Candidate, ...] = field(default=(), repr=False)  # for the HTML report
    # PNGs of the images the leaders disagree on most: truth, then each leader's masks
    overlays: dict[str, bytes] = field(default_factory=dict, repr=False)

    def difference(self, a: str, b: str) -> Difference:
        """a minus b (whichever order it was computed in)."""
        for x, y, d in self.differences:
            if (x, y) == (a, b):
                return d
            if (x, y) == (b, a):
                return flipped(d)
        raise KeyError((a, b))

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "classes": self.classes,
            "resamples": self.resamples,
            "empty_baseline": self.empty,
            "scored_on": self.scored_on,
            "candidates": {
                name: {key: i.to_dict() for key, i in scores.items()}
                for name, scores in self.scores.items()
            },
            "differences": [
                {"a": a, "b": b, "verdict": d.verdict(a, b), "agreement": self.agreement[a, b]}
                | d.to_dict()
                for a, b, d in self.differences
            ],
            "picks": [{"name": p.name, "why": p.why} for p in self.picks],
        }

    def lines(self) -> list[str]:
        width = max(len(n) for n in [*self.names, "all empty"])
        head = f"{'':<{width}}  {'mean Dice [95% interval]':<25}" + "".join(
            f"{f'dice_{c}':>8}" for c in range(1, self.classes + 1)
        )
        lines = [
            f"compared on the {self.images} validation images every candidate shares "
            f"({self.resamples} bootstrap resamples)",
            head,
        ]
        for name in self.names:
            s = self.scores[name]
            per_class = "".join(f"{s[str(c)].value:8.4f}" for c in range(1, self.classes + 1))
            lines.append(f"{name:<{width}}  {s['mean'].text():<25}{per_class}")
        lines.append(f"{'all empty':<{width}}  {self.empty:.4f}")
        for a, b, d in self.differences:
            diff = d.diff["mean"]
            lines.append(
                f"{a} - {b}: {diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}], "
                f"P({a} better) {d.p_better['mean']:.2f}: {d.verdict(a, b)}; they agree on "
                f"{self.agreement[a, b]:.1%} of image-class pairs"
            )
        lines += [f"pick {i}: {p.name}: {p.why}" for i, p in enumerate(self.picks, 1)]
        return lines


def leaders(comparison: Comparison) -> tuple[Candidate, Candidate]:
    """The two picks, else the two best by mean Dice."""
    names = [p.name for p in comparison.picks]
    if len(names) < 2:
        names = sorted(comparison.names, key=lambda n: -comparison.scores[n]["mean"].value)[:2]
    by_name = {c.name: c for c in comparison.aligned}
    return by_name[names[0]], by_name[names[1]]


def disagreeing(comparison: Comparison, most: int = 12) -> list[int]:
    """Rows of the images on which the leaders' Dice differ most (summed over classes),
    at most `most`, none where they agree."""
    a, b = leaders(comparison)
    gap = np.abs(a.dice - b.dice).sum(axis=1)
    return [int(i) for i in np.argsort(-gap, kind="stable")[:most] if gap[i] > 0]


def flipped(d: Difference) -> Difference:
    """b minus a from a minus b."""
    return Difference(
        {k: Interval(-i.value, -i.high, -i.low) for k, i in d.diff.items()},
        {k: 1 - p for k, p in d.p_better.items()},
    )


def compare_candidates(
    candidates: Sequence[Candidate], resamples: int = RESAMPLES, seed: int = 0
) -> Comparison:
    """Score every candidate on the images they all share and difference every pair.

    Raises:
        ConfigError: fewer than two candidates, or no validation image in common.
    """
    if len(candidates) < 2:
        raise ConfigError("compare needs two candidates or more (-c A.yml -c B.yml)")
    shared = set.intersection(*(set(c.ids) for c in candidates))
    if not shared:
        counts = ", ".join(f"{c.name}: {len(c.ids)}" for c in candidates)
        raise ConfigError(
            f"the candidates share no validation image ({counts}); compare candidates built "
            "from the same runs' splits, or from k-fold runs of the same folds"
        )
    order = [i for i in candidates[0].ids if i in shared]
    aligned = [aligned_to(c, order) for c in candidates]
    names = [c.name for c in aligned]
    differences = [
        (a.name, b.name, paired_difference(a.dice, b.dice, resamples, seed))
        for i, a in enumerate(aligned)
        for b in aligned[i + 1 :]
    ]
    agreement = {
        (a.name, b.name): float(np.mean((a.dice >= AGREE_AT) == (b.dice >= AGREE_AT)))
        for i, a in enumerate(aligned)
        for b in aligned[i + 1 :]
    }
    return Comparison(
        names,
        len(order),
        aligned[0].dice.shape[1],
        resamples,
        {c.name: score_intervals(c.dice, resamples, seed) for c in aligned},
        float(aligned[0].empty.mean()),
        differences,
        agreement,
        {c.name: len(c.ids) for c in candidates},
        aligned=tuple(aligned),
    )


def aligned_to(candidate: Candidate, order: list[str]) -> Candidate:
    row = {image: i for i, image in enumerate(candidate.ids)}
    rows = [row[i] for i in order]
    return replace(
        candidate,
        ids=order,
        dice=candidate.dice[rows],
        empty=candidate.empty[rows],
        predicted=candidate.predicted[rows],
    )


def pick_two(comparison: Comparison) -> Comparison:
    """The two final submissions: the best mean Dice, and among the others not
    significantly worse than it, the one that agrees with it least (a hedge against the
    private split); when every other is significantly worse, the second best."""
    ranked = sorted(comparison.names, key=lambda n: -comparison.scores[n]["mean"].value)
    best, others = ranked[0], ranked[1:]
    first = Pick(best, f"the best mean Dice ({comparison.scores[best]['mean'].text()})")
    if not others:
        return replace(comparison, picks=(first,))

    def gap(name: str) -> Interval:
        return comparison.difference(name, best).diff["mean"]

    def agree(name: str) -> float:
        key = (best, name) if (best, name) in comparison.agreement else (name, best)
        return comparison.agreement[key]

    close = [n for n in others if gap(n).high >= 0]
    if close:
        second = min(close, key=lambda n: (agree(n), -comparison.scores[n]["mean"].value))
        g = gap(second)
        why = (
            f"within noise of {best} ({g.value:+.4f} [{g.low:+.4f}, {g.high:+.4f}]) and the "
            f"most different from it: they agree on {agree(second):.1%} of image-class pairs"
        )
        if len(close) > 1:
            why += f" (the least of {len(close)} candidates within noise)"
    else:
        second = others[0]
        g = gap(second)
        why = (
            f"the second best; every other candidate is significantly worse than {best} "
            f"(this one by {g.value:+.4f} [{g.low:+.4f}, {g.high:+.4f}])"
        )
    return replace(comparison, picks=(first, Pick(second, why)))


# ---------------------------------------------------------------- scoring a candidate


def score_candidate(name: str, ensemble: Ensemble, data_dir: Path | None = None) -> Candidate:
    """Score an ensemble on its runs' validation images (out of fold across k-fold runs):
    from tune's cache when its post-processing allows (no min_component), else by
    predicting and post-processing the masks."""
    postprocess = ensemble.applied_postprocess
    check_members(ensemble.members, postprocess)
    groups = group_by_split(ensemble.members)
    ids = [i for _, run in groups for i in validation_ids(run)]
    if any(postprocess.min_component):
        return Candidate(name, ids, *masks_dice(ensemble, groups, postprocess, data_dir))
    cache = cache_folder(groups[0][1], None)  # RUN/cache, else ./cache for a read-only run
    stats, _ = predict_stats(ensemble, groups, cache, postprocess.one_class_per_pixel, data_dir)
    return Candidate(
        name,
        ids,
        image_dice(stats, postprocess),
        stats.truth == 0,
        predicted_present(stats, postprocess),
        curves(stats, postprocess, CURVE_THRESHOLDS),
    )


def validation_ids(run: Path) -> list[str]:
    split = read_split(run / "split.csv")
    return [str(i) for i in split.loc[split["split"] == "val", "ImageId"]]


def masks_dice(
    ensemble: Ensemble,
    groups: list[tuple[list[Any], Path]],
    postprocess: PostProcess,
    data_dir: Path | None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Per (image, class) Dice, truth emptiness and predicted presence from post-processed
    masks."""
    sets = [(members, validation_set(run, members[0], data_dir)) for members, run in groups]
    dice, empty, predicted = [], [], []
    with Tracker(sum(len(s) for _, s in sets), "compare", "images") as progress:
        for members, dataset in sets:
            for ids, probs, heads, masks in validation_batches(
                replace(ensemble, members=members), dataset
            ):
                assert probs is not None  # group_by_split: each group has a segmenter
                pred = torch.from_numpy(postprocess_batch(probs, postprocess, heads))
                truth = torch.from_numpy(masks.astype(bool))
                dice.append(dice_per_pair(pred, truth).double().numpy())
                empty.append(~truth.flatten(2).any(2).numpy())
                predicted.append(pred.flatten(2).any(2).numpy())
                progress.update(len(ids))
    return np.concatenate(dice), np.concatenate(empty), np.concatenate(predicted)


def compare_ensembles(
    candidates: Sequence[EnsembleOptions],
    data_dir: Path | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    picks: int = 0,
) -> Comparison:
    """Score each candidate (an ensemble file, as its options), compare them all, and with
    `picks` 2 propose the two final submissions. Every file is read and checked before
    any model loads; the candidates then load one at a time.

    Raises:
        ConfigError: fewer than two candidates, a bad ensemble or post-processing file.
        CheckpointError: a missing or incompatible checkpoint.
    """
    if len(candidates) < 2:
        raise ConfigError("compare needs two candidates or more (-c A.yml -c B.yml)")
    for options in candidates:
        checked = file_options(options) if options.file is not None else options
        load_postprocess(checked.postprocess, f"{options.file}: postprocess", None)
    scored = [
        score_candidate(str(options.file), Ensemble.from_options(options), data_dir)
        for options in candidates
    ]
    comparison = compare_candidates(scored, resamples, seed)
    return pick_two(comparison) if picks == 2 else comparison
