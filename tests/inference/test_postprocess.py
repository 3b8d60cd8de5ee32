import dataclasses

import numpy as np
import pytest
import yaml

from sever.inference.postprocess import (
    AVERAGING,
    PostProcess,
    average,
    gate,
    min_pixels,
    one_class_per_pixel,
    postprocess,
    postprocess_batch,
    remove_small_components,
    scaled_min_pixels,
    threshold,
    winners,
)


def rows(*classes: str) -> np.ndarray:
    """Bool masks (C, H, W) from one string per class, rows split by '/', '1' = set."""
    return np.array([[[ch == "1" for ch in row] for row in c.split("/")] for c in classes])


# --- average -----------------------------------------------------------------------------

# The original write-up's table: RMS leans towards the most confident member.
RMS_TABLE = [
    ([0.2, 0.3, 0.7], 0.40, 0.45),
    ([0.1, 0.2, 0.9], 0.40, 0.54),
    ([0.4, 0.5, 0.6], 0.50, 0.51),
    ([0.3, 0.3, 0.8], 0.47, 0.52),
    ([0.1, 0.8, 0.8], 0.57, 0.66),
]


@pytest.mark.parametrize(("members", "mean", "rms"), RMS_TABLE)
def test_average_reproduces_the_rms_table(members, mean, rms):
    stacked = np.array(members, np.float32).reshape(3, 1, 1, 1)  # (M, C, H, W)
    assert round(float(average(stacked, "mean")[0, 0, 0]), 2) == mean
    assert round(float(average(stacked, "rms")[0, 0, 0]), 2) == rms
    assert round(float(average(list(stacked), "rms")[0, 0, 0]), 2) == rms


def test_average_list_and_stacked_agree_with_numpy():
    rng = np.random.default_rng(0)
    stacked = rng.random((3, 2, 4, 5), dtype=np.float32)
    for method, expected in [
        ("mean", stacked.mean(0)),
        ("rms", np.sqrt((stacked**2).mean(0))),
    ]:
        np.testing.assert_allclose(average(stacked, method), expected, rtol=1e-6)
        np.testing.assert_allclose(average(list(stacked), method), expected, rtol=1e-6)


def test_average_weighted_normalises_weights():
    stacked = np.array([[0.2, 1.0], [0.6, 0.0]], np.float32)  # M = 2 members of shape (2,)
    # weights 1:3 -> 0.25 * 0.2 + 0.75 * 0.6 = 0.5 and 0.25 * 1 + 0 = 0.25
    for weights in ([1, 3], [0.25, 0.75], (2.0, 6.0)):
        np.testing.assert_allclose(average(stacked, "weighted", weights), [0.5, 0.25], rtol=1e-6)
    # a zero weight drops a member
    np.testing.assert_allclose(average(stacked, "weighted", [0, 1]), [0.6, 0.0])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float32)],
)
@pytest.mark.parametrize("method", ["mean", "rms"])
def test_average_dtype_and_shape(dtype, expected, method):
    stacked = np.full((2, 4, 3, 5), 0.5, dtype)
    out = average(stacked, method)
    assert out.dtype == expected and out.shape == (4, 3, 5)
    np.testing.assert_allclose(out, 0.5)
    assert average(stacked, "weighted", [1, 2]).dtype == expected


def test_average_does_not_modify_its_input():
    stacked = np.array([[0.2], [0.4]], np.float32)
    before = stacked.copy()
    average(stacked, "rms")
    np.testing.assert_array_equal(stacked, before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "median"}, r"unknown averaging method 'median'; expected one of "),
        ({"method": "weighted"}, "method 'weighted' needs weights"),
        ({"method": "mean", "weights": [1, 1]}, "weights are only used by method 'weighted'"),
        ({"method": "weighted", "weights": [1, 1, 1]}, r"expected 2 values .*got shape \(3,\)"),
        ({"method": "weighted", "weights": [1, -1]}, "expected finite values >= 0"),
        ({"method": "weighted", "weights": [0, 0]}, "with a sum > 0"),
    ],
)
def test_average_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        average(np.zeros((2, 3), np.float32), **kwargs)


def test_average_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        average(np.zeros((2, 3)), "median")
    for name in AVERAGING:
        assert repr(name) in str(err.value)
    assert set(AVERAGING) == {"mean", "rms", "weighted"}


def test_average_rejects_empty_and_mismatched_members():
    with pytest.raises(ValueError, match="no ensemble members"):
        average([])
    with pytest.raises(ValueError, match=r"member 1 has shape \(3,\), member 0 has \(2,\)"):
        average([np.zeros(2), np.zeros(3)])


# --- threshold ---------------------------------------------------------------------------

PROBS_2x1x3 = np.array([[[0.2, 0.5, 0.8]], [[0.6, 0.4, 0.9]]], np.float32)


def test_threshold_is_strictly_above():
    expected = rows("001", "101")  # 0.5 at t = 0.5 is not predicted
    out = threshold(PROBS_2x1x3, 0.5)
    assert out.dtype == bool and out.shape == (2, 1, 3)
    np.testing.assert_array_equal(out, expected)


def test_threshold_per_class():
    np.testing.assert_array_equal(threshold(PROBS_2x1x3, (0.1, 0.85)), rows("111", "001"))


def test_threshold_compares_in_the_maps_dtype():
    # float32(0.4) is a little above 0.4; cast to float32, the threshold equals it.
    probs = np.full((1, 1, 1), 0.4, np.float32)
    assert not threshold(probs, 0.4).any()


def test_threshold_batch_with_per_image_thresholds():
    batch = np.stack([PROBS_2x1x3, PROBS_2x1x3])
    out = threshold(batch, np.array([[0.5, 0.5], [0.1, 0.85]]))
    assert out.shape == (2, 2, 1, 3)
    np.testing.assert_array_equal(out[0], rows("001", "101"))
    np.testing.assert_array_equal(out[1], rows("111", "001"))
    np.testing.assert_array_equal(threshold(batch, (0.1, 0.85))[0], rows("111", "001"))


def test_threshold_errors():
    with pytest.raises(ValueError, match=r"t: expected 1 or 2 values \(one per class\)"):
        threshold(PROBS_2x1x3, (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"probs: expected \(C, H, W\) or \(N, C, H, W\)"):
        threshold(PROBS_2x1x3[0], 0.5)


# --- one class per pixel -----------------------------------------------------------------

# Five pixels, three classes; class 2 is never predicted.
OCP_PROBS = np.array(
    [
        [[0.9, 0.6, 0.7, 0.2, 0.9]],
        [[0.8, 0.7, 0.7, 0.9, 0.3]],
        [[0.1, 0.8, 0.1, 0.1, 0.1]],
    ],
    np.float32,
)
OCP_MASKS = rows("11100", "11101", "00000")


def test_one_class_per_pixel_by_hand():
    # px 0: 0.9 > 0.8, class 0 keeps it. px 1: class 2 (0.8) is the most probable, so
    # neither predicted class keeps it, although class 2 is not predicted there. px 2: a
    # 0.7 tie goes to the lowest index, class 0. px 3: nothing predicted. px 4: class 0
    # (0.9) is more probable than class 1, so class 1 loses the pixel.
    out = one_class_per_pixel(OCP_PROBS, OCP_MASKS)
    np.testing.assert_array_equal(out, rows("10100", "00000", "00000"))
    assert out.dtype == bool


def test_one_class_per_pixel_leaves_inputs_alone_and_handles_batches():
    masks = OCP_MASKS.copy()
    batch = one_class_per_pixel(np.stack([OCP_PROBS, OCP_PROBS[::-1]]), np.stack([masks] * 2))
    np.testing.assert_array_equal(masks, OCP_MASKS)
    np.testing.assert_array_equal(batch[0], rows("10100", "00000", "00000"))
    # image 1 has the class maps reversed (class 0: 0.1 0.8 0.1 0.1 0.1; class 1: 0.8 0.7
    # 0.7 0.9 0.3; class 2: 0.9 0.6 0.7 0.2 0.9): class 0 wins px 1, class 1 wins the
    # 0.7 tie with class 2 on px 2, class 2 takes px 0 and px 4 from both
    np.testing.assert_array_equal(batch[1], rows("01000", "00100", "00000"))


def test_one_class_per_pixel_without_overlap_changes_nothing():
    masks = rows("1100", "0011")
    probs = np.where(masks, 0.9, 0.1).astype(np.float32)  # each pixel's own class wins
    np.testing.assert_array_equal(one_class_per_pixel(probs, masks), masks)


def test_one_class_per_pixel_shape_mismatch():
    with pytest.raises(ValueError, match=r"probs has shape \(3, 1, 5\) but masks has"):
        one_class_per_pixel(OCP_PROBS, OCP_MASKS[:2])


# --- remove small components -------------------------------------------------------------

# A diagonal of 3 pixels (one component with 8-connectivity, three with 4), a lone pixel
# and a horizontal pair.
DIAGONAL = "10000/01001/00100/00000/11000"


@pytest.mark.parametrize(
    ("min_size", "expected"),
    [
        (0, DIAGONAL),  # off
        (1, DIAGONAL),
        (2, "10000/01000/00100/00000/11000"),  # the lone pixel goes
        (3, "10000/01000/00100/00000/00000"),  # exactly 3 pixels: the diagonal stays
        (4, "00000/00000/00000/00000/00000"),
    ],
)
def test_remove_small_components_8_connected(min_size, expected):
    out = remove_small_components(rows(DIAGONAL), min_size)
    np.testing.assert_array_equal(out, rows(expected))
    assert out.dtype == bool and out.shape == (1, 5, 5)


def test_remove_small_components_keeps_a_whole_mask_of_exactly_min_size():
    masks = rows("110/001", "110/000")  # 3 pixels, one component; 2 pixels
    np.testing.assert_array_equal(remove_small_components(masks, 3), rows("110/001", "000/000"))


def test_remove_small_components_per_class_and_batch():
    masks = rows(DIAGONAL, DIAGONAL, "11111/00000/00000/00000/00000")
    out = remove_small_components(np.stack([masks, masks]), (3, 0, 6))
    for image in out:
        np.testing.assert_array_equal(image[0], rows("10000/01000/00100/00000/00000")[0])
        np.testing.assert_array_equal(image[1], masks[1])
        assert not image[2].any()  # 5 pixels < 6


def test_remove_small_components_accepts_non_contiguous_and_0_1_masks():
    masks = np.asfortranarray(rows(DIAGONAL).astype(np.uint8))
    out = remove_small_components(masks, 3)
    np.testing.assert_array_equal(out, rows("10000/01000/00100/00000/00000"))
    assert out.dtype == bool
    np.testing.assert_array_equal(masks, rows(DIAGONAL))  # input untouched


def test_remove_small_components_rejects_bad_sizes():
    with pytest.raises(ValueError, match="min_size: expected 1 or 1 values"):
        remove_small_components(rows(DIAGONAL), (1, 2))
    with pytest.raises(ValueError, match="min_size: expected values >= 0"):
        remove_small_components(rows(DIAGONAL), -1)
    with pytest.raises(ValueError, match="min_size: expected whole numbers"):
        remove_small_components(rows(DIAGONAL), 2.5)


# --- min pixels --------------------------------------------------------------------------


def test_min_pixels_boundary_and_per_class():
    masks = rows("111", "110")  # 3 and 2 pixels
    # fewer than min_pixels is emptied; exactly min_pixels is kept
    np.testing.assert_array_equal(min_pixels(masks, 3), rows("111", "000"))
    np.testing.assert_array_equal(min_pixels(masks, 2), masks)
    np.testing.assert_array_equal(min_pixels(masks, (4, 2)), rows("000", "110"))
    np.testing.assert_array_equal(masks, rows("111", "110"))  # input untouched


def test_min_pixels_default_is_600_600_1000_2000():
    masks = np.zeros((2, 4, 50, 50), bool)
    for c, size in enumerate((600, 600, 1000, 2000)):
        masks[0, c].flat[:size] = True  # exactly the minimum: kept
        masks[1, c].flat[: size - 1] = True  # one short: emptied
    out = min_pixels(masks)
    assert out.sum((2, 3)).tolist() == [[600, 600, 1000, 2000], [0, 0, 0, 0]]


def test_min_pixels_wrong_length():
    with pytest.raises(ValueError, match=r"min_pixels: expected 1 or 2 values"):
        min_pixels(rows("1", "1"))  # the 4-class default on 2 classes


# --- gate and scaled thresholds ----------------------------------------------------------


def test_gate_boundary_and_per_class():
    masks = rows("11", "11", "11")
    presence = [0.2, 0.5, 0.8]
    # below the gate is emptied; equal to it is kept
    np.testing.assert_array_equal(gate(masks, presence, 0.5), rows("00", "11", "11"))
    np.testing.assert_array_equal(gate(masks, presence, (0.1, 0.6, 0.9)), rows("11", "00", "00"))


def test_gate_batch():
    masks = np.stack([rows("11", "11")] * 2)
    out = gate(masks, np.array([[0.9, 0.1], [0.1, 0.9]]), 0.5)
    assert out.sum((2, 3)).tolist() == [[2, 0], [0, 2]]
    with pytest.raises(ValueError, match=r"presence: expected shape \(2, 2\), got \(2,\)"):
        gate(masks, [0.5, 0.5], 0.5)


@pytest.mark.parametrize(
    ("p", "expected"),
    # m = m0*c - m0*(c-1)*p with m0 = 600, c = 5: 3000 - 2400 p, rounded up to whole pixels
    [(1.0, 600), (0.5, 1800), (0.0, 3000), (0.75, 1200), (0.3, 2280), (0.9999, 601)],
)
def test_scaled_min_pixels_by_hand(p, expected):
    assert scaled_min_pixels(600, [p], 5.0).tolist() == [expected]


def test_scaled_min_pixels_is_the_original_projects_rule():
    # the seed's notebook/classification-process.ipynb: pthresh [600, 600, 1000, 2000],
    # prob_clas [0.2, 0.5, 0.5, 0.8], t1 = pthresh*5 - pthresh*4*prob_clas
    pthresh, prob = np.array([600, 600, 1000, 2000]), np.array([0.2, 0.5, 0.5, 0.8])
    t1 = pthresh * 5 - pthresh * 4 * prob
    assert t1.tolist() == pytest.approx([2520, 1800, 3000, 3600])
    assert scaled_min_pixels(pthresh, prob, 5.0).tolist() == [2520, 1800, 3000, 3600]


def test_scaled_min_pixels_per_class_and_batch():
    # c = 2: m = 2*m0 - m0*p
    out = scaled_min_pixels((400, 500, 600), [1.0, 1.0, 0.0], 2.0)
    assert out.tolist() == [400, 500, 1200]
    batch = scaled_min_pixels(100, np.array([[1.0, 0.0], [0.5, 0.25]]))  # c = 5 by default
    assert batch.tolist() == [[100, 500], [300, 400]]
    assert scaled_min_pixels(300, [0.0, 0.7], 1.0).tolist() == [300, 300]
    assert scaled_min_pixels(0, [0.0, 0.5], 20.0).tolist() == [0, 0]  # off stays off


def test_scaled_min_pixels_errors():
    with pytest.raises(ValueError, match=r"c: expected a finite number >= 1, got 0.5"):
        scaled_min_pixels(600, [0.5], 0.5)
    with pytest.raises(ValueError, match=r"presence: expected probabilities in \[0, 1\], got 1.2"):
        scaled_min_pixels(600, [0.5, 1.2])
    with pytest.raises(ValueError, match=r"m0: expected 1 or 2 values"):
        scaled_min_pixels((1, 2, 3), [0.5, 0.5])


def test_min_pixels_per_image_and_class():
    masks = np.stack([rows("11", "10"), rows("11", "10")])  # counts [[2, 1], [2, 1]]
    out = min_pixels(masks, np.array([[3, 1], [2, 2]]))
    assert out.sum((2, 3)).tolist() == [[0, 1], [2, 0]]
    with pytest.raises(ValueError, match=r"min_pixels: expected shape \(2, 2\)"):
        min_pixels(masks, np.array([[1, 2, 3]]))


# --- PostProcess -------------------------------------------------------------------------


def test_postprocess_config_defaults_and_scalars():
    config = PostProcess()
    assert config.threshold == (0.5,) * 4
    assert config.min_pixels == (600, 600, 1000, 2000)
    assert config.one_class_per_pixel is True
    assert config.min_component == (0,) * 4
    assert config.gate is None and config.scale_c is None
    config = PostProcess(threshold=0.4, min_pixels=0, min_component=100, gate=0.5, scale_c=5)
    assert config.threshold == (0.4,) * 4 and config.min_pixels == (0,) * 4
    assert config.min_component == (100,) * 4 and config.gate == (0.5,) * 4
    assert config.scale_c == 5.0 and isinstance(config.scale_c, float)


def test_postprocess_config_round_trips_through_yaml():
    config = PostProcess(
        threshold=np.array([0.4, 0.5, 0.6, 0.7]),
        min_pixels=[600, 600, 1000, 2000],
        one_class_per_pixel=False,
        min_component=(10, 20, 30, 40),
        gate=(0.5, 0.4, 0.3, 0.2),
        scale_c=4.0,
    )
    d = config.to_dict()
    assert d == {
        "format": 2,
        "threshold": [0.4, 0.5, 0.6, 0.7],
        "min_pixels": [600, 600, 1000, 2000],
        "one_class_per_pixel": False,
        "min_component": [10, 20, 30, 40],
        "gate": [0.5, 0.4, 0.3, 0.2],
        "scale_c": 4.0,
        "classes": 4,
    }
    assert PostProcess.from_dict(yaml.safe_load(yaml.safe_dump(d))) == config
    assert PostProcess.from_dict({}) == PostProcess()
    assert PostProcess.from_dict(PostProcess().to_dict()) == PostProcess()


def test_a_scale_c_written_under_the_old_rule_is_refused():
    # Before format 2, scale_c scaled the probability threshold: read now, it would mean
    # something else, so a file with scale_c and no format is refused, in one message.
    with pytest.raises(ValueError, match=r"PostProcess.scale_c: without 'format: 2'.*sever tune"):
        PostProcess.from_dict({"threshold": 0.5, "scale_c": 5.0})
    assert PostProcess.from_dict({"format": 2, "scale_c": 5.0}).scale_c == 5.0
    # without scale_c an old file means what it meant
    assert PostProcess.from_dict({"threshold": 0.4, "scale_c": None}).threshold == (0.4,) * 4
    with pytest.raises(ValueError, match=r"PostProcess.format: 3 is not a format this sever"):
        PostProcess.from_dict({"format": 3})


def test_postprocess_config_is_frozen_and_replace_validates():
    config = PostProcess()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = (0.1,) * 4
    assert dataclasses.replace(config, threshold=0.3).threshold == (0.3,) * 4
    with pytest.raises(ValueError, match="expected 4 values"):
        dataclasses.replace(config, min_pixels=(1, 2))


def test_postprocess_config_unknown_key():
    with pytest.raises(ValueError) as err:
        PostProcess.from_dict({"threshold": 0.5, "treshold": 0.5})
    message = str(err.value)
    assert "unknown key 'treshold' (did you mean 'threshold'?)" in message
    assert (
        "valid keys: threshold, min_pixels, one_class_per_pixel, min_component, gate, scale_c"
        in message
    )


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"threshold": [0.5, 0.5, 0.5]}, r"PostProcess.threshold: expected 4 values .*got 3"),
        ({"min_pixels": [1, 2, 3, 4, 5]}, r"PostProcess.min_pixels: expected 4 values"),
        ({"gate": [0.5]}, r"PostProcess.gate: expected 4 values"),
        ({"threshold": 1.5}, r"PostProcess.threshold: expected numbers in \[0, 1\]"),
        ({"threshold": "0.5"}, r"PostProcess.threshold: expected a number or 4 values"),
        ({"min_pixels": 600.5}, r"PostProcess.min_pixels: expected whole numbers >= 0"),
        ({"min_component": -1}, r"PostProcess.min_component: expected whole numbers >= 0"),
        ({"one_class_per_pixel": "yes"}, r"one_class_per_pixel: expected true or false"),
        ({"scale_c": 0.5}, r"PostProcess.scale_c: expected null or a number >= 1"),
        ({"gate": [0.5, 0.5, 0.5, float("nan")]}, r"PostProcess.gate: expected numbers in"),
    ],
)
def test_postprocess_config_errors(d, message):
    with pytest.raises(ValueError, match=message):
        PostProcess.from_dict(d, classes=4)  # for 4-class models


def test_a_file_on_its_own_must_agree_with_itself():
    with pytest.raises(ValueError, match=r"PostProcess.min_pixels: expected 3 values"):
        PostProcess.from_dict({"threshold": [0.5] * 3, "min_pixels": [1] * 4})


def test_postprocess_config_rejects_non_mapping():
    with pytest.raises(ValueError, match="expected a mapping, got list"):
        PostProcess.from_dict([0.5])


# --- the pipeline ------------------------------------------------------------------------

QUIET = {"min_pixels": 0, "one_class_per_pixel": False}  # every step off


def test_postprocess_thresholds_only():
    probs = np.zeros((4, 1, 3), np.float32)
    probs[0] = [0.2, 0.5, 0.8]
    probs[3] = [0.9, 0.9, 0.1]
    out = postprocess(probs, PostProcess(threshold=(0.5, 0.5, 0.5, 0.95), **QUIET))
    np.testing.assert_array_equal(out, rows("001", "000", "000", "000"))
    assert out.dtype == bool and out.shape == (4, 1, 3)


def test_postprocess_boundaries():
    # 2 pixels at exactly 0.5 (not predicted) and 3 above: a mask of exactly min_pixels = 3,
    # one component of exactly min_component = 3, presence exactly at the gate: all kept.
    probs = np.zeros((4, 1, 5), np.float32)
    probs[0, 0] = [0.5, 0.6, 0.7, 0.8, 0.5]
    config = PostProcess(threshold=0.5, min_pixels=3, min_component=3, gate=0.4)
    out = postprocess(probs, config, presence=[0.4, 0.4, 0.4, 0.4])
    np.testing.assert_array_equal(out, rows("01110", "00000", "00000", "00000"))
    one_more = dataclasses.replace(config, min_pixels=4)
    assert not postprocess(probs, one_more, presence=[0.4] * 4).any()


def test_postprocess_order_one_class_then_components_then_min_pixels():
    # class 1 predicts 3 pixels but loses 2 of them to the more probable class 0; class 2
    # has a pair and a lone pixel, and the lone one is a small component.
    probs = np.zeros((4, 1, 6), np.float32)
    probs[0, 0] = [0.9, 0.9, 0.9, 0.0, 0.0, 0.0]
    probs[1, 0] = [0.0, 0.8, 0.8, 0.8, 0.0, 0.0]
    probs = np.concatenate([probs, np.zeros((4, 2, 6), np.float32)], axis=1)
    probs[2, 2] = [0.7, 0.7, 0.0, 0.0, 0.0, 0.7]
    config = PostProcess(threshold=0.5, min_pixels=(1, 2, 3, 0), min_component=(0, 0, 2, 0))
    out = postprocess(probs, config)
    # class 1: 1 pixel left after one-class-per-pixel < 2 -> emptied (min_pixels first would
    # have kept it). class 2: 2 pixels left after dropping the lone one < 3 -> emptied.
    assert out.sum((1, 2)).tolist() == [3, 0, 0, 0]
    # each step on its own, in the other order, would keep pixels of classes 1 and 2
    masks = threshold(probs, 0.5)
    wrong = one_class_per_pixel(probs, min_pixels(masks, (1, 2, 3, 0)))
    wrong = remove_small_components(wrong, (0, 0, 2, 0))
    assert wrong.sum((1, 2)).tolist() == [3, 1, 2, 0]


def test_postprocess_gates_last():
    # Class 0 is gated out, but only after it has taken the contested pixel from class 1.
    probs = np.zeros((4, 1, 2), np.float32)
    probs[0, 0] = [0.9, 0.0]
    probs[1, 0] = [0.8, 0.8]
    config = PostProcess(threshold=0.5, min_pixels=0, gate=0.5)
    out = postprocess(probs, config, presence=[0.1, 0.9, 0.9, 0.9])
    np.testing.assert_array_equal(out, rows("00", "01", "00", "00"))


def test_postprocess_scales_min_pixels_by_presence_not_the_threshold():
    # Each image's class 0 has 10 pixels at probability 0.6 (above 0.5). min_pixels 4,
    # c = 3: m = 12 - 8p: p = 1 -> 4, 0.75 -> 6, 0.25 -> 10, 0.2 -> 10.4 -> 11, 0 -> 12.
    probs = np.zeros((5, 4, 2, 5), np.float32)
    probs[:, 0] = 0.6
    config = PostProcess(threshold=0.5, min_pixels=4, scale_c=3.0)
    presence = np.array([[1.0, 1, 1, 1], [0.75, 1, 1, 1], [0.25, 1, 1, 1], [0.2, 1, 1, 1], [0] * 4])
    out = postprocess_batch(probs, config, presence)
    assert out[:, 0].sum((1, 2)).tolist() == [10, 10, 10, 0, 0]
    # The probability threshold is untouched: the same pixels, whatever the presence.
    assert postprocess(probs[0], config, [0.5, 1, 1, 1]).sum() == 10  # m = 8 <= 10
    # The old rule (t = 0.5*3 - 0.5*2*p = 1.0 at p = 0.5) would have deleted them all.


def test_postprocess_matches_the_steps_composed():
    rng = np.random.default_rng(1)
    probs = rng.random((3, 4, 32, 48), dtype=np.float32) ** 3
    presence = rng.random((3, 4))
    config = PostProcess(
        threshold=(0.3, 0.4, 0.5, 0.2),
        min_pixels=(5, 10, 20, 40),
        min_component=(1, 2, 3, 4),
        gate=(0.2, 0.3, 0.4, 0.5),
        scale_c=2.0,
    )
    masks = one_class_per_pixel(probs, threshold(probs, config.threshold))
    masks = remove_small_components(masks, config.min_component)
    least = scaled_min_pixels(config.min_pixels, presence, config.scale_c)
    masks = gate(min_pixels(masks, least), presence, config.gate)
    batch = postprocess_batch(probs, config, presence)
    assert 0 < batch.sum() < masks.size  # the test means something
    np.testing.assert_array_equal(batch, masks)
    for image, p, expected in zip(probs, presence, masks, strict=True):
        np.testing.assert_array_equal(postprocess(image, config, p), expected)


def test_postprocess_keeps_inputs_and_accepts_other_layouts():
    rng = np.random.default_rng(2)
    probs = rng.random((4, 16, 24))
    before = probs.copy()
    config = PostProcess(threshold=0.6, min_pixels=3, min_component=2)
    out = postprocess(probs, config)  # float64
    np.testing.assert_array_equal(probs, before)
    np.testing.assert_array_equal(postprocess(np.asfortranarray(probs), config), out)
    np.testing.assert_array_equal(postprocess(probs.astype(np.float32), config), out)


def test_postprocess_errors():
    probs = np.zeros((4, 2, 2), np.float32)
    with pytest.raises(ValueError, match="use postprocess_batch for"):
        postprocess(probs[None], PostProcess())
    with pytest.raises(ValueError, match="use postprocess for one image"):
        postprocess_batch(probs, PostProcess())
    with pytest.raises(ValueError, match="PostProcess is for 4 classes, probs has 3"):
        postprocess(probs[:3], PostProcess())
    for config in (PostProcess(gate=0.5), PostProcess(scale_c=5.0)):
        with pytest.raises(ValueError, match="need presence probabilities"):
            postprocess(probs, config)
    with pytest.raises(ValueError, match=r"presence: expected shape \(4,\)"):
        postprocess(probs, PostProcess(gate=0.5), presence=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"presence: expected shape \(1, 4\)"):
        postprocess_batch(probs[None], PostProcess(gate=0.5), presence=[0.5] * 4)


def test_winners_take_the_lowest_class_on_a_tie():
    probs = np.zeros((1, 3, 1, 3), np.float32)
    probs[0, :, 0, 0] = [0.2, 0.7, 0.7]  # tie between 1 and 2: 1
    probs[0, :, 0, 1] = [0.9, 0.1, 0.0]
    probs[0, :, 0, 2] = [0.0, 0.0, 0.0]  # all equal: 0
    found = winners(probs)
    assert found.dtype == np.uint8 and found.tolist() == [[[1, 0, 0]]]
    assert winners(np.zeros((1, 300, 1, 1))).dtype == np.uint16
