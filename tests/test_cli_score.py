"""`sever score` end to end, in-process through `sever.cli.main`.

Images are 4x3 (H x W); the truth has a.jpg class 1 "1 4" and b.jpg class 2 "9 4", and
c.jpg (defect-free) is known only from the image folder when the truth is long.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import cli_output


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        cv2.imwrite(str(folder / name), np.zeros((4, 3), np.uint8))
    write(tmp_path / "truth.csv", "ImageId,ClassId,EncodedPixels", "a.jpg,1,1 4", "b.jpg,2,9 4")
    # a1: 2 * 2 / (4 + 4) = 1/2; b2 missed; the other 10 pairs empty on both sides.
    write(tmp_path / "sub.csv", "ImageId,ClassId,EncodedPixels", "a.jpg,1,3 4")
    return tmp_path


def test_json_has_the_scores(capsys, data: Path):
    code, out, err = cli_output(
        capsys, "score", data / "sub.csv", data / "truth.csv", "--images", data / "images", "--json"
    )
    assert (code, err) == (0, "")
    scores = json.loads(out)
    assert scores["dice_mean"] == pytest.approx((1 / 2 + 0 + 10) / 12)
    assert scores["dice_1"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert scores["dice_2"] == pytest.approx((1 + 0 + 1) / 3)
    assert scores["dice_3"] == scores["dice_4"] == 1.0
    assert scores["dice_positive"] == pytest.approx((1 / 2 + 0) / 2)  # a1 and b2
    assert scores["empty_baseline"] == pytest.approx(10 / 12)
    assert (scores["pairs"], scores["images"]) == (12, 3)


def test_a_long_truth_needs_the_image_folder(capsys, data: Path):
    # Without it c.jpg would go unscored: 8 pairs where Kaggle scores 12.
    code, out, err = cli_output(capsys, "score", data / "sub.csv", data / "truth.csv")
    assert (code, out) == (1, "")
    assert err == (
        f"error: {data / 'truth.csv'}: the long format lists only defects, so the defect-free "
        "images are known only from the image folder: give --images DIR (e.g. train_images)\n"
    )


def test_a_wide_truth_lists_every_image(capsys, data: Path):
    write(
        data / "wide.csv",
        "ImageId_ClassId,EncodedPixels",
        *[
            f"{i}_{c},{'1 4' if (i, c) == ('a.jpg', 1) else ''}"
            for i in ("a.jpg", "b.jpg")
            for c in range(1, 5)
        ],
    )
    code, out, err = cli_output(capsys, "score", data / "sub.csv", data / "wide.csv")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "     dice_mean: 0.93750",  # (1/2 + 7) / 8
        "        dice_1: 0.75000",
        "        dice_2: 1.00000",
        "        dice_3: 1.00000",
        "        dice_4: 1.00000",
        " dice_positive: 0.50000",  # a1, the one pair with a defect
        "empty_baseline: 0.87500",  # 7 of 8 pairs empty
        "         pairs: 8",
        "        images: 2",
    ]


def test_a_malformed_submission_is_one_line_and_exit_1(capsys, data: Path):
    write(data / "bad.csv", "ImageId,ClassId,EncodedPixels", "a.jpg,1,3 4", "a.jpg,2,1 2 3")
    code, out, err = cli_output(
        capsys, "score", data / "bad.csv", data / "truth.csv", "--images", data / "images", "--json"
    )
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith(f"error: {data / 'bad.csv'}: line 3: ImageId a.jpg ClassId 2: ")
    assert "odd number of tokens" in err


def test_a_missing_truth_is_one_line_and_exit_1(capsys, data: Path):
    code, out, err = cli_output(capsys, "score", data / "sub.csv", data / "nope.csv")
    assert (code, out, err) == (1, "", f"error: {data / 'nope.csv'}: file not found\n")
