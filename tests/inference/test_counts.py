"""sever counts: predicted images per class against the training data or an expected
distribution, with the sampling spread worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sever.errors import OptionError
from sever.inference.counts import class_counts, parse_expected
from tests.support import cli_output


def test_the_spread_of_two_samples_by_hand():
    # class 1: 30 of 100 predicted, 20% of 400 in training. Pooled p = (30 + 80) / 500 =
    # 0.22; spread 1.96 * sqrt(0.22 * 0.78 * (1/100 + 1/400)) = 0.0908 < 0.10: flagged.
    # class 2: 5 of 100 against 5%: pooled 0.05, no difference, not flagged.
    one, two = class_counts({1: 30, 2: 5}, 100, {1: 0.2, 2: 0.05}, 400)
    assert one.spread == pytest.approx(0.090776, abs=1e-6) and one.flagged
    assert two.spread == pytest.approx(0.047760, abs=1e-6) and not two.flagged
    assert (one.images, one.of, one.share) == (30, 100, 0.3)


def test_an_expected_share_is_taken_as_exact():
    # 1.96 * sqrt(0.2 * 0.8 / 100) = 0.0784: 27% (+0.07) is within it, 28% (+0.08) is not
    (within,) = class_counts({1: 27}, 100, {1: 0.2}, None)
    (beyond,) = class_counts({1: 28}, 100, {1: 0.2}, None)
    assert within.spread == pytest.approx(0.0784) and not within.flagged and beyond.flagged


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1:0.1,2:0.1,3:0.3", "no share for class 4"),
        ("1=0.1", "expected CLASS:SHARE pairs"),
        ("1:0.1,2:0.1,3:0.3,5:0.1", "5:0.1: classes run 1..4"),
        ("1:0.1,2:0.1,3:1.3,4:0.1", "3:1.3: classes run 1..4, shares from 0 to 1"),
    ],
)
def test_expected_shares_are_checked(spec: str, message: str):
    with pytest.raises(OptionError, match=message):
        parse_expected(spec, 4)


def test_counts_from_the_command_line(tiny_data: Path, tmp_path: Path, capsys):
    # the training labels as a submission: every share equals the reference
    code, out, err = cli_output(
        capsys, "counts", tiny_data / "train.csv", "--train", tiny_data,
        "--images", tiny_data / "train_images", "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)["classes"]
    labels = pd.read_csv(tiny_data / "train.csv")
    for c in "1234":
        images = labels.loc[labels["ClassId"] == int(c), "ImageId"].nunique()
        assert found[c]["images"] == images and found[c]["of"] == 32
        assert found[c]["share"] == found[c]["reference"] and not found[c]["flagged"]
    code, out, err = cli_output(
        capsys, "counts", tiny_data / "train.csv", "--train", tiny_data,
        "--images", tiny_data / "train_images",
    )  # fmt: skip
    assert out.strip().endswith("every class within sampling of the reference")
    # a long submission without its folder, and both references or neither
    code, _, err = cli_output(capsys, "counts", tiny_data / "train.csv", "--train", tiny_data)
    assert code == 2 and "give --images DIR" in err and err.count("\n") == 1
    code, _, err = cli_output(capsys, "counts", tiny_data / "train.csv")
    assert code == 2 and "give --train DATA_DIR or --expected" in err
