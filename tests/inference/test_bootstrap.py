"""The paired bootstrap over images, against distributions worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sever.inference.bootstrap import (
    paired_difference,
    resample_counts,
    score_intervals,
)


def test_resamples_draw_every_image_count_times() -> None:
    counts = resample_counts(7, 500, seed=3)
    assert counts.shape == (500, 7)
    assert (counts.sum(1) == 7).all()
    # each image is drawn once per resample on average
    assert counts.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(counts, resample_counts(7, 500, seed=3))  # seeded
    assert not np.array_equal(counts, resample_counts(7, 500, seed=4))


def test_two_images_by_hand() -> None:
    """A wins image 1 (Dice 1 against 0) and ties image 2. A resample of 2 images has
    mean difference 1 (image 1 twice, p 1/4), 1/2 (once, p 1/2) or 0 (never, p 1/4): A is
    better in 3/4 of resamples and ties in 1/4, so P(A better) = 3/4 + 1/8 = 7/8, and the
    95% interval runs from 0 to 1."""
    a, b = np.array([[1.0], [0.0]]), np.array([[0.0], [0.0]])
    found = paired_difference(a, b, resamples=40_000, seed=0)
    assert found.diff["mean"].value == 0.5
    assert (found.diff["mean"].low, found.diff["mean"].high) == (0.0, 1.0)
    assert found.p_better["mean"] == pytest.approx(7 / 8, abs=0.01)
    assert found.diff["1"] == found.diff["mean"]  # one class: the same numbers


def test_three_images_by_hand() -> None:
    """A wins one image of three: the resampled difference is k/3 with k ~ Binomial(3, 1/3),
    so P(k = 0) = 8/27 and P(A better) = 19/27 + 4/27 = 23/27."""
    a, b = np.array([[1.0], [0.0], [0.0]]), np.zeros((3, 1))
    found = paired_difference(a, b, resamples=40_000, seed=1)
    assert found.p_better["mean"] == pytest.approx(23 / 27, abs=0.01)


def test_the_same_option_is_within_noise() -> None:
    rng = np.random.default_rng(0)
    dice = rng.random((50, 4))
    found = paired_difference(dice, dice)
    assert found.diff["mean"].to_dict() == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert found.p_better["mean"] == 0.5
    assert found.verdict() == "within noise"


def test_planted_differences_get_their_verdicts() -> None:
    """B loses 0.05 on every pair: certain. A gains exactly 0.01 per image on average with a
    noise of exactly 0.1 (planted, not drawn, so no seed decides it): 1 standard error on
    100 images (0.01), within noise; 14 on 20,000 (0.0007), clear."""
    rng = np.random.default_rng(5)
    a = rng.random((1000, 4))
    assert paired_difference(a, a - 0.05).verdict("A", "B") == "A better"
    assert paired_difference(a - 0.05, a).verdict("A", "B") == "B better"
    for images, verdict in ((100, "within noise"), (20_000, "A better")):
        base = rng.random((images, 1))
        z = rng.normal(size=(images, 1))
        gain = 0.01 + 0.1 * (z - z.mean()) / z.std()
        assert gain.mean() == pytest.approx(0.01) and gain.std() == pytest.approx(0.1)
        assert paired_difference(base + gain, base, seed=2).verdict() == verdict


def test_per_class_and_overall() -> None:
    """Classes 1 and 2 of two images: A gains 1 on class 1 of image 1 only."""
    a = np.array([[1.0, 1.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0]])
    found = paired_difference(a, b, resamples=1000)
    assert found.diff["mean"].value == pytest.approx(0.25)  # mean of 4 pairs
    assert found.diff["1"].value == pytest.approx(0.5)
    assert found.diff["2"].to_dict() == {"value": 0.0, "low": 0.0, "high": 0.0}


def test_score_intervals_hold_the_score() -> None:
    rng = np.random.default_rng(1)
    dice = (rng.random((400, 4)) > 0.2).astype(float)  # 80% of pairs right
    scores = score_intervals(dice, resamples=2000)
    mean = scores["mean"]
    assert mean.value == pytest.approx(dice.mean())
    assert mean.low < mean.value < mean.high
    # the standard error of a mean of 400 images of 4 pairs is about 0.01: a 95%
    # interval about 0.04 wide
    assert 0.025 < mean.high - mean.low < 0.06
    assert set(scores) == {"mean", "1", "2", "3", "4"}


def test_mismatched_options_are_refused() -> None:
    with pytest.raises(ValueError, match="different images"):
        paired_difference(np.zeros((3, 4)), np.zeros((4, 4)))
