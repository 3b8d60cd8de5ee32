"""Write Kaggle submissions and score them offline with the competition's metric.

Both CSV generations are handled (see `sever.data.tables`): the competition-era wide format
(`ImageId_ClassId,EncodedPixels`, a row per image and class) and the later long format
(`ImageId,ClassId,EncodedPixels` in any column order, defect rows only).

Scoring never decodes a mask: Dice needs only |X|, |Y| and |X∩Y|, and all three follow from
the parsed runs (see `pair_dice`), which is much faster than rendering 256x1600 masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sever.data import rle
from sever.data.tables import (
    DEFAULT_CLASSES,
    LONG,
    WIDE,
    from_wide,
    image_files,
    read_csv,
    read_labels,
    read_table,
    table_problems,
)
from sever.errors import DataError
from sever.fileio import atomic_path, read_gray, writing

FORMATS = ("auto", "wide", "long")
SHAPE = (256, 1600)  # the competition's (H, W)
NAMED = 5  # images named in a message before "... (N in all)"


# ---------------------------------------------------------------- writing


def write_submission(
    masks_by_image: dict[str, dict[int, str]] | pd.DataFrame,
    images: list[str],
    path: Path,
    fmt: str = "auto",
    template: Path | None = None,
    classes: int = DEFAULT_CLASSES,
) -> None:
    """Write a submission CSV atomically (a temporary name, then a rename).

    Formats:
        'wide': `ImageId_ClassId,EncodedPixels`, a row for every image x class 1..`classes` in image
            order, '' where there is no defect. Kaggle scores this format: late submissions
            to the competition in it were scored (22,024 rows for the 5,506 test images).
        'long': `ImageId,ClassId,EncodedPixels`, defect rows only (a non-empty mask), in
            image order then class: the convention of the later train.csv, which
            `score_submission` reads with absent rows meaning empty. Unverified: no scored
            submission in this format (or in the compact template's) is known.
        'auto': wide, following a wide template's rows; a long or compact template (the
            current sample_submission.csv: `ImageId,EncodedPixels,ClassId`, one row per
            image) gives only the image order, since only the wide format is known to score.

    With a template (sample_submission.csv) its images must be exactly the predicted ones
    and its image order is kept: a wide template's rows are reproduced one for one, in its
    order and spelling. With an explicit 'long', a long template also gives the column
    order.

    Args:
        masks_by_image: the predicted RLE per image and class, '' meaning empty; as
            {ImageId: {ClassId: rle}} or a frame with ImageId, ClassId, EncodedPixels.
            Images without defects may be left out.
        images: every predicted image id, in output order (without a template).
        path: the CSV to write.
        fmt: 'auto', 'wide' or 'long'.
        template: sample_submission.csv, either generation.
        classes: ClassIds run 1..classes (the competition's 4).

    Raises:
        DataError: a malformed template, or template images that were not predicted (or
            predicted images the template lacks).
        ValueError: an unknown `fmt`, a ClassId outside 1..classes, a duplicate (image, class), or
            masks for an image not in `images`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown submission format {fmt!r}; expected one of {FORMATS}")
    masks = mask_lookup(masks_by_image, images, classes)
    class_ids = range(1, classes + 1)
    order, wide_keys, columns = list(dict.fromkeys(images)), None, list(LONG)
    if template is not None:
        tmpl_fmt, order, wide_keys, tmpl_columns = read_template(template, classes)
        check_same_images(order, images, template)
        if tmpl_fmt == "long":
            columns = tmpl_columns
    if fmt in ("auto", "wide"):
        if wide_keys is None:
            wide_keys = [(f"{image}_{c}", image, c) for image in order for c in class_ids]
        rows = [(key, masks.get((image, c), "")) for key, image, c in wide_keys]
        table = pd.DataFrame(rows, columns=list(WIDE))
    else:
        defects = [(i, c, masks[i, c]) for i in order for c in class_ids if masks.get((i, c))]
        table = pd.DataFrame(defects, columns=list(LONG))[columns]
    with writing(path, "submission"), atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def mask_lookup(
    masks_by_image: dict[str, dict[int, str]] | pd.DataFrame,
    images: list[str],
    classes: int = DEFAULT_CLASSES,
) -> dict[tuple[str, int], str]:
    """(ImageId, ClassId) -> non-empty RLE, with the caller's input checked."""
    # A frame's ClassId and EncodedPixels cells may hold anything (NaN, floats): checked below.
    triples: Iterable[tuple[str, Any, Any]]
    if isinstance(masks_by_image, pd.DataFrame):
        frame = masks_by_image
        triples = zip(frame["ImageId"], frame["ClassId"], frame["EncodedPixels"], strict=True)
    else:
        triples = (
            (image, c, encoded)
            for image, by_class in masks_by_image.items()
            for c, encoded in by_class.items()
        )
    known, masks, seen = set(images), {}, set()
    for image, class_id, encoded in triples:
        if image not in known:
            raise ValueError(f"masks given for image {image!r}, which is not in `images`")
        if class_id not in range(1, classes + 1):
            raise ValueError(f"image {image!r}: ClassId {class_id!r} is not in 1..{classes}")
        key = (image, int(class_id))
        if key in seen:
            raise ValueError(f"image {image!r}: two masks for ClassId {class_id}")
        seen.add(key)
        encoded = encoded.strip() if isinstance(encoded, str) else ""  # NaN/None: no defect
        if encoded:
            masks[key] = encoded
    return masks


def read_template(
    path: Path, classes: int = DEFAULT_CLASSES
) -> tuple[str, list[str], list[tuple[str, str, int]] | None, list[str]]:
    """A sample_submission.csv: (format, image ids in order, wide rows, column names).

    Wide rows are (ImageId_ClassId as written, ImageId, ClassId); None for a long template,
    whose ClassIds (0 in Kaggle's file) are ignored.
    """
    raw = read_csv(path)
    columns = list(raw.columns)
    if tuple(columns) == WIDE:
        raw["line"] = range(2, len(raw) + 2)
        frame = from_wide(raw, path, None, classes)
        keys = list(zip(raw["ImageId_ClassId"], frame["ImageId"], frame["ClassId"], strict=True))
        return "wide", list(dict.fromkeys(frame["ImageId"])), keys, columns
    if set(columns) == set(LONG) and len(columns) == 3:
        return "long", list(dict.fromkeys(raw["ImageId"])), None, columns
    raise DataError(
        f"{path}: header {','.join(columns)} is neither the wide format "
        f"({','.join(WIDE)}) nor the long format ({','.join(LONG)})"
    )


def check_same_images(listed: list[str], predicted: list[str], template: Path) -> None:
    """DataError unless the template lists exactly the predicted images."""
    missing = sorted(set(listed) - set(predicted))
    if missing:
        raise DataError(f"{template}: {named(missing)} in the template but not predicted")
    extra = sorted(set(predicted) - set(listed))
    if extra:
        raise DataError(f"{template}: {named(extra)} predicted but not in the template")


def named(images: list[str]) -> str:
    """'image a.jpg' or 'images a.jpg, b.jpg, ... (12 in all)'."""
    if len(images) == 1:
        return f"image {images[0]}"
    more = f", ... ({len(images)} in all)" if len(images) > NAMED else ""
    return f"images {', '.join(images[:NAMED])}{more}"


# ---------------------------------------------------------------- scoring


def score_submission(
    submission: Path,
    truth: Path,
    images_dir: Path | None = None,
    shape: tuple[int, int] = SHAPE,
    classes: int = DEFAULT_CLASSES,
) -> dict[str, float]:
    """Kaggle's metric offline: the mean Dice over every (image, class) pair.

    Dice = 2|X∩Y| / (|X| + |Y|) per pair, 1 when prediction and truth are both empty, and
    the score is the plain mean over all pairs (`classes` per image), as on the leaderboard.

    Which images are scored: every image of the truth file. A wide truth lists them all. A
    long truth has defect rows only, so its defect-free images are known only from a
    folder: `images_dir` adds each image file in it as an image with no defects (with a
    wide truth it is used only for the image size). Either file may be either format:

    - wide submission: every scored image needs a row per class (empty EncodedPixels for no
      defect); an image with no rows, or fewer, is an error naming it.
    - long submission: a missing (image, class) row means "predicted empty", which is what
      the format means; images with no rows at all are predicted defect-free.

    Every submission row must be an image of the truth, with a valid RLE and no duplicate
    (image, class). Run lengths are checked against the image size: that of the first image
    in `images_dir`, else `shape`.

    Returns:
        'dice_mean', 'dice_1'..'dice_<classes>' (per class, over all images),
        'dice_positive' (over the pairs whose truth holds a defect; nan if none),
        'empty_baseline' (the score of predicting nothing), 'pairs' (scored (image, class)
        pairs) and 'images'.

    Raises:
        DataError: a missing or malformed file, naming the file, line and ImageId.
    """
    files = image_files(images_dir) if images_dir is not None else []
    if images_dir is not None and files:
        shape = read_gray(images_dir / files[0]).shape[:2]
    size = shape[0] * shape[1]
    labels = read_labels(truth, images_dir, shape, classes)
    if not labels.images:
        raise DataError(f"{truth}: no images to score")
    predicted = read_submission(submission, labels.images, size, truth, labels.format, classes)
    index = pd.Index(labels.images)
    true_runs = runs_of(labels.defects, index, size, classes)
    dice = pair_dice(
        true_runs, runs_of(predicted, index, size, classes), classes * len(index), size
    ).reshape(len(index), classes)
    defect = np.bincount(true_runs[0] // size, minlength=dice.size).reshape(dice.shape) > 0
    scores = {"dice_mean": float(dice.mean())}
    scores |= {f"dice_{c}": float(dice[:, c - 1].mean()) for c in range(1, classes + 1)}
    positive = float(dice[defect].mean()) if defect.any() else float("nan")
    scores |= {"dice_positive": positive, "empty_baseline": float(1 - defect.mean())}
    return scores | {"pairs": dice.size, "images": len(index)}


def check_image_folder(
    truth: Path, images_dir: Path | None, classes: int = DEFAULT_CLASSES
) -> None:
    """A long truth lists only defects, so its images are known only with the image folder:
    without it the defect-free images would go unscored, and Kaggle scores them all.

    Raises:
        DataError: a long truth without `images_dir`, or truth images not in it.
    """
    if not truth.is_file():
        return  # score_submission says so
    frame, fmt = read_table(truth, None, classes)
    if fmt != "long":
        return
    if images_dir is None:
        raise DataError(
            f"{truth}: the long format lists only defects, so the defect-free images are "
            "known only from the image folder: give --images DIR (e.g. train_images)"
        )
    missing = sorted(set(frame["ImageId"]) - set(image_files(images_dir)))
    if missing:
        raise DataError(
            f"--images {images_dir}: {named(missing)} of {truth} not in this folder; give the "
            "folder of the truth's images"
        )


def read_submission(
    path: Path,
    images: list[str],
    size: int,
    truth: Path,
    truth_fmt: str,
    classes: int = DEFAULT_CLASSES,
) -> pd.DataFrame:
    """A submission's rows (ImageId, ClassId, EncodedPixels, line), checked against the truth.

    Raises:
        DataError: the first problem: header, ClassId, RLE, duplicate, unknown or (wide
            format) missing images.
    """
    frame, fmt = read_table(path, None, classes)
    problems = table_problems(frame, path, size)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if problems[1:] else ""
        raise DataError(problems[0] + more)
    unknown = frame.loc[~frame["ImageId"].isin(images)]
    if len(unknown):
        row, count = unknown.iloc[0], unknown["ImageId"].nunique()
        hint = ""
        if truth_fmt == "long":
            hint = "; the long format lists only defects: give the image folder for the rest"
        raise DataError(
            f"{path}: line {row['line']}: ImageId {row['ImageId']}: not an image of {truth} "
            f"({count} such image{'s' if count > 1 else ''}{hint})"
        )
    if fmt == "wide":
        counts = frame.groupby("ImageId").size().reindex(images, fill_value=0)
        absent = list(counts.index[counts == 0])
        if absent:
            raise DataError(
                f"{path}: no rows for {named(absent)} of {truth} (the wide format has {classes} "
                "rows per image, an empty EncodedPixels for no defect)"
            )
        partial = list(counts.index[counts < classes])
        if partial:
            have = set(frame.loc[frame["ImageId"] == partial[0], "ClassId"])
            lacking = ", ".join(str(c) for c in range(1, classes + 1) if c not in have)
            raise DataError(
                f"{path}: ImageId {partial[0]}: no row for ClassId {lacking} (the wide format "
                f"has {classes} rows per image; {len(partial)} image(s) incomplete)"
            )
    return frame


def runs_of(
    frame: pd.DataFrame, images: pd.Index, size: int, classes: int = DEFAULT_CLASSES
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The runs of validated rows, moved into one line of (image, class) slots.

    Pair p = classes * image index + ClassId - 1 owns pixels [p * size, (p + 1) * size), so all
    the runs of a table form one list whose starts say which pair they belong to.

    Returns:
        (starts, ends), each (R,) int64, exclusive ends, unsorted across pairs.
    """
    frame = frame.loc[frame["EncodedPixels"] != ""]
    pairs = (
        images.get_indexer(pd.Index(frame["ImageId"])) * classes + frame["ClassId"].to_numpy() - 1
    )
    starts, ends = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for pair, encoded in zip(pairs, frame["EncodedPixels"], strict=True):
        first, last = rle.parse(encoded, size)
        starts.append(first + pair * size)
        ends.append(last + pair * size)
    return np.concatenate(starts), np.concatenate(ends)


def pair_dice(
    truth: tuple[NDArray[np.int64], NDArray[np.int64]],
    pred: tuple[NDArray[np.int64], NDArray[np.int64]],
    pairs: int,
    size: int,
) -> NDArray[np.float64]:
    """Dice of each (image, class) pair from runs, without decoding a mask.

    Args:
        truth: (starts, ends) of the true runs as `runs_of` returns them; within a pair
            sorted and non-overlapping (touching is fine).
        pred: the same for the prediction.
        pairs: the number of pairs P.
        size: pixels per pair (H * W).

    Returns:
        (P,) float64; 1 where both masks of a pair are empty.
    """
    # |X∩Y| = |X| + |Y| - |X∪Y|, and the union of intervals sorted by start is a running
    # max: interval i adds the part of it beyond the furthest end before it.
    starts = np.concatenate([truth[0], pred[0]])
    ends = np.concatenate([truth[1], pred[1]])
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends) if ends.size else ends
    before = np.concatenate([starts[:1], reach[:-1]])
    added = np.maximum(ends - np.maximum(starts, before), 0)
    # Runs never cross a pair boundary, so the reach from an earlier pair is at most this
    # pair's first pixel and the union splits cleanly by pair.
    owner = starts // size
    union = np.bincount(owner, weights=added, minlength=pairs)
    sizes = np.bincount(owner, weights=ends - starts, minlength=pairs)
    overlap = sizes - union
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes == 0, 1.0, 2 * overlap / sizes)
