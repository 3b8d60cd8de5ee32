"""Writing submissions and scoring them with Kaggle's mean Dice.

Images are 4x3 (H x W), 12 pixels, so every RLE and Dice below can be checked by hand:
pixel k (1-based) is column (k - 1) // 4, row (k - 1) % 4.

The truth used throughout (3 images, 12 pairs, 3 of them with a defect):

    a.jpg class 1: "1 4" (pixels 1-4)    a.jpg class 3: "5 2" (pixels 5-6)
    b.jpg class 2: "9 4" (pixels 9-12)   c.jpg: no defect
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from sever.data import rle
from sever.errors import DataError
from sever.inference import submission as sub
from sever.inference.submission import pair_dice, runs_of, score_submission, write_submission
from sever.model.metrics import dice_per_pair

SHAPE = (4, 3)
IMAGES = ["a.jpg", "b.jpg", "c.jpg"]
TRUTH = {"a.jpg": {1: "1 4", 3: "5 2"}, "b.jpg": {2: "9 4"}}
WIDE_HEADER = "ImageId_ClassId,EncodedPixels"
LONG_HEADER = "ImageId,ClassId,EncodedPixels"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def score(submission: Path, truth: Path, images_dir: Path | None = None) -> dict:
    return score_submission(submission, truth, images_dir, shape=SHAPE)


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "truth.csv", TRUTH, "wide")


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    """The three 4x3 images (the size is read from the first)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in IMAGES:
        cv2.imwrite(str(folder / name), np.zeros(SHAPE, np.uint8))
    return folder


def write_csv(path: Path, masks: dict, fmt: str) -> Path:
    write_submission(masks, IMAGES, path, fmt)
    return path


# ---------------------------------------------------------------- Dice from runs


def runs(*encoded: str, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Runs of one RLE per pair (pair p = position in `encoded`)."""
    frame = pd.DataFrame(
        {
            "ImageId": [str(p // 4) for p in range(len(encoded))],
            "ClassId": [p % 4 + 1 for p in range(len(encoded))],
            "EncodedPixels": list(encoded),
        }
    )
    return runs_of(frame, pd.Index(sorted(set(frame["ImageId"]))), size)


@pytest.mark.parametrize(
    ("truth", "pred", "dice"),
    [
        ("", "", 1.0),  # both empty
        ("1 4", "", 0.0),  # missed defect
        ("", "1 1", 0.0),  # false positive
        ("1 4", "1 4", 1.0),
        ("1 4", "3 4", 0.5),  # 2 of 4 + 4 pixels shared
        ("9 4", "9 2", 2 * 2 / 6),
        ("1 2 5 2", "2 4", 2 * 2 / 8),  # two runs against one: pixels 2 and 5
        ("1 2 3 2", "1 4", 1.0),  # touching runs are one run
        ("1 12", "2 1 4 1 12 1", 2 * 3 / 15),
    ],
)
def test_pair_dice_by_hand(truth: str, pred: str, dice: float):
    # Padded with pairs of their own on both sides, so boundaries between pairs are crossed.
    truths = runs("1 12", truth, "12 1", "")
    preds = runs("1 12", pred, "12 1", "5 1")
    assert pair_dice(truths, preds, 4, 12).tolist() == pytest.approx([1.0, dice, 1.0, 0.0])


@pytest.mark.parametrize(("height", "width"), [(4, 3), (5, 7), (16, 16), (1, 9)])
def test_pair_dice_matches_decoded_masks(height: int, width: int):
    gen = np.random.default_rng(height * width)
    pairs = 40
    density = gen.uniform(0, 1, (2, pairs, 1, 1))
    masks = gen.uniform(0, 1, (2, pairs, height, width)) < density
    masks[:, ::7] = False  # some empty pairs of both kinds
    masks[0, ::5] = False
    truth = [rle.encode(m) for m in masks[0]]
    pred = [rle.encode(m) for m in masks[1]]
    size = height * width
    dice = pair_dice(runs(*truth, size=size), runs(*pred, size=size), pairs, size)
    decoded = np.stack([rle.rles_to_masks(r, height, width) for r in (truth, pred)])
    assert (decoded == masks).all()
    expected = dice_per_pair(torch.from_numpy(decoded[1])[None], torch.from_numpy(decoded[0])[None])
    np.testing.assert_allclose(dice, expected[0].double().numpy(), rtol=1e-6)


def test_pair_dice_without_any_runs_is_one_everywhere():
    empty = runs("", "", "", "")
    assert pair_dice(empty, empty, 4, 12).tolist() == [1.0] * 4


# ---------------------------------------------------------------- scoring


def test_perfect_submission_scores_one(tmp_path: Path, truth: Path):
    submission = write_csv(tmp_path / "sub.csv", TRUTH, "wide")
    assert score(submission, truth) == {
        "dice_mean": 1.0,
        "dice_1": 1.0,
        "dice_2": 1.0,
        "dice_3": 1.0,
        "dice_4": 1.0,
        "dice_positive": 1.0,
        "empty_baseline": 0.75,
        "pairs": 12,
        "images": 3,
    }


def test_empty_submission_scores_the_share_of_empty_pairs(tmp_path: Path, truth: Path):
    submission = write_csv(tmp_path / "sub.csv", {}, "wide")
    scores = score(submission, truth)
    assert scores["dice_mean"] == pytest.approx(9 / 12)  # 3 defect pairs out of 12
    assert [scores[f"dice_{c}"] for c in (1, 2, 3, 4)] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1])
    assert (scores["dice_positive"], scores["empty_baseline"]) == (0.0, 0.75)


def test_partial_overlap_by_hand(tmp_path: Path, truth: Path):
    # a1: 2 of 4 + 4 shared -> 1/2; a3 missed -> 0; b2: 2 of 4 + 2 -> 2/3; c4 false
    # positive -> 0; the other 8 pairs are empty on both sides -> 1.
    pred = {"a.jpg": {1: "3 4"}, "b.jpg": {2: "9 2"}, "c.jpg": {4: "1 1"}}
    submission = write_csv(tmp_path / "sub.csv", pred, "wide")
    scores = score(submission, truth)
    assert scores["dice_mean"] == pytest.approx((1 / 2 + 2 / 3 + 8) / 12)  # 55/72
    assert scores["dice_1"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert scores["dice_2"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert scores["dice_3"] == pytest.approx((0 + 1 + 1) / 3)
    assert scores["dice_4"] == pytest.approx((1 + 1 + 0) / 3)
    # the defect pairs a1, a3 and b2; c4's false positive is an empty pair's
    assert scores["dice_positive"] == pytest.approx((1 / 2 + 0 + 2 / 3) / 3)


@pytest.mark.parametrize("sub_fmt", ["wide", "long"])
@pytest.mark.parametrize("truth_fmt", ["wide", "long"])
def test_formats_give_identical_scores(tmp_path: Path, images_dir: Path, sub_fmt, truth_fmt):
    pred = {"a.jpg": {1: "3 4", 3: "5 2"}, "c.jpg": {4: "1 1"}}
    submission = write_csv(tmp_path / f"sub-{sub_fmt}.csv", pred, sub_fmt)
    truth = write_csv(tmp_path / f"truth-{truth_fmt}.csv", TRUTH, truth_fmt)
    expected = (1 / 2 + 1 + 0 + 0 + 8) / 12  # a1, a3, b2 missed, c4 false positive, 8 empty
    scores = score_submission(submission, truth, images_dir)
    assert scores["dice_mean"] == pytest.approx(expected)
    assert scores["images"] == 3 and scores["pairs"] == 12


def test_long_truth_needs_the_image_folder_for_defect_free_images(tmp_path: Path, images_dir: Path):
    truth = write_csv(tmp_path / "truth.csv", TRUTH, "long")
    submission = write_csv(tmp_path / "sub.csv", {}, "long")
    # Without the folder only a.jpg and b.jpg are known: 3 defect pairs of 8.
    scores = score(submission, truth)
    assert (scores["pairs"], scores["images"]) == (8, 2)
    assert scores["dice_mean"] == pytest.approx(5 / 8)
    scores = score(submission, truth, images_dir)  # c.jpg added, defect-free
    assert (scores["pairs"], scores["images"]) == (12, 3)
    assert scores["dice_mean"] == pytest.approx(9 / 12)


def test_image_size_comes_from_the_folder(tmp_path: Path, truth: Path, images_dir: Path):
    # 1 13 fits 256x1600 but not the 4x3 images of the folder.
    submission = write(tmp_path / "sub.csv", LONG_HEADER, "a.jpg,1,1 13")
    dice_1 = score_submission(submission, truth)["dice_1"]
    assert dice_1 == pytest.approx((8 / 17 + 2) / 3)  # a1: 2 * 4 / (4 + 13)
    with pytest.raises(DataError, match=r"line 2: ImageId a.jpg ClassId 1: .*12 pixels"):
        score_submission(submission, truth, images_dir)


# ---------------------------------------------------------------- malformed submissions


def wide_rows(skip: tuple[str, ...] = ()) -> list[str]:
    return [f"{i}_{c}," for i in IMAGES for c in (1, 2, 3, 4) if f"{i}_{c}" not in skip]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["ImageId,Mask", "a.jpg,1 1"], r"sub.csv: header ImageId,Mask is neither"),
        ([LONG_HEADER, "a.jpg,1,1 x"], r"sub.csv: line 2: ImageId a.jpg ClassId 1: bad Enc.*'x'"),
        ([LONG_HEADER, "a.jpg,1,1 1 1"], r"sub.csv: line 2: .*odd number of tokens"),
        ([LONG_HEADER, "b.jpg,2,", "a.jpg,1,5 20"], r"sub.csv: line 3: .*past the image's 12"),
        ([LONG_HEADER, "a.jpg,0,1 1"], r"sub.csv: line 2: ImageId a.jpg: ClassId '0' is not"),
        ([LONG_HEADER, "a.jpg,1,1 1", "a.jpg,1,"], r"sub.csv: line 3: .*ClassId 1: duplicate"),
        ([WIDE_HEADER, "a.jpg1,"], r"sub.csv: line 2: ImageId_ClassId 'a.jpg1' is not of"),
        ([LONG_HEADER, "a.jpg,1,", "z.jpg,2,1 1"], r"line 3: ImageId z.jpg: not an image of "),
        ([WIDE_HEADER, *wide_rows(("c.jpg_1", "c.jpg_2", "c.jpg_3", "c.jpg_4"))], r"no rows for"),
        ([WIDE_HEADER, *wide_rows(("b.jpg_2", "b.jpg_4"))], r"b.jpg: no row for ClassId 2, 4"),
    ],
)
def test_malformed_submission_is_one_line(tmp_path: Path, truth: Path, lines, message):
    submission = write(tmp_path / "sub.csv", *lines)
    with pytest.raises(DataError, match=message) as info:
        score(submission, truth)
    assert "\n" not in str(info.value)


def test_every_image_missing_from_a_wide_submission_is_counted(tmp_path: Path):
    submission = write(tmp_path / "sub.csv", WIDE_HEADER, *wide_rows())
    many = [f"{i:02d}.jpg" for i in range(9)]
    truth = write(tmp_path / "many.csv", WIDE_HEADER, *wide_rows(), *[f"{i}_1," for i in many])
    with pytest.raises(DataError, match=r"no rows for images 00.jpg, .*04.jpg, \.\.\. \(9 in"):
        score(submission, truth)


def test_unknown_image_with_a_long_truth_hints_at_the_folder(tmp_path: Path):
    truth = write_csv(tmp_path / "truth.csv", TRUTH, "long")
    submission = write_csv(tmp_path / "sub.csv", {}, "wide")  # lists c.jpg
    with pytest.raises(DataError, match=r"line 10: ImageId c.jpg: .*give the image folder"):
        score(submission, truth)


def test_long_submission_may_leave_out_empty_pairs_and_images(tmp_path: Path, truth: Path):
    submission = write(tmp_path / "sub.csv", LONG_HEADER, "a.jpg,1,1 4", "a.jpg,3,5 2")
    assert score(submission, truth)["dice_mean"] == pytest.approx(11 / 12)  # only b2 missed


def test_missing_files_are_errors(tmp_path: Path, truth: Path):
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        score(tmp_path / "nope.csv", truth)
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        score(truth, tmp_path / "nope.csv")


# ---------------------------------------------------------------- writing


PRED = {"b.jpg": {2: "9 2"}, "a.jpg": {3: "5 2", 1: "3 4"}, "c.jpg": {}}


def test_wide_lists_every_image_and_class_in_image_order(tmp_path: Path):
    path = tmp_path / "sub.csv"
    write_submission(PRED, ["b.jpg", "a.jpg"], path, "wide")
    assert path.read_text().splitlines() == [
        WIDE_HEADER,
        "b.jpg_1,",
        "b.jpg_2,9 2",
        "b.jpg_3,",
        "b.jpg_4,",
        "a.jpg_1,3 4",
        "a.jpg_2,",
        "a.jpg_3,5 2",
        "a.jpg_4,",
    ]


def test_long_lists_defect_rows_only(tmp_path: Path):
    path = tmp_path / "sub.csv"
    write_submission(PRED, ["c.jpg", "b.jpg", "a.jpg"], path, "long")
    assert path.read_text().splitlines() == [
        LONG_HEADER,
        "b.jpg,2,9 2",
        "a.jpg,1,3 4",
        "a.jpg,3,5 2",
    ]


def test_auto_without_template_is_wide_and_a_frame_works_like_a_dict(tmp_path: Path):
    frame = pd.DataFrame(
        [("a.jpg", 1, "3 4"), ("a.jpg", 3, "5 2"), ("b.jpg", 2, "9 2"), ("c.jpg", 4, None)],
        columns=["ImageId", "ClassId", "EncodedPixels"],
    )
    write_submission(frame, IMAGES, tmp_path / "frame.csv")
    write_submission(PRED, IMAGES, tmp_path / "dict.csv", "wide")
    assert (tmp_path / "frame.csv").read_text() == (tmp_path / "dict.csv").read_text()
    assert (tmp_path / "frame.csv").read_text().startswith(WIDE_HEADER + "\n")


def test_auto_reproduces_a_wide_templates_rows_and_order(tmp_path: Path):
    template = write(
        tmp_path / "sample_submission.csv",
        WIDE_HEADER,
        *[f"c.jpg_{c},1 1" for c in (1, 2, 3, 4)],
        *[f"a.jpg_{c},1 1" for c in (4, 3, 2, 1)],
        *[f"b.jpg_{c},1 1" for c in (2, 1, 3, 4)],
    )
    path = tmp_path / "sub.csv"
    write_submission(PRED, IMAGES, path, template=template)
    assert path.read_text().splitlines() == [
        WIDE_HEADER,
        *[f"c.jpg_{c}," for c in (1, 2, 3, 4)],
        "a.jpg_4,",
        "a.jpg_3,5 2",
        "a.jpg_2,",
        "a.jpg_1,3 4",
        "b.jpg_2,9 2",
        "b.jpg_1,",
        "b.jpg_3,",
        "b.jpg_4,",
    ]


def test_auto_with_the_compact_template_writes_every_image_and_class(tmp_path: Path):
    # The current sample_submission.csv: three columns, one row per image. Only the wide
    # format is known to score, so auto writes it: 4 rows per image, in the template's
    # image order, '' for no defect (Kaggle's test set: 5,506 images -> 22,024 rows).
    template = write(
        tmp_path / "sample_submission.csv",
        "ImageId,EncodedPixels,ClassId",
        "c.jpg,1 12,0",
        "b.jpg,1 12,0",
        "a.jpg,1 12,0",
    )
    path = tmp_path / "sub.csv"
    write_submission(PRED, IMAGES, path, template=template)
    assert path.read_text().splitlines() == [
        WIDE_HEADER,
        *[f"c.jpg_{c}," for c in (1, 2, 3, 4)],
        "b.jpg_1,",
        "b.jpg_2,9 2",
        "b.jpg_3,",
        "b.jpg_4,",
        "a.jpg_1,3 4",
        "a.jpg_2,",
        "a.jpg_3,5 2",
        "a.jpg_4,",
    ]
    # long stays an explicit choice, following the template's columns
    write_submission(PRED, IMAGES, path, "long", template=template)
    assert path.read_text().splitlines() == [
        "ImageId,EncodedPixels,ClassId",
        "b.jpg,9 2,2",
        "a.jpg,3 4,1",
        "a.jpg,5 2,3",
    ]


def test_template_images_must_all_be_predicted(tmp_path: Path):
    names = [f"{i:02d}.jpg" for i in range(7)]
    rows = [f"{n},1 1,0" for n in names]
    template = write(tmp_path / "sample.csv", "ImageId,EncodedPixels,ClassId", *rows)
    with pytest.raises(DataError, match=r"sample.csv: images 00.jpg, .*04.jpg, \.\.\. \(7 in"):
        write_submission({}, [], tmp_path / "sub.csv", template=template)
    with pytest.raises(DataError, match=r"sample.csv: image 06.jpg in the template but not pred"):
        write_submission({}, names[:6], tmp_path / "sub.csv", template=template)
    with pytest.raises(DataError, match=r"sample.csv: image x.jpg predicted but not in the temp"):
        write_submission({}, [*names, "x.jpg"], tmp_path / "sub.csv", template=template)
    assert not (tmp_path / "sub.csv").exists()


def test_template_of_neither_format(tmp_path: Path):
    template = write(tmp_path / "sample.csv", "id,rle", "a.jpg,")
    with pytest.raises(DataError, match=r"sample.csv: header id,rle is neither"):
        write_submission({}, ["a.jpg"], tmp_path / "sub.csv", template=template)


@pytest.mark.parametrize(
    ("masks", "images", "fmt", "message"),
    [
        ({}, IMAGES, "csv", r"unknown submission format 'csv'"),
        ({"a.jpg": {5: "1 1"}}, IMAGES, "wide", r"ClassId 5 is not in 1\.\.4"),
        ({"z.jpg": {1: "1 1"}}, IMAGES, "wide", r"'z.jpg', which is not in `images`"),
    ],
)
def test_caller_mistakes_are_value_errors(tmp_path: Path, masks, images, fmt, message):
    with pytest.raises(ValueError, match=message):
        write_submission(masks, images, tmp_path / "sub.csv", fmt)


def test_duplicate_rows_in_a_frame_are_value_errors(tmp_path: Path):
    frame = pd.DataFrame(
        [("a.jpg", 1, "1 1"), ("a.jpg", 1, "")], columns=["ImageId", "ClassId", "EncodedPixels"]
    )
    with pytest.raises(ValueError, match=r"two masks for ClassId 1"):
        write_submission(frame, IMAGES, tmp_path / "sub.csv")


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "sub.csv"

    def half_then_fail(frame, target, **kwargs):
        Path(target).write_text(WIDE_HEADER + "\na.jpg_1,1 ")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_submission(PRED, IMAGES, path)
    assert list(tmp_path.iterdir()) == []
    path.write_text("previous\n")
    with pytest.raises(OSError, match="disk full"):
        write_submission(PRED, IMAGES, path)
    assert path.read_text() == "previous\n" and list(tmp_path.iterdir()) == [path]


def test_named_lists_a_few_images_and_the_count():
    assert sub.named(["a"]) == "image a"
    assert sub.named(["a", "b"]) == "images a, b"
    assert sub.named(list("abcdefg")) == "images a, b, c, d, e, ... (7 in all)"
