"""Read and write the competition's CSVs in both generations.

- wide (competition era): `ImageId_ClassId,EncodedPixels`, four rows per image
  (`<id>.jpg_1` .. `_4`), an empty EncodedPixels meaning no defect.
- long (later): `ImageId,ClassId,EncodedPixels` (any column order), defect rows only. The
  defect-free images are the files in train_images/ that have no row, and are kept.

Everything is turned into one tidy frame of defects (ImageId, ClassId, EncodedPixels) plus
the full list of image ids. Line numbers in messages are the file's own (header = line 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sever.data import rle
from sever.errors import DataError
from sever.fileio import atomic_path

# The competition's four classes: the default wherever no config says how many there are
# (a run's count is its model.classes; check-data and score take --classes).
DEFAULT_CLASSES = 4
WIDE = ("ImageId_ClassId", "EncodedPixels")
LONG = ("ImageId", "ClassId", "EncodedPixels")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Labels:
    """A labelled dataset.

    Attributes:
        defects: one row per (image, class) with a defect: ImageId, ClassId (1-4),
            EncodedPixels, line (the CSV line it came from).
        images: every image id, sorted, defect-free images included.
        format: 'wide' or 'long', as read.
    """

    defects: pd.DataFrame
    images: list[str]
    format: str

    def rles(self) -> dict[str, dict[int, str]]:
        """ImageId -> {ClassId: rle} for the images that have defects."""
        table: dict[str, dict[int, str]] = {}
        for image_id, class_id, encoded in self.defects[list(LONG)].itertuples(index=False):
            table.setdefault(image_id, {})[int(class_id)] = encoded
        return table

    def class_sets(self) -> pd.Series:
        """ImageId -> the image's defect classes as a string ('' or e.g. '1,3')."""
        grouped = self.defects.groupby("ImageId")["ClassId"]
        sets = grouped.apply(lambda c: ",".join(map(str, sorted(c))))
        # object dtype: with no defects at all the empty result is not a string Series
        return sets.astype(object).reindex(self.images, fill_value="")


def read_table(
    path: Path, problems: list[str] | None = None, classes: int = DEFAULT_CLASSES
) -> tuple[pd.DataFrame, str]:
    """Parse a labels or submission CSV into long form without validating the RLE.

    With `problems`, rows with a bad ClassId (not one of 1..`classes`) are listed there
    and dropped instead of raising (check-data reports them all).

    Returns:
        (frame with ImageId, ClassId, EncodedPixels, line; all pairs incl. empty ones)
        and the format name.

    Raises:
        DataError: missing file, a header of neither format, or a malformed row.
    """
    raw = read_csv(path)
    raw["line"] = range(2, len(raw) + 2)
    columns = tuple(raw.columns[:-1])
    if columns == WIDE:
        return from_wide(raw, path, problems, classes), "wide"
    if set(columns) == set(LONG) and len(columns) == 3:
        return check_class_ids(raw[[*LONG, "line"]], path, problems, classes), "long"
    raise DataError(
        f"{path}: header {','.join(columns)} is neither the wide format "
        f"({','.join(WIDE)}) nor the long format ({','.join(LONG)})"
    )


def read_csv(path: Path) -> pd.DataFrame:
    """Every cell as a string ('' where empty); DataError if missing or not a CSV."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a CSV file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})"
        ) from None


def from_wide(
    raw: pd.DataFrame, path: Path, problems: list[str] | None, classes: int
) -> pd.DataFrame:
    # reindex: no underscore anywhere (or no rows) gives fewer than two columns
    parts = raw["ImageId_ClassId"].str.rsplit("_", n=1, expand=True).reindex(columns=[0, 1])
    if parts[1].isna().any():
        bad = raw.loc[parts[1].isna()].iloc[0]
        raise DataError(
            f"{path}: line {bad['line']}: ImageId_ClassId {bad['ImageId_ClassId']!r} "
            "is not of the form <image>_<class>"
        )
    frame = pd.DataFrame(
        {"ImageId": parts[0], "ClassId": parts[1], "EncodedPixels": raw["EncodedPixels"]}
    )
    frame["line"] = raw["line"].to_numpy()
    return check_class_ids(frame, path, problems, classes)


def check_class_ids(
    frame: pd.DataFrame,
    path: Path,
    problems: list[str] | None = None,
    classes: int = DEFAULT_CLASSES,
) -> pd.DataFrame:
    """Parse ClassId to int; one not in 1..`classes` raises, or with `problems` is listed
    and dropped."""
    ids = pd.to_numeric(frame["ClassId"], errors="coerce")
    bad = ~ids.isin(range(1, classes + 1))
    valid = ", ".join(map(str, range(1, classes + 1)))
    found = [
        f"{path}: line {row.line}: ImageId {row.ImageId}: ClassId {row.ClassId!r} "
        f"is not one of {valid}"
        for row in frame.loc[bad].itertuples()
    ]
    if found and problems is None:
        raise DataError(found[0])
    if found and problems is not None:
        problems.extend(found)
    frame = frame.loc[~bad].assign(ClassId=ids[~bad].astype(int))
    frame["EncodedPixels"] = frame["EncodedPixels"].str.strip()
    return frame.reset_index(drop=True)


def read_image_ids(path: Path) -> list[str]:
    """The image ids a submission template (sample_submission.csv) lists, either format.

    Templates are not labels: the later Kaggle file has one row per image with ClassId 0,
    so ClassIds are not checked here.
    """
    raw = read_csv(path)
    if tuple(raw.columns) == WIDE:
        ids = raw["ImageId_ClassId"].str.rsplit("_", n=1).str[0]
    elif set(raw.columns) == set(LONG):
        ids = raw["ImageId"]
    else:
        raise DataError(
            f"{path}: header {','.join(raw.columns)} is neither the wide format "
            f"({','.join(WIDE)}) nor the long format ({','.join(LONG)})"
        )
    return sorted(set(ids))


def table_problems(frame: pd.DataFrame, path: Path, size: int | None) -> list[str]:
    """Every duplicate (image, class) pair and bad RLE in a parsed table, with its line."""
    problems = []
    duplicated = frame.duplicated(["ImageId", "ClassId"], keep="first")
    for row in frame.loc[duplicated].itertuples():
        problems.append(
            f"{path}: line {row.line}: ImageId {row.ImageId} ClassId {row.ClassId}: "
            "duplicate (image, class) row"
        )
    if size is not None:
        for row in frame.loc[frame["EncodedPixels"] != ""].itertuples():
            try:
                rle.parse(row.EncodedPixels, size)
            except rle.RLEError as exc:
                problems.append(
                    f"{path}: line {row.line}: ImageId {row.ImageId} ClassId {row.ClassId}: "
                    f"bad EncodedPixels: {exc}"
                )
    return problems


def image_files(images_dir: Path) -> list[str]:
    """The image file names in a folder, sorted."""
    if images_dir.is_file():
        raise DataError(f"{images_dir}: is a file; expected a folder of images")
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: image folder not found")
    return sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_labels(
    csv_path: Path,
    images_dir: Path | None,
    shape: tuple[int, int] | None,
    classes: int = DEFAULT_CLASSES,
) -> Labels:
    """Read train.csv (either format) into `Labels`, validating every RLE against `shape`.

    Args:
        csv_path: the labels CSV.
        images_dir: train_images/; in the long format its files without rows are the
            defect-free images. None trusts the CSV alone.
        shape: (H, W) of the images for RLE bounds; None skips RLE validation.
        classes: ClassIds run 1..classes.

    Raises:
        DataError: the first problem found, with its line and ImageId.
    """
    frame, fmt = read_table(csv_path, classes=classes)
    size = shape[0] * shape[1] if shape else None
    problems = table_problems(frame, csv_path, size)
    if problems:
        more = f" (and {len(problems) - 1} more; run sever check-data)" if problems[1:] else ""
        raise DataError(problems[0] + more)
    images = set(frame["ImageId"])
    if images_dir is not None and fmt == "long":
        images |= set(image_files(images_dir))
    defects = frame.loc[frame["EncodedPixels"] != ""].sort_values(["ImageId", "ClassId"])
    return Labels(defects.reset_index(drop=True), sorted(images), fmt)


def write_labels(
    defects: pd.DataFrame,
    images: list[str],
    path: Path,
    fmt: str,
    classes: int = DEFAULT_CLASSES,
) -> None:
    """Write (ImageId, ClassId, EncodedPixels) defect rows as a CSV, atomically.

    The wide format lists every image x class 1..`classes` (empty where no defect); the
    long format only the defect rows.
    """
    defects = defects[list(LONG)].sort_values(["ImageId", "ClassId"])
    if fmt == "wide":
        lookup = {(i, int(c)): e for i, c, e in defects.itertuples(index=False)}
        rows = [
            (f"{image}_{c}", lookup.get((image, c), ""))
            for image in images
            for c in range(1, classes + 1)
        ]
        table = pd.DataFrame(rows, columns=list(WIDE))
    elif fmt == "long":
        table = defects
    else:
        raise ValueError(f"unknown CSV format {fmt!r}; expected 'wide' or 'long'")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
