"""Synthetic Severstal-like data: steel texture, four defect classes (up to six with
`classes`, for datasets such as NEU's), Kaggle file layout.

The point is a dataset that exercises the whole pipeline offline and is honest about the
task: low-contrast defects, varied textures, and unlabelled defect-like distractors, so a
model cannot win by thresholding intensity. Everything comes from one numpy ``SeedSequence``,
so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from sever.data import rle
from sever.fileio import atomic_folder, atomic_path

# Share of defective images containing each class (Kaggle train: 13%, 3.7%, 77%, 12%);
# classes 5 and 6 exist only beyond the competition's four.
CLASS_WEIGHTS = np.array([0.13, 0.035, 0.70, 0.11, 0.10, 0.06])
MAX_CLASSES = len(CLASS_WEIGHTS)
P_DEFECT_FREE = 0.5
P_SECOND_CLASS = 0.07  # Kaggle: ~6% of defective images carry two classes.
# Large regions first so small defects drawn later keep their labels where they overlap.
DRAW_ORDER = (3, 4, 5, 1, 6, 2)
JPEG_QUALITY = 90
FORMATS = ("long", "wide")
MIN_SIZE = 32

Rng = np.random.Generator


def generate(
    out_dir: Path,
    n_train: int = 400,
    n_test: int = 100,
    height: int = 256,
    width: int = 1600,
    fmt: Literal["long", "wide"] = "long",
    seed: int = 0,
    classes: int = 4,
) -> dict:
    """Write a synthetic dataset in the Kaggle Severstal layout.

    Creates ``train_images/``, ``test_images/``, ``train.csv`` and ``sample_submission.csv``
    under ``out_dir``. Image ``i`` (its id, classes and pixels) depends only on ``seed``, ``i``
    and the image size, so a larger ``n_test`` leaves the training set unchanged.

    Args:
        out_dir: Target folder; must be missing or empty (never overwritten).
        n_train: Number of labelled training images.
        n_test: Number of unlabelled test images.
        height: Image height in pixels.
        width: Image width in pixels.
        fmt: ``"long"`` (one CSV row per defect) or ``"wide"`` (four rows per image).
        seed: Seed for every random choice.
        classes: Defect classes 1..classes (at most MAX_CLASSES, 6): the competition's
            four, or more for other datasets; the same seed with 4 classes gives the
            same files as ever.

    Returns:
        Summary of the training set: ``train_images``, ``test_images``, ``defect_free``,
        ``images_per_class`` ({class: count}) and ``multi_class``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not an empty directory.
        ValueError: An argument is out of range.
    """
    _check_args(n_train, n_test, height, width, fmt, classes)
    id_seq, *image_seqs = np.random.SeedSequence(seed).spawn(1 + n_train + n_test)
    ids = _image_ids(np.random.default_rng(id_seq), n_train + n_test)
    labels: dict[str, dict[int, str]] = {}
    # Written beside the target and renamed, so an interrupted run leaves no half dataset
    # that a later `make train` would take for a finished one.
    with atomic_folder(out_dir) as folder:
        (folder / "train_images").mkdir()
        (folder / "test_images").mkdir()
        for i, (image_id, seq) in enumerate(zip(ids, image_seqs, strict=True)):
            image, masks = _make_image(np.random.default_rng(seq), height, width, classes)
            split = "train_images" if i < n_train else "test_images"
            _write_jpeg(folder / split / image_id, image)
            if i < n_train:
                labels[image_id] = {c: rle.encode(m) for c, m in masks.items()}
        ids_of_classes = range(1, classes + 1)
        _write_train_csv(folder / "train.csv", labels, fmt, ids_of_classes)
        pixels = height * width
        test_ids = ids[n_train:]
        template = folder / "sample_submission.csv"
        _write_sample_submission(template, test_ids, fmt, pixels, ids_of_classes)
    return _summary(labels, n_test, ids_of_classes)


def _check_args(n_train: int, n_test: int, height: int, width: int, fmt: str, classes: int) -> None:
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 1 and {MAX_CLASSES}, got {classes}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"height and width must be >= {MIN_SIZE}, got {height}x{width}")


def _image_ids(rng: Rng, n: int) -> list[str]:
    """Unique ids shaped like Kaggle's: 9 hex chars + '.jpg'; train and test stay disjoint."""
    seen: set[str] = set()
    ids: list[str] = []
    while len(ids) < n:
        image_id = f"{int(rng.integers(0, 16**9)):09x}.jpg"
        if image_id not in seen:
            seen.add(image_id)
            ids.append(image_id)
    return ids


def _sample_classes(rng: Rng, classes: int) -> list[int]:
    if rng.random() < P_DEFECT_FREE:
        return []
    ids = list(range(1, classes + 1))
    weights = CLASS_WEIGHTS[:classes]
    first = int(rng.choice(ids, p=weights / weights.sum()))
    if rng.random() >= P_SECOND_CLASS or classes == 1:
        return [first]
    rest = [c for c in ids if c != first]
    q = np.array([CLASS_WEIGHTS[c - 1] for c in rest])
    return [first, int(rng.choice(rest, p=q / q.sum()))]


def _make_image(
    rng: Rng, height: int, width: int, n_classes: int = 4
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One image and its labels, its defects of classes 1..n_classes.

    Returns:
        Gray image ``(H, W)`` uint8 and {class: mask ``(H, W)`` uint8} for non-empty masks.
    """
    # Classes first, so an image's label set does not depend on its size.
    classes = _sample_classes(rng, n_classes)
    scale = float(np.sqrt(height * width / (256 * 1600)))
    img = _background(rng, height, width)
    band = _edge_band(rng, height, width)
    x_range = _valid_x_range(band, width)
    _add_distractors(rng, img, scale, x_range)

    masks: dict[int, np.ndarray] = {}
    for c in DRAW_ORDER:
        if c not in classes:
            continue
        mask = DRAWERS[c](rng, img, scale, x_range)
        for other in masks.values():  # one class per pixel: the later drawing wins
            other[mask > 0] = 0
        masks[c] = mask

    grain = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0.012, 0.03)
    img += cv2.GaussianBlur(grain, (0, 0), rng.uniform(0.4, 0.9))
    if band is not None:
        # Beyond the strip edge the camera sees near-black with a little sensor noise.
        dark = rng.uniform(0.0, 0.04) + 0.01 * rng.standard_normal(img.shape, dtype=np.float32)
        img = img * (1 - band) + dark * band
        for mask in masks.values():
            mask[band > 0.5] = 0
    gray = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return gray, {c: m for c, m in sorted(masks.items()) if m.any()}


def _background(rng: Rng, height: int, width: int) -> np.ndarray:
    """Rolled-steel texture ``(H, W)`` float32 around 0.34: illumination plus rolling marks."""
    mean = np.clip(rng.normal(0.344, 0.04), 0.22, 0.48)
    grid = rng.standard_normal((int(rng.integers(2, 5)), int(rng.integers(3, 10))))
    illum = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    # Noise stretched along x gives the long horizontal streaks left by the rolls.
    cols = max(2, width // int(rng.integers(15, 80)))
    noise = rng.standard_normal((height, cols), dtype=np.float32)
    stretched = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    marks = cv2.GaussianBlur(stretched, (0, 0), sigmaX=3, sigmaY=rng.uniform(0.5, 1.5))
    img = mean + rng.uniform(0.015, 0.06) * illum + rng.uniform(0.015, 0.05) * marks
    return img.astype(np.float32)


def _edge_band(rng: Rng, height: int, width: int) -> np.ndarray | None:
    """Soft weight ``(H, W)`` of a black region at one side (the strip edge), or None."""
    if rng.random() >= 0.15:
        return None
    edge = rng.uniform(0.05, 0.35) * width
    slope = rng.normal(0, 0.05)
    rows = np.arange(height, dtype=np.float32)[:, None]
    wiggle = cv2.GaussianBlur(rng.standard_normal((height, 1)).astype(np.float32), (0, 0), 4)
    edge_x = edge + slope * (rows - height / 2) + 2 * wiggle
    xs = np.arange(width, dtype=np.float32)[None, :]
    if rng.random() < 0.5:  # right side: mirror x
        xs = width - 1 - xs
    return np.clip((edge_x - xs) / 2 + 0.5, 0, 1).astype(np.float32)


def _valid_x_range(band: np.ndarray | None, width: int) -> tuple[int, int]:
    """Columns where defects may be centred: those mostly outside the black band."""
    if band is None:
        return 0, width
    keep = np.flatnonzero(band.mean(axis=0) < 0.05)
    return int(keep[0]), int(keep[-1]) + 1


def _centre(
    rng: Rng, img: np.ndarray, x_range: tuple[int, int], margin: float = 0
) -> tuple[float, float]:
    """A random point ``(x, y)`` on the steel, ``margin`` pixels in from the borders if it fits."""
    height = img.shape[0]
    lo, hi = x_range
    m = min(margin, (hi - lo) / 4, height / 4)
    return float(rng.uniform(lo + m, hi - m)), float(rng.uniform(m, height - m))


def _contrast(rng: Rng, lo: float, hi: float) -> float:
    """Log-uniform amplitude, so many defects sit close to the noise level."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blob_polygon(
    rng: Rng, cx: float, cy: float, rx: float, ry: float, jitter: float
) -> np.ndarray:
    """Irregular closed polygon ``(N, 2)`` int32 around ``(cx, cy)``."""
    n = int(rng.integers(10, 20))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = 1 + jitter * rng.uniform(-1, 1, n)
    radius = (radius + np.roll(radius, 1) + np.roll(radius, -1)) / 3  # avoid spiky stars
    pts = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
    return np.round(pts).astype(np.int32)


def _coarse(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow a drawn region into a loose annotator-style region."""
    size = 2 * max(1, margin) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(mask, kernel)


def _draw_pits(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 1: clusters of small dark and bright spots. Returns the label mask."""
    layer = np.zeros_like(img)
    mask = np.zeros(img.shape, np.uint8)
    amp = _contrast(rng, 0.05, 0.25)
    for _ in range(int(rng.integers(1, 4))):
        spread = rng.uniform(4, 20) * scale + 2
        cx, cy = _centre(rng, img, x_range, margin=2 * spread)
        n = int(rng.integers(8, 40))
        pts = np.array([cx, cy]) + rng.normal(0, spread, (n, 2)) * [1.5, 1]
        pts = np.round(pts).astype(np.int32)
        for x, y in pts:
            r = max(1, round(rng.uniform(1, 4) * scale))
            sign = -1 if rng.random() < 0.7 else 1
            cv2.circle(layer, (int(x), int(y)), r, sign * amp * rng.uniform(0.5, 1.2), -1)
        cv2.fillPoly(mask, [cv2.convexHull(pts)], 1)
    img += cv2.GaussianBlur(layer, (0, 0), 0.7)
    return _coarse(mask, round(3 * scale + 1))


def _draw_scratches(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 2: a few short thin near-vertical lines. Returns the label mask."""
    height = img.shape[0]
    layer = np.zeros_like(img)
    mask = np.zeros(img.shape, np.uint8)
    amp = _contrast(rng, 0.05, 0.25) * (-1 if rng.random() < 0.5 else 1)
    cx, cy = _centre(rng, img, x_range, margin=height / 4)
    for _ in range(int(rng.integers(1, 4))):
        length = rng.uniform(0.12, 0.5) * height
        x0 = cx + rng.normal(0, 15 * scale + 2)
        y0 = np.clip(cy + rng.normal(0, 0.1 * height), 0, height - length)
        x1 = x0 + rng.normal(0, 0.12) * length
        p0, p1 = (round(x0), round(y0)), (round(x1), round(y0 + length))
        cv2.line(layer, p0, p1, amp * rng.uniform(0.6, 1.0), int(rng.integers(1, 4)), cv2.LINE_AA)
        cv2.line(mask, p0, p1, 1, max(3, round(6 * scale)))
    img += cv2.GaussianBlur(layer, (0, 0), 0.5)
    return _coarse(mask, round(scale + 1))


def _draw_streaks(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 3: long horizontal streaks or large patches of altered texture.

    Returns:
        The label mask ``(H, W)`` uint8.
    """
    height, width = img.shape
    region = np.zeros(img.shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            length = rng.uniform(0.08, 0.6) * width
            thick = rng.uniform(3, 30) * scale + 2
            cx, cy = _centre(rng, img, x_range, margin=thick)
            poly = _blob_polygon(rng, cx, cy, length / 2, thick / 2, jitter=0.4)
        else:
            r = rng.uniform(25, 110) * scale + 4
            cx, cy = _centre(rng, img, x_range, margin=r / 2)
            poly = _blob_polygon(rng, cx, cy, r * rng.uniform(1, 3), r, jitter=0.5)
        cv2.fillPoly(region, [poly], 1)
    # Altered texture: finer, horizontally stretched roughness plus a brightness shift.
    fine = rng.standard_normal((height, max(2, width // 6)), dtype=np.float32)
    rough = cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR)
    shift = _contrast(rng, 0.02, 0.12) * (-1 if rng.random() < 0.6 else 1)
    texture = shift + _contrast(rng, 0.01, 0.06) * rough
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.5 * scale + 1)
    img += soft * texture
    return _coarse(region, round(3 * scale + 1))


def _draw_blobs(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 4: large dark irregular blobs with a rough interior. Returns the label mask."""
    height, width = img.shape
    region = np.zeros(img.shape, np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        r = rng.uniform(15, 70) * scale + 3
        cx, cy = _centre(rng, img, x_range, margin=r)
        poly = _blob_polygon(rng, cx, cy, r * rng.uniform(1, 2.5), r, jitter=0.6)
        cv2.fillPoly(region, [poly], 1)
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 2 * scale + 1)
    rough = cv2.GaussianBlur(rng.standard_normal(img.shape, dtype=np.float32), (0, 0), 1.5)
    depth = _contrast(rng, 0.05, 0.25)
    img += soft * (-depth + 0.5 * depth * rough)
    return _coarse(region, round(3 * scale + 1))


def _draw_scale(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 5: rolled-in scale, a patch of short dark flakes stretched along the rolling
    direction. Returns the label mask."""
    layer = np.zeros_like(img)
    mask = np.zeros(img.shape, np.uint8)
    amp = _contrast(rng, 0.06, 0.22)
    half_w, half_h = rng.uniform(20, 90) * scale + 6, rng.uniform(8, 30) * scale + 4
    cx, cy = _centre(rng, img, x_range, margin=half_h)
    for _ in range(int(rng.integers(15, 60))):
        x = cx + rng.uniform(-half_w, half_w)
        y = cy + rng.uniform(-half_h, half_h)
        axes = (
            max(1, round(rng.uniform(3, 10) * scale)),
            max(1, round(rng.uniform(0.5, 2) * scale)),
        )
        cv2.ellipse(layer, (round(x), round(y)), axes, rng.normal(0, 8), 0, 360, -amp, -1)
    box = np.array(
        [
            [cx - half_w, cy - half_h],
            [cx + half_w, cy - half_h],
            [cx + half_w, cy + half_h],
            [cx - half_w, cy + half_h],
        ]
    )
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    img += cv2.GaussianBlur(layer, (0, 0), 0.6)
    return _coarse(mask, round(2 * scale + 1))


def _draw_cracks(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> np.ndarray:
    """Class 6: a thin dark crack wandering at a slant, with a branch or two. Returns the
    label mask."""
    layer = np.zeros_like(img)
    mask = np.zeros(img.shape, np.uint8)
    amp = _contrast(rng, 0.08, 0.25)
    cx, cy = _centre(rng, img, x_range, margin=10 * scale + 4)
    for _ in range(int(rng.integers(1, 3))):
        angle = rng.uniform(0.3, 1.2) * (-1 if rng.random() < 0.5 else 1)
        points = [(cx, cy)]
        for _ in range(int(rng.integers(6, 16))):
            angle += rng.normal(0, 0.35)
            step = rng.uniform(6, 18) * scale + 2
            x, y = points[-1]
            points.append((x + step * np.cos(angle), y + step * np.sin(angle)))
        line = np.round(np.array(points)).astype(np.int32)
        cv2.polylines(layer, [line], False, -amp, max(1, round(1.5 * scale)), cv2.LINE_AA)
        cv2.polylines(mask, [line], False, 1, max(3, round(5 * scale)))
    img += cv2.GaussianBlur(layer, (0, 0), 0.5)
    return _coarse(mask, round(scale + 1))


DRAWERS = {
    1: _draw_pits,
    2: _draw_scratches,
    3: _draw_streaks,
    4: _draw_blobs,
    5: _draw_scale,
    6: _draw_cracks,
}


def _add_distractors(rng: Rng, img: np.ndarray, scale: float, x_range: tuple) -> None:
    """Unlabelled look-alikes: faint bright roll marks, smooth oil stains, lone specks."""
    height, width = img.shape
    sharp, smooth = np.zeros_like(img), np.zeros_like(img)
    if rng.random() < 0.4:  # bright roll marks across much of the width
        for _ in range(int(rng.integers(1, 4))):
            y = int(rng.integers(0, height))
            x0, x1 = sorted(rng.uniform(0, width, 2))
            amp = _contrast(rng, 0.01, 0.06)
            cv2.line(sharp, (round(x0), y), (round(x1), y), amp, int(rng.integers(1, 3)))
    if rng.random() < 0.3:  # isolated specks: pit-like but not a cluster
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = _centre(rng, img, x_range)
            r = max(1, round(rng.uniform(1, 4) * scale))
            cv2.circle(sharp, (round(cx), round(cy)), r, -_contrast(rng, 0.03, 0.15), -1)
    if rng.random() < 0.25:  # oil stain: large, smooth, darker, no texture change
        cx, cy = _centre(rng, img, x_range)
        axes = (round(rng.uniform(20, 150) * scale + 4), round(rng.uniform(10, 60) * scale + 3))
        amp = -_contrast(rng, 0.02, 0.1)
        cv2.ellipse(smooth, (round(cx), round(cy)), axes, rng.uniform(0, 180), 0, 360, amp, -1)
        img += cv2.GaussianBlur(smooth, (0, 0), 1 + 8 * scale)
    img += cv2.GaussianBlur(sharp, (0, 0), 0.8)


def _write_jpeg(path: Path, gray: np.ndarray) -> None:
    # The originals are grayscale stored as 3-channel JPEG; mimic that exactly.
    ok = cv2.imwrite(
        str(path), cv2.merge([gray, gray, gray]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise OSError(f"could not write image {path}")


def _write_csv_atomic(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    # Written with the csv module, not sever.data.tables, so tests of the reader against
    # this output are an independent check rather than a writer agreeing with itself.
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_train_csv(
    path: Path, labels: dict[str, dict[int, str]], fmt: str, classes: Iterable[int]
) -> None:
    rows: list[list[object]]
    if fmt == "wide":
        rows = [
            [f"{image_id}_{c}", labels[image_id].get(c, "")]
            for image_id in sorted(labels)
            for c in classes
        ]
        _write_csv_atomic(path, ["ImageId_ClassId", "EncodedPixels"], rows)
    else:
        rows = [[i, c, labels[i][c]] for i in sorted(labels) for c in sorted(labels[i])]
        _write_csv_atomic(path, ["ImageId", "ClassId", "EncodedPixels"], rows)


def _write_sample_submission(
    path: Path, test_ids: list[str], fmt: str, n_pixels: int, classes: Iterable[int]
) -> None:
    rows: list[list[object]]
    if fmt == "wide":
        rows = [[f"{i}_{c}", "1 1"] for i in sorted(test_ids) for c in classes]
        _write_csv_atomic(path, ["ImageId_ClassId", "EncodedPixels"], rows)
    else:
        # The later Kaggle file: one row per image, whole-image RLE, ClassId 0.
        rows = [[i, f"1 {n_pixels}", 0] for i in sorted(test_ids)]
        _write_csv_atomic(path, ["ImageId", "EncodedPixels", "ClassId"], rows)


def _summary(labels: dict[str, dict[int, str]], n_test: int, classes: Iterable[int]) -> dict:
    return {
        "train_images": len(labels),
        "test_images": n_test,
        "defect_free": sum(not v for v in labels.values()),
        "images_per_class": {c: sum(c in v for v in labels.values()) for c in classes},
        "multi_class": sum(len(v) > 1 for v in labels.values()),
    }
