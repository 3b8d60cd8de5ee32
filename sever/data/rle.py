"""Kaggle Severstal run-length encoding: validate, decode and encode defect masks.

An RLE string is space-separated "start length" pairs, 1-indexed and column-major (down
each column, then left to right), sorted and non-overlapping. Runs that touch (a start one
past the previous run's end) are accepted; `encode` never writes them.

Speed: both directions avoid the per-pixel transposition between column-major runs and
row-major (H, W) masks, which is the slow step of the usual implementations. Bits are
transposed instead (`np.packbits` along the row axis, transpose 1/8 of the bytes, unpack),
and only the columns that hold defects are touched. `bench/bench_rle.py` measures it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INT64_MAX = np.iinfo(np.int64).max
# Bytes allowed in an RLE string for the fast parser; anything else takes the checked path.
_DIGITS_AND_SPACE = b"0123456789 \t\n\r\f\v"
# Below this many pixels per pixel-to-fill, fancy indexing beats the bit-transposed block.
_BLOCK_PIXELS_PER_DEFECT = 24


class RLEError(ValueError):
    """A malformed RLE string; the message says what is wrong, without naming the source."""


def parse(rle: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an RLE string and return its runs as 0-based pixel ranges.

    Args:
        rle: Kaggle RLE; '' or whitespace means no runs.
        size: Pixels in the image (H * W); every run must end within it.

    Returns:
        `(starts, ends)`, each `(N,)` int64: 0-based column-major starts and exclusive ends.

    Raises:
        RLEError: odd token count, a token that is not a positive integer, a start below
            1, a run past `size` pixels, or runs that are unsorted or overlap.
    """
    values = _to_ints(rle)
    if values.size % 2:
        raise RLEError(f"odd number of tokens ({values.size})")
    starts, lengths = values[0::2] - 1, values[1::2]
    # One combined test keeps the valid path cheap; the helper then names the first culprit.
    if ((lengths < 1) | (starts < 0) | (lengths > size - starts)).any():
        _raise_bad_pair(rle, starts, lengths, size)
    ends = starts + lengths
    overlaps = np.flatnonzero(starts[1:] < ends[:-1])
    if overlaps.size:
        i = int(overlaps[0])
        raise RLEError(
            f"runs not sorted or overlapping: pair {i + 2} starts at {starts[i + 1] + 1}, "
            f"at or before the end of pair {i + 1} ({ends[i]})"
        )
    return starts, ends


def _to_ints(rle: str) -> np.ndarray:
    """All tokens of `rle` as `(T,)` int64, saturating huge values; RLEError on non-digits."""
    raw = rle.encode("ascii", "replace")
    if not raw.translate(None, _DIGITS_AND_SPACE):
        # Only ASCII digits and whitespace: the C parser tokenises exactly like str.split.
        # It reads whitespace-only text as [0], hence the guard.
        if raw.isspace() or not raw:
            return np.empty(0, np.int64)
        return np.fromstring(rle, dtype=np.int64, sep=" ")
    tokens = rle.split()
    for i, token in enumerate(tokens, 1):
        if not (token.isascii() and token.isdigit()):
            raise RLEError(f"token {i} is not a positive integer: {token!r}")
    # Valid tokens but unusual (non-ASCII) whitespace between them.
    return np.array([min(int(t), _INT64_MAX) for t in tokens], np.int64)


def _raise_bad_pair(rle: str, starts: np.ndarray, lengths: np.ndarray, size: int) -> None:
    """Raise RLEError for the first pair with a bad length, start or end."""
    tokens = rle.split()  # for the message: saturated int64 values would misquote huge tokens
    i = int(np.argmax((lengths < 1) | (starts < 0) | (lengths > size - starts)))
    start, length = tokens[2 * i], tokens[2 * i + 1]
    if lengths[i] < 1:
        raise RLEError(f"token {2 * i + 2} is not a positive integer: {length!r}")
    if starts[i] < 0:
        raise RLEError(f"start {start} is below 1 (pair {i + 1})")
    raise RLEError(f"run {start}+{length} ends past the image's {size} pixels (pair {i + 1})")


def decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode a Kaggle RLE string into a mask.

    Args:
        rle: Kaggle RLE; '' means an empty mask.
        height: Image height H.
        width: Image width W.

    Returns:
        `(H, W)` uint8, C-contiguous, 1 on defect pixels and 0 elsewhere.

    Raises:
        RLEError: `rle` is malformed (see `parse`).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    starts, ends = parse(rle, height * width)
    mask = np.zeros((height, width), np.uint8)
    if starts.size == 0:
        return mask
    c0, c1 = int(starts[0]) // height, (int(ends[-1]) - 1) // height + 1
    pixels = int((ends - starts).sum())
    if pixels * _BLOCK_PIXELS_PER_DEFECT < (c1 - c0) * height:
        _fill_pixels(mask, starts, ends)
    else:
        mask[:, c0:c1] = _column_block(starts - c0 * height, ends - c0 * height, c1 - c0, height)
    return mask


def _fill_pixels(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Set every run pixel of `mask` (H, W) by fancy indexing; for sparse masks."""
    height, width = mask.shape
    lengths = ends - starts
    # Column-major index of every run pixel: each run's start plus 0..length-1.
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    cols, rows = np.divmod(offsets + np.arange(offsets.size), height)
    mask.ravel()[rows * width + cols] = 1


def _column_block(starts: np.ndarray, ends: np.ndarray, cols: int, height: int) -> np.ndarray:
    """Runs (0-based, relative to the block) rendered as a `(height, cols)` uint8 block."""
    n = starts.size
    # Alternate background and run lengths; np.repeat writes the column-major block at memset
    # speed, and adjacent runs just give a zero-length gap.
    counts = np.empty(2 * n + 1, np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = cols * height - ends[-1]
    values = np.zeros(2 * n + 1, np.uint8)
    values[1::2] = 1
    column_major = np.repeat(values, counts).reshape(cols, height)
    # Transpose packed bits (8 rows per byte), not bytes: 8x less strided copying.
    packed = np.packbits(column_major, axis=1)
    return np.unpackbits(packed.T, axis=0, count=height)


def encode(mask: np.ndarray) -> str:
    """Encode a mask as a Kaggle RLE string.

    Args:
        mask: `(H, W)`, any dtype; nonzero pixels are defects.

    Returns:
        Kaggle RLE with sorted, non-touching runs; '' for an empty mask.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "biu":
        mask = mask != 0  # packbits takes only integers and bools
    height = mask.shape[0]
    packed = np.packbits(mask, axis=0)  # (ceil(H/8), W): nonzero -> 1, 8 rows per byte
    cols = np.flatnonzero(packed.any(axis=0))
    if cols.size == 0:
        return ""
    # Only columns with defects, column-major, each followed by one background pixel so
    # that runs stop at column ends; a leading background pixel makes diff see the first run.
    flat = np.zeros(1 + cols.size * (height + 1), np.uint8)
    flat[1:].reshape(cols.size, height + 1)[:, :height] = np.unpackbits(
        np.ascontiguousarray(packed[:, cols].T), axis=1, count=height
    )
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    col, row = np.divmod(edges, height + 1)
    edges = cols[col] * height + row  # back to the image's column-major index
    starts, ends = edges[0::2], edges[1::2]
    # A run through the bottom of column c into the top of column c + 1 is one run.
    split = starts[1:] != ends[:-1]
    starts = starts[np.concatenate(([True], split))]
    ends = ends[np.concatenate((split, [True]))]
    pairs = np.empty(2 * starts.size, np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def masks_to_rles(masks: np.ndarray) -> list[str]:
    """Encode a `(C, H, W)` stack of masks, one RLE string per channel."""
    return [encode(m) for m in masks]


def rles_to_masks(rles: Sequence[str], height: int, width: int) -> np.ndarray:
    """Decode one RLE string per channel into a `(C, H, W)` uint8 stack."""
    masks = np.zeros((len(rles), height, width), np.uint8)
    for channel, rle in enumerate(rles):
        masks[channel] = decode(rle, height, width)
    return masks
