"""tune keeps gates and threshold scaling only when its held-out estimate improves.

Hand-built stats: every image predicts the same 10 pixels at probability 0.8, so
thresholds and minimum sizes cannot tell images apart; only presence can. An image is
either a true defect (its truth is those 10 pixels) or a false one (its truth is empty).
All four classes are alike, so each class scores what the mean scores.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sever.inference import tune
from sever.inference.ensemble import tuning_differences
from sever.inference.postprocess import PostProcess


def stats_of(images: list[tuple[bool, float]]) -> tune.PairStats:
    """(true defect?, presence) per image -> PairStats, the same in each of 4 classes."""
    levels = np.zeros((len(images), 4, 4, 4), np.uint8)
    levels[:, :, :2, :] = 204  # 0.8
    levels[:, :, 2, :2] = 204
    truth = np.zeros_like(levels, bool)
    for i, (true, _) in enumerate(images):
        truth[i] = true and levels[i] > 0
    presence = np.array([[p] * 4 for _, p in images])
    return tune.pair_stats(levels, truth, False, presence=presence)


BASE = PostProcess(threshold=0.5, min_pixels=0, one_class_per_pixel=False)


def test_a_gate_that_only_fits_these_images_is_dropped() -> None:
    # Part 0: two false defects at presence 0.2, two true ones at 0.9: a gate fixes both.
    # Part 1: a true defect at 0.2 (a gate loses it), a true and a false one at 0.9.
    # On all 7 images a gate at 0.5 scores 5/7 against 4/7 without presence. Held out:
    # tuned on part 1, no gate (2 of 3 either way, the first best kept): part 0 scores 2/4;
    # tuned on part 0, a gate: part 1 scores 1/3. With presence 3/7, without 4/7.
    images = [(False, 0.2), (False, 0.2), (True, 0.9), (True, 0.9)]
    images += [(True, 0.2), (True, 0.9), (False, 0.9)]
    stats = stats_of(images)
    parts = np.array([0, 0, 0, 0, 1, 1, 1])
    assert tune.search(stats).gate_or_none is not None  # fitted to all 7, a gate wins
    result, report = tune.tune_stats(stats, parts, BASE)
    assert report["held_out"]["dice_mean"] == pytest.approx(3 / 7)
    assert report["held_out_without_presence"]["dice_mean"] == pytest.approx(4 / 7)
    assert report["presence"] == "dropped"
    assert report["presence_note"] == (
        "gates and scaling do not improve the held-out estimate (0.4286 with, 0.5714 "
        "without): wrote thresholds and sizes alone"
    )
    assert result.gate is None and result.scale_c is None
    assert report["gate"] is None and report["after"]["dice_mean"] == pytest.approx(4 / 7)


def test_a_gate_that_holds_out_is_kept() -> None:
    # Both parts: a false defect at presence 0.2 and a true one at 0.9. Held out, the gate
    # tuned on either part scores 1.0 on the other; without presence 0.5.
    stats = stats_of([(False, 0.2), (True, 0.9), (False, 0.2), (True, 0.9)])
    result, report = tune.tune_stats(stats, np.array([0, 0, 1, 1]), BASE)
    assert report["held_out"]["dice_mean"] == pytest.approx(1.0)
    assert report["held_out_without_presence"]["dice_mean"] == pytest.approx(0.5)
    assert report["presence"] == "kept"
    assert (result.gate is not None and 0.2 < result.gate[0] <= 0.9) or result.scale_c
    assert report["after"]["dice_mean"] == pytest.approx(1.0)


def test_without_presence_there_is_nothing_to_keep() -> None:
    levels = np.zeros((2, 4, 2, 2), np.uint8)
    levels[:, :, 0, 0] = 204
    stats = tune.pair_stats(levels, levels > 0, False)
    result, report = tune.tune_stats(stats, np.array([0, 1]), BASE)
    assert "presence" not in report and result.gate is None
    assert report["after"]["dice_mean"] == pytest.approx(1.0)


def member(name: str, task: str = "segment", weight: float = 1.0) -> SimpleNamespace:
    """What tuning_differences reads of a Member; its weights' fingerprint is its name."""
    return SimpleNamespace(
        path=Path(f"/kaggle/input/x/{name}.pth"), task=task, weight=weight, fingerprint=name
    )


RECORD = {
    "tta": "hflip",
    "averaging": "weighted",
    "models": [
        {"checkpoint": "saved/a.pth", "weight": 1.0, "task": "segment", "weights_sha256": "a"},
        {"checkpoint": "saved/b.pth", "weight": 2.0, "task": "segment", "weights_sha256": "b"},
        {"checkpoint": "saved/c.pth", "weight": 1.0, "task": "classify", "weights_sha256": "c"},
    ],
}


def test_the_same_ensemble_elsewhere_matches_its_tuned_file() -> None:
    same = [member("a"), member("b", weight=2.0), member("c", "classify")]
    assert tuning_differences(RECORD, same, "hflip", "weighted") == []


def test_every_difference_is_named() -> None:
    here = [member("a", weight=3.0), member("c", "classify"), member("d")]
    assert tuning_differences(RECORD, here, "none", "weighted") == [
        "TTA hflip (here none)",
        "1 model(s) not given here (saved/b.pth)",
        "1 model(s) here that it was not tuned with (/kaggle/input/x/d.pth)",
        "other weights for /kaggle/input/x/a.pth",
    ]
    # averaging matters with several segmenters, not with one
    assert tuning_differences(RECORD, here, "hflip", "mean")[0] == (
        "averaging weighted (here mean)"
    )
    alone = {**RECORD, "models": RECORD["models"][:1]}
    assert tuning_differences(alone, [member("a")], "hflip", "mean") == []
