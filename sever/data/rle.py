"""Kaggle Severstal run-length encoding: validate, decode and encode defect masks.

An RLE string is space-separated "start length" pairs, 1-indexed and column-major (down
each column, then left to right), sorted and non-overlapping. Runs that touch (a start one
past the previous run's end) are accepted; `encode` never writes them.

Speed: the slow step of the usual implementations is moving every pixel between column-major
runs and row-major (H, W) masks. Here both directions work on row-packed bits (8 columns a
byte, see `np.packbits`), where a run is just two toggled bits and a whole column scan is a
few thousand 64-bit XORs; numbers are parsed and printed in C or in bulk, never one by one
in Python. `bench/bench_rle.py` measures it against the usual implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INT64_MAX = np.iinfo(np.int64).max
# Bytes the fast parser accepts; any other byte sends the string to the checked path.
_DIGITS_AND_SPACE = b"0123456789 \t\n\r\f\v"
# Below this many defect pixels, setting them one by one beats building the packed image.
_SPARSE_PIXELS = 7000
# unpackbits' bit order: column 8k + j of a row is bit 7 - j of byte k.
_BIT = np.array([128, 64, 32, 16, 8, 4, 2, 1], np.uint8)


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
    # `lengths > size - starts` cannot overflow, unlike `starts + lengths > size`.
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
    """All tokens of `rle` as `(T,)` int64, huge ones saturated; RLEError on non-digits."""
    if not isinstance(rle, str):  # e.g. NaN from pandas: callers map missing values to ''
        raise TypeError(f"rle must be a str, got {type(rle).__name__}")
    raw = rle.encode("ascii", "replace")
    if not raw.translate(None, _DIGITS_AND_SPACE):
        # Only ASCII digits and whitespace, so the C parser splits exactly like str.split;
        # it would read whitespace alone as [0], hence the guard.
        if raw.isspace() or not raw:
            return np.empty(0, np.int64)
        return np.fromstring(rle, dtype=np.int64, sep=" ")
    tokens = rle.split()
    for i, token in enumerate(tokens, 1):
        if not (token.isascii() and token.isdigit()):
            raise RLEError(f"token {i} is not a positive integer: {token!r}")
    # Valid tokens between unusual (non-ASCII) whitespace.
    return np.array([min(int(t), _INT64_MAX) for t in tokens], np.int64)


def _raise_bad_pair(rle: str, starts: np.ndarray, lengths: np.ndarray, size: int) -> None:
    """Raise RLEError for the first pair with a bad length, start or end."""
    i = int(np.argmax((lengths < 1) | (starts < 0) | (lengths > size - starts)))
    # Quote the tokens themselves: the parsed values of huge ones are saturated.
    start, length = rle.split()[2 * i : 2 * i + 2]
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
    if (ends - starts).sum() >= _SPARSE_PIXELS:
        return _decode_packed(starts, ends, height, width)
    mask = np.zeros((height, width), np.uint8)
    index = _ranges(starts, ends - starts)  # column-major index of every defect pixel
    cols = index // height  # floor division by a scalar is much faster than np.divmod
    mask.ravel()[(index - cols * height) * width + cols] = 1
    return mask


def _ranges(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated `arange(first, first + count)` for each pair, `(counts.sum(),)`."""
    return np.repeat(firsts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())


def _decode_packed(starts: np.ndarray, ends: np.ndarray, height: int, width: int) -> np.ndarray:
    """Render validated runs as an `(H, W)` uint8 mask through a row-packed bit image."""
    # Each column's pixels are the running XOR, down the column, of toggles at every run's
    # first pixel and at the pixel after its last (row H, one past the image, for a run
    # ending at the bottom), plus a toggle on row 0 where a run carries over from the
    # column before. Rows are padded to whole 64-bit words for the scan.
    first_col = starts // height
    last_col = (ends - 1) // height
    col_parts = [first_col, last_col]
    row_parts = [starts - first_col * height, ends - last_col * height]
    spans = np.flatnonzero(last_col > first_col)
    if spans.size:  # runs carried over into columns first_col + 1 ... last_col
        carried = _ranges(first_col[spans] + 1, last_col[spans] - first_col[spans])
        col_parts.append(carried)
        row_parts.append(np.zeros_like(carried))
    cols, rows = np.concatenate(col_parts), np.concatenate(row_parts)
    row_bytes = -(-width // 64) * 8
    packed = np.zeros((height + 1, row_bytes), np.uint8)
    # XOR, not assignment: up to 8 toggles share a byte, and touching runs toggle one pixel
    # twice (which correctly cancels).
    np.bitwise_xor.at(packed.ravel(), rows * row_bytes + (cols >> 3), _BIT[cols & 7])
    words = packed.view(np.uint64)
    np.bitwise_xor.accumulate(words, axis=0, out=words)
    return np.unpackbits(packed[:height], axis=1, count=width)


def encode(mask: np.ndarray, offset: int = 0) -> str:
    """Encode a mask as a Kaggle RLE string.

    Args:
        mask: `(H, W)`, any dtype; nonzero pixels are defects.
        offset: added to every start: a mask of columns x.. of a taller image's full
            height encodes with `offset = x * H` as the whole image would.

    Returns:
        Kaggle RLE with sorted, non-touching runs; '' for an empty mask.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "biu":
        mask = mask != 0  # packbits takes only integers and bools
    height = mask.shape[0]
    # Row-packed bits (nonzero -> 1) between two empty rows: XOR of vertical neighbours then
    # marks each run's first pixel and the pixel after its last, in every column.
    packed = np.packbits(mask, axis=1)
    padded = np.zeros((height + 2, packed.shape[1]), np.uint8)
    padded[1:-1] = packed
    above, below = padded[:-1].ravel(), padded[1:].ravel()
    hit = np.flatnonzero(above != below)
    if hit.size == 0:
        return ""
    bits = np.flatnonzero(
        np.unpackbits((above[hit] ^ below[hit]).astype(np.uint8, copy=False)).view(bool)
    )
    hit = hit[bits >> 3]
    row = hit // packed.shape[1]  # floor division by a scalar is much faster than np.divmod
    byte = hit - row * packed.shape[1]
    # Column-major index of each edge. An end at the bottom of column c equals a start at
    # the top of column c + 1; the two sort either way round and are merged below.
    edges = np.sort((byte * 8 + (bits & 7)) * height + row)
    starts, ends = edges[0::2], edges[1::2]
    split = starts[1:] != ends[:-1]
    starts = starts[np.concatenate(([True], split))]
    ends = ends[np.concatenate((split, [True]))]
    pairs = np.empty(2 * starts.size, np.int64)
    pairs[0::2] = starts + 1 + offset
    pairs[1::2] = ends - starts
    return _join_ints(pairs)


def _digit_groups() -> np.ndarray:
    """Lookup table for `_join_ints`: 4-byte words, `(3000,)` uint32, by kind * 1000 + n.

    Kind 0: n's digits NUL-padded; kind 1: n zero-padded to 3 digits; kind 2: a space, then
    n's digits NUL-padded. Byte 0 of kinds 0 and 1 is NUL.
    """
    text = np.zeros((3, 1000, 4), np.uint8)
    for n in range(1000):
        digits = np.frombuffer(str(n).encode(), np.uint8) if n else np.empty(0, np.uint8)
        text[0, n, 4 - digits.size :] = digits
        text[1, n, 1:] = np.frombuffer(f"{n:03d}".encode(), np.uint8)
    text[2] = text[0]
    text[2, :, 0] = ord(" ")
    return text.view(np.uint32).reshape(3000)


_DIGIT_GROUPS = _digit_groups()


def _join_ints(values: np.ndarray) -> str:
    """`' '.join(map(str, values))` for `(N,)` positive int64, without a loop over values."""
    # Each number becomes one 4-byte word per 3-digit group, the first word starting with the
    # separator, leading zeros as NULs; dropping the NULs leaves " 12 345 ...".
    groups = -(-len(str(int(values.max()))) // 3)
    words = np.empty((values.size, groups), np.uint32)
    rest = values
    for g in range(groups - 1, 0, -1):
        high = rest // 1000
        # Index 1000 + rest % 1000 (zero-padded) while digits remain above, else rest.
        words[:, g] = _DIGIT_GROUPS[rest - 1000 * np.maximum(high - 1, 0)]
        rest = high
    words[:, 0] = _DIGIT_GROUPS[rest + 2000]
    return words.tobytes().translate(None, b"\0")[1:].decode("ascii")


def masks_to_rles(masks: np.ndarray) -> list[str]:
    """Encode a `(C, H, W)` stack of masks, one RLE string per channel."""
    return [encode(m) for m in masks]


def rles_to_masks(rles: Sequence[str], height: int, width: int) -> np.ndarray:
    """Decode one RLE string per channel into a `(C, H, W)` uint8 stack."""
    masks = np.zeros((len(rles), height, width), np.uint8)
    for channel, rle in enumerate(rles):
        masks[channel] = decode(rle, height, width)
    return masks
