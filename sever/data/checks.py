"""`sever check-data`: find every problem in a dataset before anyone spends GPU hours.

The fast checks (CSV structure, ClassIds, duplicates, RLE bounds, image files present) run
before every training; the full check also decodes every image.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sever.data import rle
from sever.data.tables import (
    DEFAULT_CLASSES,
    image_files,
    read_image_ids,
    read_table,
    table_problems,
)
from sever.errors import DataError
from sever.fileio import image_shape, read_gray

BAD_CLASS = re.compile(r"ImageId (\S+): ClassId .* is not one of")


@dataclass
class Report:
    """What check-data found: summary numbers and one line per problem."""

    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    data_dir: Path, full: bool = True, workers: int = 4, classes: int = DEFAULT_CLASSES
) -> Report:
    """Check DATA_DIR's train.csv, train_images/, and test_images/ with sample_submission.csv.

    Args:
        full: also decode every image (unreadable, truncated, wrong size); otherwise only
            the first image is read, for the size.
        classes: ClassIds run 1..classes.
    """
    report = Report()
    train_dir = data_dir / "train_images"
    try:
        files = image_files(train_dir)
        frame, fmt = read_table(data_dir / "train.csv", report.problems, classes)
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    if not files:
        report.problems.append(f"{train_dir}: no images (.jpg, .jpeg, .png) in this folder")
    shape = image_shapes(train_dir, files if full else files[:1], report, workers)
    size = shape[0] * shape[1] if shape else None
    report.problems += table_problems(frame, data_dir / "train.csv", size)
    report.problems += file_problems(frame, files, fmt, data_dir / "train.csv", train_dir)
    if fmt == "wide":
        # an image whose bad ClassId row was reported is not reported again as incomplete
        reported = {m.group(1) for p in report.problems if (m := BAD_CLASS.search(p))}
        report.problems += missing_wide_rows(frame, data_dir / "train.csv", reported, classes)
    # before check_test, which adds "test images" to the summary
    report.summary = summarise(frame, files, fmt, shape, size, classes)
    check_test(data_dir, full, shape, report, workers)
    places = [data_dir / name for name in PLACES]
    report.problems.sort(key=lambda problem: file_order(problem, places))
    return report


# The files and folders whose problems are listed in this order, each by line or image name.
PLACES = ("train.csv", "train_images", "sample_submission.csv", "test_images")


def file_order(problem: str, places: list[Path]) -> tuple[int, int, int, str]:
    """Where a problem is, to list problems in the order of the files: a problem of a whole
    file or folder first (often the cause of the others, e.g. no images at all), then by
    which of `places` it names, its CSV line and its image name. Every problem starts
    with the file or folder it is about: `CSV: line N: ...`, `CSV: ImageId NAME: ...`,
    `FOLDER/NAME: ...`. Ties keep the order found."""
    for rank, place in enumerate(places):
        rest = problem.removeprefix(str(place))
        if rest == problem:
            continue
        if line := re.match(r": line (\d+):", rest):
            return 1, rank, int(line.group(1)), ""
        if name := re.match(rf"(?:: ImageId |{re.escape(os.sep)})([^:]+):", rest):
            return 1, rank, 0, name.group(1)
        if rest.startswith(":"):
            return 0, rank, 0, ""
    return 1, len(places), 0, ""


def image_shapes(
    folder: Path, names: list[str], report: Report, workers: int
) -> tuple[int, int] | None:
    """Read images in parallel; report unreadable ones and sizes other than the commonest."""

    def shape_of(name: str) -> tuple[int, int] | str:
        try:
            return read_gray(folder / name).shape
        except DataError as exc:
            return str(exc)

    with ThreadPoolExecutor(workers) as pool:  # cv2 decodes without the GIL
        shapes = dict(zip(names, pool.map(shape_of, names), strict=True))
    report.problems += [s for s in shapes.values() if isinstance(s, str)]
    sizes = Counter(s for s in shapes.values() if not isinstance(s, str))
    if not sizes:
        return None
    common = sizes.most_common(1)[0][0]
    report.problems += [
        f"{folder / name}: size {s[0]}x{s[1]}, expected {common[0]}x{common[1]} like the others"
        for name, s in shapes.items()
        if not isinstance(s, str) and s != common
    ]
    return common


def header_problems(
    folder: Path, names: list[str], size: tuple[int, int], workers: int = 4
) -> list[str]:
    """Each image present, an image, and of `size` (H, W): read from the file headers, not
    decoded, so the competition's 12,568 images take seconds (bench/bench_preflight.py)."""

    def problem(name: str) -> str | None:
        try:
            shape = image_shape(folder / name)
        except DataError as exc:
            return str(exc)
        if shape != tuple(size):
            return (
                f"{folder / name}: size {shape[0]}x{shape[1]}, but data.image_size is "
                f"{size[0]}x{size[1]}"
            )
        return None

    with ThreadPoolExecutor(workers) as pool:  # overlaps the reads on a cold disk
        return [p for p in pool.map(problem, names) if p is not None]


def check_images(folder: Path, names: list[str], size: tuple[int, int]) -> None:
    """Refuse, in one line, images that training would fail on or misread.

    Raises:
        DataError: the first problem, with how many more there are.
    """
    problems = header_problems(folder, names, size)
    if problems:
        more = f" (and {len(problems) - 1} more)" if problems[1:] else ""
        raise DataError(
            f"{problems[0]}{more}; fix or remove the image (sever check-data lists all), or "
            "set data.check: false to train anyway"
        )


def file_problems(
    frame: pd.DataFrame, files: list[str], fmt: str, csv: Path, folder: Path
) -> list[str]:
    """Rows whose image file is missing; in the wide format, files that have no rows."""
    listed, present = set(frame["ImageId"]), set(files)
    problems = [
        f"{csv}: line {row.line}: ImageId {row.ImageId}: no such file in {folder}"
        for row in frame.drop_duplicates("ImageId").itertuples()
        if row.ImageId not in present
    ]
    if fmt == "wide":
        problems += [
            f"{folder / name}: extra image with no rows in {csv}"
            for name in files
            if name not in listed
        ]
    return problems


def missing_wide_rows(
    frame: pd.DataFrame, csv: Path, skip: set[str], classes: int = DEFAULT_CLASSES
) -> list[str]:
    """Images of a wide table without a row for each class, one problem each."""
    problems = []
    rows_per_image = "four" if classes == 4 else str(classes)
    for image, rows in frame.groupby("ImageId", sort=False):
        if image in skip:
            continue
        lacking = [str(c) for c in range(1, classes + 1) if c not in set(rows["ClassId"])]
        if lacking:
            problems.append(
                f"{csv}: line {rows['line'].min()}: ImageId {image}: no row for ClassId "
                f"{', '.join(lacking)} (the wide format has {rows_per_image} rows per image)"
            )
    return problems


def check_test(data_dir: Path, full: bool, shape, report: Report, workers: int) -> None:
    """test_images/ against sample_submission.csv, when either is present."""
    folder, csv = data_dir / "test_images", data_dir / "sample_submission.csv"
    if not folder.exists() and not csv.exists():
        return
    try:
        files = image_files(folder)
        listed = set(read_image_ids(csv))
    except DataError as exc:
        report.problems.append(str(exc))
        return
    report.problems += [
        f"{csv}: ImageId {i}: no such file in {folder}" for i in sorted(listed - set(files))
    ]
    report.problems += [f"{folder / i}: not listed in {csv}" for i in sorted(set(files) - listed)]
    if full:
        test_shape = image_shapes(folder, files, report, workers)
        if shape and test_shape and test_shape != shape:
            report.problems.append(f"{folder}: images are {test_shape}, training images {shape}")
    report.summary["test images"] = len(files)


def summarise(
    frame: pd.DataFrame, files: list[str], fmt: str, shape, size, classes: int = DEFAULT_CLASSES
) -> dict:
    defects = frame.loc[frame["EncodedPixels"] != ""]
    images = set(frame["ImageId"]) | (set(files) if fmt == "long" else set())
    per_image = defects.groupby("ImageId")["ClassId"].nunique()
    summary = {
        "format": fmt,
        "image size": f"{shape[0]}x{shape[1]}" if shape else "unknown",
        "images": len(images),
        "defect-free images": len(images) - per_image.size,
        "multi-class images": int((per_image > 1).sum()),
    }
    for class_id in range(1, classes + 1):
        rows = defects.loc[defects["ClassId"] == class_id, "EncodedPixels"]
        summary[f"class {class_id} images"] = int(rows.size)
        summary[f"class {class_id} pixels"] = int(sum(pixel_count(r, size) for r in rows))
    return summary


def pixel_count(encoded: str, size: int | None) -> int:
    try:
        starts, ends = rle.parse(encoded, size or np.iinfo(np.int64).max)
    except rle.RLEError:
        return 0
    return int((ends - starts).sum())
