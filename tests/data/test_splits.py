"""Seeded stratified splits: holdout sizes and shares, k-fold balance, the split file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sever.data.splits import COLUMNS, assign_folds, holdout, make_split, read_split, write_split
from sever.errors import ConfigError, DataError


def class_sets(**strata: int) -> pd.Series:
    """ImageId -> class set, `count` images per stratum; keyword `c13=5` is stratum '1,3'."""
    rows = {}
    for key, count in strata.items():
        stratum = ",".join(key[1:]) if key != "free" else ""
        rows |= {f"{key}_{i:03d}.jpg": stratum for i in range(count)}
    return pd.Series(rows)


# 100 defect-free, 50 class 3, 10 class 1, 7 with classes 1 and 3, 3 class 2
MIXED = class_sets(free=100, c3=50, c1=10, c13=7, c2=3)


def test_holdout_is_deterministic_per_seed():
    first = make_split(MIXED, 0.2, None, None, seed=1)
    pd.testing.assert_frame_equal(first, make_split(MIXED, 0.2, None, None, seed=1))
    assert not first.equals(make_split(MIXED, 0.2, None, None, seed=2))


def test_folds_are_deterministic_per_seed():
    first = assign_folds(MIXED, 5, seed=1)
    pd.testing.assert_series_equal(first, assign_folds(MIXED, 5, seed=1))
    assert not first.equals(assign_folds(MIXED, 5, seed=2))


def test_split_does_not_depend_on_input_order():
    shuffled = MIXED.sample(frac=1.0, random_state=0)
    for folds in (None, 4):
        pd.testing.assert_frame_equal(
            make_split(MIXED, 0.2, folds, None, seed=3), make_split(shuffled, 0.2, folds, None, 3)
        )


@pytest.mark.parametrize("n, fraction, expected", [(37, 0.3, 11), (170, 0.2, 34), (10, 0.14, 1)])
def test_holdout_size(n: int, fraction: float, expected: int):
    sets = pd.Series({f"{i:03d}.jpg": ["", "3", "1"][i % 3] for i in range(n)})
    is_val = holdout(sets, fraction, seed=0)
    assert is_val.index.equals(sets.index)
    assert int(is_val.sum()) == expected == round(n * fraction)


@pytest.mark.parametrize("seed", range(5))
def test_holdout_takes_each_stratum_share(seed: int):
    sets = class_sets(free=100, c3=50, c1=10)
    is_val = holdout(sets, 0.2, seed)
    per_stratum = is_val.groupby(sets).sum().to_dict()
    assert per_stratum == {"": 20, "3": 10, "1": 2}


def test_holdout_spreads_rare_strata():
    # 7 images of stratum '1,3' and 3 of '2' at 20 %: 1.4 and 0.6 expected, so 1 or 2 and 0 or 1
    is_val = holdout(MIXED, 0.2, seed=0)
    counts = is_val.groupby(MIXED).sum()
    assert counts[""] == 20 and counts["3"] == 10 and counts["1"] == 2
    assert counts["1,3"] in (1, 2) and counts["2"] in (0, 1)
    assert counts.sum() == 34


@pytest.mark.parametrize("folds", [2, 5, 7])
def test_folds_are_balanced_overall_and_per_stratum(folds: int):
    fold_of = assign_folds(MIXED, folds, seed=4)
    # every image in exactly one fold
    assert fold_of.index.equals(MIXED.index) and fold_of.notna().all()
    assert set(fold_of) == set(range(folds))
    sizes = fold_of.value_counts()
    assert sizes.max() - sizes.min() <= 1
    per_stratum = pd.crosstab(MIXED, fold_of).reindex(columns=range(folds), fill_value=0)
    spread = per_stratum.max(axis=1) - per_stratum.min(axis=1)
    assert (spread <= 1).all(), per_stratum


def test_make_split_holdout_table():
    table = make_split(MIXED, 0.2, None, None, seed=0)
    assert list(table.columns) == COLUMNS
    assert table["ImageId"].tolist() == sorted(MIXED.index)
    assert table.set_index("ImageId")["classes"].to_dict() == MIXED.to_dict()
    assert (table["fold"] == -1).all()
    assert (table["split"] == "val").sum() == 34
    assert set(table["split"]) == {"train", "val"}


@pytest.mark.parametrize("fold, expected_val", [(None, 0), (0, 0), (2, 2), (4, 4)])
def test_make_split_marks_the_chosen_fold_as_validation(fold: int | None, expected_val: int):
    table = make_split(MIXED, 0.2, 5, fold, seed=0)
    assert table["fold"].between(0, 4).all()
    np.testing.assert_array_equal(table["split"] == "val", table["fold"] == expected_val)
    folds = assign_folds(MIXED.sort_index(), 5, seed=0)
    assert table.set_index("ImageId")["fold"].to_dict() == folds.to_dict()


@pytest.mark.parametrize(
    "sets, fraction, folds, message",
    [
        # round(0.4) = 0 validation images
        (class_sets(free=2), 0.2, None, "data.val_fraction 0.2 leaves no validation image; raise"),
        # round(2.7) = 3: no training image left
        (class_sets(free=3), 0.9, None, "data.val_fraction 0.9 leaves no training image; lower"),
        # one image cannot fill both sides
        (class_sets(free=1), 0.2, 2, "data.folds 2 leaves no "),
    ],
)
def test_too_few_images(sets: pd.Series, fraction: float, folds: int | None, message: str):
    with pytest.raises(ConfigError) as error:
        make_split(sets, fraction, folds, None, seed=0)
    assert str(error.value).startswith(message)
    assert str(error.value).endswith(f"({len(sets)} images in all)")


def test_split_file_round_trip(tmp_path: Path):
    # ids that pandas would read as numbers, and class sets that need quoting or are empty
    sets = pd.Series({"0012": "", "0100": "1,3", "7": "3", "a.jpg": "2", "b.jpg": "1,2,4"})
    table = make_split(sets, 0.4, None, None, seed=0)
    path = tmp_path / "split.csv"
    write_split(table, path)
    pd.testing.assert_frame_equal(read_split(path), table)
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]


@pytest.mark.parametrize(
    "text",
    [
        "ImageId,classes,fold\na.jpg,,0\n",  # a column missing
        "ImageId,fold,classes,split\na.jpg,0,,val\n",  # columns out of order
        "ImageId,classes,fold,split\na.jpg,,0,val\nb.jpg,3,0,test\n",  # unknown split
        "",  # empty file
    ],
)
def test_read_split_rejects_malformed_file(tmp_path: Path, text: str):
    path = tmp_path / "split.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_split(path)
    assert str(info.value).startswith(f"{path}: ")


def test_read_split_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="split file not found"):
        read_split(tmp_path / "split.csv")
