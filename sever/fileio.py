"""Small file helpers: atomic writes and image reading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from sever.errors import DataError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside `path`; rename it over `path` only on success.

    An interrupted writer leaves the previous file (or nothing) in place, never a
    half-written file under the real name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as one grey channel.

    Returns:
        (H, W) uint8.

    Raises:
        DataError: the file is missing, unreadable or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    if is_truncated_jpeg(data):
        # libjpeg pads a truncated file with grey and only warns: catch it here.
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    return image


def is_truncated_jpeg(data: np.ndarray) -> bool:
    """True for a JPEG byte stream that lacks its end-of-image marker (FF D9)."""
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    return not ends_with_eoi(data[-64:])


def ends_with_eoi(tail: np.ndarray) -> bool:
    """The last bytes of a JPEG end with FF D9 (zero padding after it allowed)."""
    tail = np.trim_zeros(tail, "b")
    return bool(tail.size >= 2 and tail[-2] == 0xFF and tail[-1] == 0xD9)


def image_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels (about 50x
    faster than read_gray); a JPEG must also end with its end-of-image marker.

    Raises:
        DataError: the file is missing, not an image, or a truncated JPEG.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            jpeg = image.format == "JPEG"
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DataError(f"{path}: not a readable image") from None
    if jpeg:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            tail = np.frombuffer(handle.read(), np.uint8)
        if not ends_with_eoi(tail):
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    return height, width
