import math

import pytest
import torch

from sever.model.metrics import DiceMeter, PresenceMeter, dice_per_pair


def masks(n: int, c: int, pixels: dict[tuple[int, int], list[tuple[int, int]]]) -> torch.Tensor:
    """Bool masks (n, c, 4, 4) with the listed (row, col) pixels set per (image, class)."""
    out = torch.zeros(n, c, 4, 4, dtype=torch.bool)
    for (i, k), points in pixels.items():
        for row, col in points:
            out[i, k, row, col] = True
    return out


# Three images, two classes, with the Dice of each pair worked out by hand:
#   image 0: class 1 pred 3 px, truth 4 px, 2 shared -> 2*2/(3+4) = 4/7; class 2 both empty -> 1
#   image 1: class 1 pred only -> 0; class 2 truth only -> 0
#   image 2: class 1 exact match -> 1; class 2 both empty -> 1
PRED = masks(3, 2, {(0, 0): [(0, 0), (0, 1), (0, 2)], (1, 0): [(3, 3)], (2, 0): [(2, 2)]})
TRUTH = masks(3, 2, {(0, 0): [(0, 1), (0, 2), (1, 1), (1, 2)], (1, 1): [(0, 0)], (2, 0): [(2, 2)]})
DICE = [[4 / 7, 1.0], [0.0, 0.0], [1.0, 1.0]]


def test_dice_per_pair_by_hand():
    torch.testing.assert_close(dice_per_pair(PRED, TRUTH), torch.tensor(DICE))


def test_dice_accepts_float_truth():
    torch.testing.assert_close(dice_per_pair(PRED, TRUTH.float()), torch.tensor(DICE))


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [((), (), 1.0), ([(0, 0)], (), 0.0), ((), [(0, 0)], 0.0), ([(1, 1)], [(1, 1)], 1.0)],
)
def test_dice_edge_cases(pred, truth, expected):
    dice = dice_per_pair(masks(1, 1, {(0, 0): pred}), masks(1, 1, {(0, 0): truth}))
    assert dice.item() == expected


def test_meter_scores_by_hand():
    meter = DiceMeter(classes=2)
    meter.update(PRED, TRUTH)
    scores = meter.compute()
    assert scores["dice_mean"] == pytest.approx((4 / 7 + 3) / 6)
    assert scores["dice_1"] == pytest.approx((4 / 7 + 1) / 3)
    assert scores["dice_2"] == pytest.approx(2 / 3)
    # non-empty truths: image 0 class 1 (4/7), image 1 class 2 (0), image 2 class 1 (1)
    assert scores["dice_positive"] == pytest.approx((4 / 7 + 1) / 3)
    assert scores["empty_baseline"] == pytest.approx(3 / 6)
    assert set(scores) == {"dice_mean", "dice_1", "dice_2", "dice_positive", "empty_baseline"}


def test_meter_over_batches_is_the_mean_over_all_pairs():
    whole, split = DiceMeter(2), DiceMeter(2)
    whole.update(PRED, TRUTH)
    split.update(PRED[:2], TRUTH[:2])
    split.update(PRED[2:], TRUTH[2:])
    assert split.compute() == pytest.approx(whole.compute())


def test_meter_states_sum_like_an_all_reduce():
    first, second, whole = DiceMeter(2), DiceMeter(2), DiceMeter(2)
    first.update(PRED[:1], TRUTH[:1])
    second.update(PRED[1:], TRUTH[1:])
    whole.update(PRED, TRUTH)
    reduced = DiceMeter.from_state(first.state() + second.state())
    assert reduced.compute() == pytest.approx(whole.compute())
    assert first.merge(second).compute() == pytest.approx(whole.compute())


def test_dice_positive_is_nan_without_defects():
    meter = DiceMeter(2)
    empty = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    meter.update(empty, empty)
    scores = meter.compute()
    assert math.isnan(scores["dice_positive"])
    assert scores["dice_mean"] == scores["empty_baseline"] == 1.0


def test_presence_meter_by_hand():
    # Five images, three classes. Class 1: TP 2, FP 1, FN 1. Class 2: TP 0, FP 0, FN 2.
    # Class 3: never present, never predicted.
    pred = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    truth = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    meter = PresenceMeter(3)
    meter.update(pred[:2], truth[:2])
    meter.update(pred[2:], truth[2:])
    scores = meter.compute()
    assert scores["precision_1"] == pytest.approx(2 / 3)
    assert scores["recall_1"] == pytest.approx(2 / 3)
    assert scores["f1_1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert math.isnan(scores["precision_2"])  # nothing predicted
    assert scores["recall_2"] == 0.0 and scores["f1_2"] == 0.0
    assert scores["f1_3"] == 1.0  # nothing to find and nothing claimed
    assert math.isnan(scores["precision_3"]) and math.isnan(scores["recall_3"])
    assert scores["f1_mean"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    reduced = PresenceMeter.from_state(meter.state() * 2)  # like an all-reduce of 2 copies
    assert reduced.compute()["f1_1"] == pytest.approx(2 / 3)
