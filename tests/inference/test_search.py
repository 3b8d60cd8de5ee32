"""The exact search behind `sever tune`, on hand-built counts.

Most cases build quantised probabilities and truths by hand, so every expected score is a
fraction one can check on paper. In the `tune_stats` cases every image predicts the same
10 pixels at probability 0.8, so thresholds and minimum sizes cannot tell images apart;
only presence can. An image is either a true defect (its truth is those 10 pixels) or a
false one (its truth is empty). All four classes are alike, so each class scores what the
mean scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from sever.errors import ConfigError
from sever.inference import search
from sever.inference.postprocess import PostProcess, postprocess_batch


def stats_of(images: list[tuple[bool, float]]) -> search.PairStats:
    """(true defect?, presence) per image -> PairStats, the same in each of 4 classes."""
    levels = np.zeros((len(images), 4, 4, 4), np.uint8)
    levels[:, :, :2, :] = 204  # 0.8
    levels[:, :, 2, :2] = 204
    truth = np.zeros_like(levels, bool)
    for i, (true, _) in enumerate(images):
        truth[i] = true and levels[i] > 0
    presence = np.array([[p] * 4 for _, p in images])
    return search.pair_stats(levels, truth, False, presence=presence)


BASE = PostProcess(threshold=0.5, min_pixels=0, one_class_per_pixel=False)


def test_a_gate_that_only_fits_these_images_is_dropped() -> None:
    # Part 0: two false defects at presence 0.2, two true ones at 0.9: a gate fixes both.
    # Part 1: a true defect at 0.2 (a gate loses it), a true and a false one at 0.9.
    # On all 7 images a gate at 0.5 scores 5/7 against 4/7 without presence. Held out:
    # tuned on part 1, no gate (2 of 3 either way, the first best kept): part 0 scores 2/4;
    # tuned on part 0, a gate: part 1 scores 1/3. With presence 3/7, without 4/7.
    # Thresholds cannot tell the images apart, so shared and per-class values hold out alike.
    images = [(False, 0.2), (False, 0.2), (True, 0.9), (True, 0.9)]
    images += [(True, 0.2), (True, 0.9), (False, 0.9)]
    stats = stats_of(images)
    parts = np.array([0, 0, 0, 0, 1, 1, 1])
    assert search.search(stats).gate_or_none is not None  # fitted to all 7, a gate wins
    tuning = search.tune_stats(stats, parts, BASE)
    shared, per_class, presence = tuning.rungs
    assert [r.name for r in tuning.rungs] == ["shared", "per-class", "presence"]
    assert shared.held_out["dice_mean"] == pytest.approx(4 / 7) and shared.adopted
    assert per_class.gain.diff["mean"].value == 0 and not per_class.adopted
    assert presence.held_out["dice_mean"] == pytest.approx(3 / 7) and not presence.adopted
    assert presence.gain.diff["mean"].value == pytest.approx(-1 / 7)
    assert tuning.adopted == "shared" and tuning.held_out["dice_mean"] == pytest.approx(4 / 7)
    assert tuning.postprocess.gate is None and tuning.postprocess.scale_c is None
    assert len(set(tuning.postprocess.threshold)) == 1
    assert tuning.after["dice_mean"] == pytest.approx(4 / 7)
    assert presence.line("shared").endswith(
        "held out 0.4286, gain over shared -0.1429 [-0.4286, +0.0000]: within noise: kept shared"
    )


def test_a_gate_that_holds_out_is_kept() -> None:
    # 20 images a part, each: a false defect at presence 0.2 and a true one at 0.9, ten
    # times. Held out, the gate tuned on either part scores 1 on the other; without
    # presence 0.5: a gain of +1 on every false defect, significant over 40 images.
    stats = stats_of([(False, 0.2), (True, 0.9)] * 20)
    parts = np.repeat([0, 1], 20)
    tuning = search.tune_stats(stats, parts, BASE)
    assert tuning.adopted == "presence"
    assert tuning.rungs[2].gain.diff["mean"].value == pytest.approx(0.5)
    assert tuning.rungs[2].gain.diff["mean"].low > 0
    assert tuning.held_out["dice_mean"] == pytest.approx(1.0)
    result = tuning.postprocess
    assert (result.gate is not None and 0.2 < result.gate[0] <= 0.9) or result.scale_c
    assert tuning.after["dice_mean"] == pytest.approx(1.0)
    # the same on 4 images is within noise: the simpler setting stays
    few = search.tune_stats(stats_of([(False, 0.2), (True, 0.9)] * 2), np.array([0, 0, 1, 1]), BASE)
    assert few.rungs[2].held_out["dice_mean"] == pytest.approx(1.0)
    assert few.adopted == "shared" and few.postprocess.gate is None


def test_without_presence_the_ladder_has_two_rungs() -> None:
    levels = np.zeros((2, 4, 2, 2), np.uint8)
    levels[:, :, 0, 0] = 204
    stats = search.pair_stats(levels, levels > 0, False)
    tuning = search.tune_stats(stats, np.array([0, 1]), BASE)
    assert [r.name for r in tuning.rungs] == ["shared", "per-class"]
    assert tuning.postprocess.gate is None
    assert tuning.after["dice_mean"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="--search presence needs class presence"):
        search.tune_stats(stats, np.array([0, 1]), BASE, how="presence")


def test_a_forced_search_is_the_only_rung() -> None:
    stats = stats_of([(False, 0.2), (True, 0.9)] * 2)
    tuning = search.tune_stats(stats, np.array([0, 0, 1, 1]), BASE, how="presence")
    assert [r.name for r in tuning.rungs] == ["presence"] and tuning.adopted == "presence"
    assert tuning.postprocess.gate is not None or tuning.postprocess.scale_c is not None


def test_the_shared_search_gives_every_class_one_threshold_and_size() -> None:
    # class 1: 2 true pixels at 0.39; class 2: 2 true at 0.78 and 2 false at 0.47.
    # One threshold below 0.39: class 1 scores 1, class 2 2*2/(4+2) = 2/3, mean 5/6;
    # from 0.39 to 0.47: 0 and 2/3; from 0.47 to 0.78: 0 and 1. Per class: 1 and 1.
    levels = np.zeros((1, 2, 1, 4), np.uint8)
    levels[0, 0] = [100, 100, 0, 0]
    levels[0, 1] = [200, 200, 120, 120]
    truth = np.zeros_like(levels, bool)
    truth[0, 0, 0, :2] = truth[0, 1, 0, :2] = True
    stats = search.pair_stats(levels, truth, False)
    shared = search.search_shared(stats, min_grid=(0,))
    assert shared.thresholds[0] == shared.thresholds[1] < 100 / 255
    assert shared.min_pixels == [0, 0] and shared.gate_or_none is None
    assert search.score(stats, shared.thresholds, shared.min_pixels)["dice_mean"] == pytest.approx(
        5 / 6
    )
    alone = search.search_alone(stats)
    assert search.score(stats, alone.thresholds, alone.min_pixels)["dice_mean"] == 1.0


def test_pair_stats_match_direct_counting() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (2, 4, 8, 8), dtype=np.uint8)
    truth = rng.random((2, 4, 8, 8)) > 0.7
    stats = search.pair_stats(levels, truth, one_class_per_pixel=False)
    for k in (0, 100, 200, 255):
        assert (stats.above[..., k] == (levels > k).sum((2, 3))).all()
        assert (stats.hits[..., k] == ((levels > k) & truth).sum((2, 3))).all()
    winners = search.pair_stats(levels, truth, one_class_per_pixel=True)
    kept = levels == levels.max(axis=1, keepdims=True)
    assert (winners.above[..., 50] <= stats.above[..., 50]).all()
    assert winners.above[..., 0].sum() <= (kept & (levels > 0)).sum()


def test_score_of_stats_matches_hand_computation() -> None:
    # one image, one class: 10 predicted pixels above 0.5, 6 of them true, 8 true in all
    levels = np.zeros((1, 1, 4, 5), np.uint8)
    levels.flat[:10] = 200
    truth = np.zeros((1, 1, 4, 5), bool)
    truth.flat[4:12] = True
    stats = search.pair_stats(levels, truth, False)
    scores = search.score(stats, [0.5], [0])
    assert scores["dice_1"] == pytest.approx(2 * 6 / (10 + 8))
    assert search.score(stats, [0.5], [11])["dice_1"] == 0.0  # emptied: 10 < 11
    assert search.score(stats, [0.9], [0])["dice_1"] == 0.0  # nothing above 0.9


def test_classifier_scaling_in_stats() -> None:
    # The original project's scaling of the minimum pixel count: m = m0*c - m0*(c-1)*p.
    # m0 = 4, c = 3: m = 12 - 8p. Pixels at 0.8, threshold 0.5 (untouched by scaling).
    # image 0: 4 predicted, all true, p = 1 -> m = 4: kept, Dice 1
    # image 1: 4 predicted, truth empty, p = 0 -> m = 12: emptied, Dice 1 (a false positive
    #          the classifier rules out)
    # image 2: 12 predicted, all true, p = 0 -> m = 12: kept, Dice 1 (a strong mask overrules
    #          a doubtful classifier; scaling the threshold to 0.5*3 = 1.5 would lose it)
    levels = np.zeros((3, 1, 4, 4), np.uint8)
    levels[0, 0].flat[:4] = 204
    levels[1, 0].flat[:4] = 204
    levels[2, 0].flat[:12] = 204
    truth = levels > 0
    truth[1] = False
    presence = np.array([[1.0], [0.0], [0.0]])
    stats = search.pair_stats(levels, truth, False, presence=presence)
    assert search.score(stats, [0.5], [4], scale_c=3.0)["dice_1"] == pytest.approx(1.0)
    assert search.score(stats, [0.5], [4])["dice_1"] == pytest.approx(2 / 3)  # image 1 kept
    # the counts agree with the pipeline on the same probabilities
    pp = PostProcess(threshold=0.5, min_pixels=4, scale_c=3.0, classes=1, one_class_per_pixel=False)
    masks = postprocess_batch(levels / 255.0, pp, presence)
    assert masks.sum((1, 2, 3)).tolist() == [4, 0, 12]
    assert search.image_dice(stats, pp)[:, 0].tolist() == [1.0, 1.0, 1.0]
    choice = search.search(stats, min_grid=(0, 4))
    assert search.score(stats, choice.thresholds, choice.min_pixels, choice.scale_c, choice.gate)[
        "dice_1"
    ] == pytest.approx(1.0)


def test_search_finds_the_scaling_only_scaled_sizes_give() -> None:
    # Sizes alone cannot separate a 6-pixel false defect (p = 0) from a 6-pixel true one
    # (p = 1) and a 20-pixel true one (p = 0); a gate would lose the 20-pixel one. Only
    # scaled sizes keep both true ones: with m0 = 6, m(p=0) = 6c must lie in (6, 20], so
    # c in (1, 3.33]: the grid's 1.5, 2 or 3.
    levels = np.zeros((3, 1, 5, 5), np.uint8)
    levels[0, 0].flat[:6] = 204
    levels[1, 0].flat[:6] = 204
    levels[2, 0].flat[:20] = 204
    truth = levels > 0
    truth[0] = False
    stats = search.pair_stats(levels, truth, False, presence=np.array([[0.0], [1.0], [0.0]]))
    choice = search.search(stats, min_grid=(0, 6))
    assert choice.scale_c in (1.5, 2.0, 3.0) and choice.min_pixels == [6]
    assert choice.gate == [0.0]
    assert search.choice_dice(stats, choice)[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_presence_gate_in_stats() -> None:
    # Two images, 10 predicted pixels at 0.8 each: image 0's truth is empty (presence
    # 0.2), image 1's truth is exactly the prediction (presence 0.9). No threshold or
    # minimum size tells them apart; a gate between 0.2 and 0.9 does.
    levels = np.zeros((2, 1, 4, 4), np.uint8)
    levels[:, 0, :2, :] = 204  # 0.8
    levels[:, 0, 2, :2] = 204
    truth = np.zeros_like(levels, bool)
    truth[1] = levels[1] > 0
    stats = search.pair_stats(levels, truth, False, presence=np.array([[0.2], [0.9]]))
    assert search.score(stats, [0.5], [0])["dice_1"] == pytest.approx(0.5)
    assert search.score(stats, [0.5], [0], gate=[0.5])["dice_1"] == pytest.approx(1.0)
    assert search.score(stats, [0.5], [0], gate=[0.95])["dice_1"] == pytest.approx(0.5)
    assert search.score(stats, [0.5], [0], gate=[0.9])["dice_1"] == pytest.approx(1.0)
    choice = search.search(stats)
    assert 0.2 < choice.gate[0] <= 0.9
    assert choice.gate_or_none == (choice.gate[0],)
    alone = search.search(stats, presence=False)
    assert alone.gate == [0.0] and alone.scale_c is None
    assert search.score(stats, alone.thresholds, alone.min_pixels)["dice_1"] == 0.5


def test_gate_needs_presence() -> None:
    levels = np.zeros((1, 1, 2, 2), np.uint8)
    stats = search.pair_stats(levels, levels > 0, False)
    with pytest.raises(ConfigError, match="gate needs class presence"):
        search.score(stats, [0.5], [0], gate=[0.5])


def test_parts_for_the_held_out_estimate() -> None:
    assert search.parts_of([3, 2]).tolist() == [0, 0, 0, 1, 1]  # one part per fold
    halves = search.parts_of([5])
    assert sorted(halves.tolist()) == [0, 0, 0, 1, 1]  # one group: two seeded halves
    assert halves.tolist() == search.parts_of([5]).tolist()


def test_held_out_scores_each_part_with_what_the_other_part_tuned() -> None:
    # Image A (part 0): one pixel at 0.8 that is the defect. Image B (part 1): one pixel at
    # 0.3, no defect. Tuned on both, any threshold in (0.3, 0.8) scores 1.0. Held out:
    # tuned on B alone, the first best choice is the lowest threshold above 0.3, which
    # still finds A (1); tuned on A alone it is the lowest, 0.05, which marks B (0).
    levels = np.zeros((2, 1, 2, 2), np.uint8)
    levels[0, 0, 0, 0], levels[1, 0, 0, 0] = 204, 77
    truth = np.zeros_like(levels, bool)
    truth[0, 0, 0, 0] = True
    stats = search.pair_stats(levels, truth, False)
    choice = search.search(stats)
    assert search.score(stats, choice.thresholds, choice.min_pixels)["dice_mean"] == 1.0
    held = search.held_out(stats, np.array([0, 1]))
    assert held["dice_mean"] == pytest.approx(0.5)
    assert held["dice_1"] == pytest.approx(0.5)
