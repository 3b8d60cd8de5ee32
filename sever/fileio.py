"""Small file helpers: atomic writes, output paths checked before the work, image reading,
and torch-file failures in a few words."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sever.errors import DataError, OptionError


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
    """(H, W) of an image file from its header, without decoding the pixels (a tenth of
    read_gray's time on a 256x1600 JPEG); a JPEG must also end with its end-of-image
    marker, which catches most truncated copies.

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
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise DataError(f"{path}: not a readable image") from None
    if jpeg:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            tail = np.frombuffer(handle.read(), np.uint8)
        if not ends_with_eoi(tail):
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    return height, width


# ---------------------------------------------------------------- output paths


def existing_ancestor(path: Path) -> Path:
    """The nearest folder above `path` that exists (`.` for a relative path)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def check_writable_below(path: Path, option: str) -> None:
    """`path` can be created: the nearest existing folder above it is a writable folder."""
    ancestor = existing_ancestor(path)
    if not ancestor.is_dir():
        raise OptionError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {path}: cannot write in {ancestor} (permission denied)")


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before any work is done.

    Args:
        option: how the user gave it, for the message (`--out`).

    Raises:
        OptionError: `path` is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{option} {path}: is a folder; give a file name inside it")
    check_writable_below(path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise OptionError(f"{option} {path}: the file exists and is read-only")


def check_output_folder(path: Path, option: str) -> None:
    """Refuse an output folder that is a file or cannot be created (see check_output_file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{option} {path}: is a file, not a folder")
    check_writable_below(path, option)
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {path}: cannot write in it (permission denied)")


# ---------------------------------------------------------------- torch files


def torch_load_problem(exc: BaseException, path: Path) -> str:
    """Why torch.load failed on `path`, in a few words instead of torch's paragraphs."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"it holds a pickled {refused.group(1)}, which safe loading (weights_only) refuses; "
            "only tensors and plain values load"
        )
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        return "the file is empty"
    if isinstance(exc, EOFError) or "zip archive" in text or "central directory" in text:
        return "the file is damaged or truncated (copy it again)"
    return "not a PyTorch file"
