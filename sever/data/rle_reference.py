"""The straightforward Kaggle-kernel RLE that every Severstal notebook copied.

Kept as the reference that sever.data.rle is tested against (tests/data/test_rle.py) and
timed against (bench/bench_rle.py); sever itself uses sever.data.rle.
"""

from __future__ import annotations

import numpy as np


def reference_decode(rle: str, height: int, width: int) -> np.ndarray:
    """One slice assignment per run; returns a transposed (not C-contiguous) view."""
    s = rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0::2], s[1::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(height * width, np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(width, height).T


def reference_encode(img: np.ndarray) -> str:
    """Transitions over the whole padded column-major image."""
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)
