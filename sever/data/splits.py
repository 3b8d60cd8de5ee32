"""Seeded, stratified train/validation splits: a holdout or k folds.

Images are stratified by their set of defect classes ('' for defect-free, '3', '1,3', ...).
Rare sets (a handful of images with classes 1, 2 and 4, say) defeat library splitters, which
either refuse or warn, so the assignment is done here in a few lines: within each stratum
the images are shuffled and dealt round-robin, continuing the deal across strata so that
fold sizes differ by at most one image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sever.errors import ConfigError, DataError
from sever.fileio import atomic_path

COLUMNS = ["ImageId", "classes", "fold", "split"]


def assign_folds(class_sets: pd.Series, folds: int, seed: int) -> pd.Series:
    """Deal images into `folds` folds, stratified by class set.

    Args:
        class_sets: ImageId -> class-set string.

    Returns:
        ImageId -> fold number, deterministic for the same seed and images.
    """
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = int(rng.integers(folds))
    for _, group in sorted(class_sets.groupby(class_sets), key=lambda kv: kv[0]):
        ids = rng.permutation(np.array(sorted(group.index)))
        for image_id in ids:
            fold_of[image_id] = dealt % folds
            dealt += 1
    return pd.Series(fold_of).reindex(class_sets.index)


def holdout(class_sets: pd.Series, val_fraction: float, seed: int) -> pd.Series:
    """Choose round(N * val_fraction) validation images, stratified by class set.

    Each stratum's images get evenly spaced ranks in (0, 1) in a random order; the images
    with the lowest ranks overall are validation, so every stratum gives its share.

    Returns:
        ImageId -> True for validation images.
    """
    rng = np.random.default_rng(seed)
    rank: dict[str, float] = {}
    for _, group in sorted(class_sets.groupby(class_sets), key=lambda kv: kv[0]):
        ids = rng.permutation(np.array(sorted(group.index)))
        offset = rng.random()
        for i, image_id in enumerate(ids):
            rank[image_id] = (i + offset) / len(ids)
    ranks = pd.Series(rank).reindex(class_sets.index)
    n_val = int(round(len(ranks) * val_fraction))
    chosen = ranks.sort_values(kind="stable").index[:n_val]
    return pd.Series(class_sets.index.isin(chosen), index=class_sets.index)


def make_split(
    class_sets: pd.Series, val_fraction: float, folds: int | None, fold: int | None, seed: int
) -> pd.DataFrame:
    """The split table written into each run: ImageId, classes, fold, split (train/val).

    With `folds`, fold `fold` (default 0) is validation; otherwise a holdout of
    `val_fraction` is, and `fold` is -1.
    """
    class_sets = class_sets.sort_index()
    if folds:
        fold_of = assign_folds(class_sets, folds, seed)
        is_val = fold_of == (fold or 0)
    else:
        fold_of = pd.Series(-1, index=class_sets.index)
        is_val = holdout(class_sets, val_fraction, seed)
    table = pd.DataFrame(
        {
            "ImageId": class_sets.index,
            "classes": class_sets.to_numpy(),
            "fold": fold_of.to_numpy(),
            "split": np.where(is_val.to_numpy(), "val", "train"),
        }
    )
    n_val = int((table["split"] == "val").sum())
    if n_val == 0 or n_val == len(table):
        which = "no validation" if n_val == 0 else "no training"
        if folds:
            fix = f"data.folds {folds} leaves {which} image in fold {fold or 0}; lower it"
        else:
            change = "raise" if n_val == 0 else "lower"
            fix = f"data.val_fraction {val_fraction} leaves {which} image; {change} it"
        raise ConfigError(f"{fix} ({len(table)} images in all)")
    return table


def write_split(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_split(path: Path) -> pd.DataFrame:
    """Read a run's split.csv back (ImageId, classes, fold, split)."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        table = pd.read_csv(path, dtype={"ImageId": str, "classes": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{path}: not a readable split file ({str(exc).strip().splitlines()[0]})"
        ) from None
    if list(table.columns) != COLUMNS or not table["split"].isin(["train", "val"]).all():
        raise DataError(f"{path}: expected columns {','.join(COLUMNS)} with split train/val")
    return table
