"""Tests for sever.data.rle: hand-computed cases, round trips, errors, and the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sever.data import rle as rle_module
from sever.data.rle import RLEError, decode, encode, masks_to_rles, parse, rles_to_masks
from sever.data.rle_reference import reference_decode, reference_encode


def grid(rows: list[str]) -> np.ndarray:
    """A uint8 mask from rows drawn as strings of '.' and '#'."""
    return np.array([[c == "#" for c in row] for row in rows], np.uint8)


def pixels(shape: tuple[int, int], *where: tuple[int, int]) -> np.ndarray:
    """A uint8 mask of `shape` with 1 at each (row, col) in `where`."""
    mask = np.zeros(shape, np.uint8)
    for row, col in where:
        mask[row, col] = 1
    return mask


# Column-major, 1-indexed: pixel p (1-based) is row (p - 1) % H, column (p - 1) // H.
HAND_CASES = {
    # 4x3, columns read top to bottom: col 0 = pixels 1-4, col 1 = 5-8, col 2 = 9-12.
    "4x3 one run per column": (grid([".#.", "##.", "#..", "..#"]), "2 2 5 2 12 1"),
    "4x3 run crossing a column": (grid([".#.", ".#.", "#..", "#.#"]), "3 4 12 1"),
    "1x1 empty": (grid(["."]), ""),
    "1x1 full": (grid(["#"]), "1 1"),
    "5x7 full": (np.ones((5, 7), np.uint8), "1 35"),
    "5x7 first pixel": (pixels((5, 7), (0, 0)), "1 1"),
    "5x7 last pixel": (pixels((5, 7), (4, 6)), "35 1"),
    "5x7 run to last pixel": (pixels((5, 7), (3, 6), (4, 6)), "34 2"),
    "5x7 column tops and bottoms": (pixels((5, 7), (4, 0), (0, 1), (4, 5)), "5 2 30 1"),
    "1x4 single row": (grid(["##.#"]), "1 2 4 1"),
    "4x1 single column": (grid([".", "#", "#", "#"]), "2 3"),
    "3x3 whole middle column": (grid([".#.", ".#.", ".#."]), "4 3"),
    "2x3 checkerboard": (grid(["#.#", ".#."]), "1 1 4 2"),  # pixels 4, 5 are consecutive
}


@pytest.mark.parametrize(("mask", "rle"), HAND_CASES.values(), ids=HAND_CASES.keys())
def test_hand_cases(mask: np.ndarray, rle: str) -> None:
    assert encode(mask) == rle
    decoded = decode(rle, *mask.shape)
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)


def test_parse_gives_zero_based_exclusive_runs() -> None:
    starts, ends = parse("2 2 5 2 12 1", 12)
    assert starts.dtype == ends.dtype == np.int64
    assert starts.tolist() == [1, 4, 11]
    assert ends.tolist() == [3, 6, 12]


@pytest.mark.parametrize("rle", ["", " ", "\t\n"])
def test_empty_strings(rle: str) -> None:
    starts, ends = parse(rle, 10)
    assert starts.size == ends.size == 0
    np.testing.assert_array_equal(decode(rle, 256, 1600), np.zeros((256, 1600), np.uint8))


def test_competition_format_pixels() -> None:
    # 256x1600: 0-based pixel p is at row p % 256, column p // 256.
    mask = decode("1 3 300 10 409598 3", 256, 1600)
    assert mask.shape == (256, 1600)
    assert mask.sum() == 16
    assert mask[0:3, 0].tolist() == [1, 1, 1] and mask[3, 0] == 0
    # Pixels 300..309 are 0-based 299..308: column 1, rows 43..52.
    assert mask[42, 1] == 0 and mask[43:53, 1].all() and mask[53, 1] == 0
    assert mask[253:, 1599].all() and mask[252, 1599] == 0


def test_other_whitespace_is_accepted() -> None:
    np.testing.assert_array_equal(decode("1\t2\n 5 1 ", 3, 2), decode("1 2 5 1", 3, 2))
    np.testing.assert_array_equal(decode("1\u00a02", 3, 2), decode("1 2", 3, 2))


@pytest.mark.parametrize(
    ("touching", "merged"),
    [
        ("1 2 3 2", "1 4"),
        ("3 2 5 2", "3 4"),
        ("1 1 2 1 3 1 4 1", "1 4"),
        ("2 2 4 1 7 1", "2 3 7 1"),
    ],
)
def test_touching_runs_decode_like_one_run(touching: str, merged: str) -> None:
    # 4x2: "3 2 5 2" touches across the column boundary (pixel 4 is col 0's bottom).
    mask = decode(touching, 4, 2)
    np.testing.assert_array_equal(mask, decode(merged, 4, 2))
    assert encode(mask) == merged


def test_touching_runs_decode_on_the_packed_path() -> None:
    # 128x100, runs touching at a column boundary (128 | 129) and inside a column (339 | 340).
    rle = "1 128 129 22 300 40 340 300 1000 9000"
    merged = "1 150 300 340 1000 9000"
    mask = decode(rle, 128, 100)
    assert mask.sum() >= rle_module._SPARSE_PIXELS  # the bit-packed decoder, not the sparse one
    np.testing.assert_array_equal(mask, decode(merged, 128, 100))
    assert encode(mask) == merged


@pytest.mark.parametrize(
    "mask",
    [
        grid(["##..", ".#.#", "...#"]).astype(bool),
        grid(["##..", ".#.#", "...#"]) * np.uint8(255),
        grid(["##..", ".#.#", "...#"]).astype(np.int16) * -3,
        grid(["##..", ".#.#", "...#"]).astype(np.float32) * 0.5,
        np.asfortranarray(grid(["##..", ".#.#", "...#"])),
        np.repeat(grid(["##..", ".#.#", "...#"]), 2, axis=1)[:, ::2],
    ],
    ids=["bool", "0/255", "int16 negative", "float", "fortran order", "strided view"],
)
def test_encode_any_nonzero_dtype_and_layout(mask: np.ndarray) -> None:
    # Column-major pixels: col 0 = 1-3, col 1 = 4-6, col 2 = 7-9, col 3 = 10-12.
    assert encode(mask) == "1 1 4 2 11 2"


# Small sizes take the sparse decoder; the larger ones at high density the bit-packed one.
SIZES = [(1, 1), (1, 9), (9, 1), (5, 7), (7, 5), (13, 70), (37, 301), (1, 9001), (9001, 1)]
SIZES += [(64, 64), (256, 1600)]
DENSITIES = [0.0, 0.001, 0.05, 0.5, 0.95, 1.0]


@pytest.mark.parametrize("shape", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("density", DENSITIES)
def test_random_masks_match_reference(shape: tuple[int, int], density: float) -> None:
    rng = np.random.default_rng(1000 * shape[0] + shape[1] + int(density * 100))
    mask = (rng.random(shape) < density).astype(np.uint8)
    rle = encode(mask)
    assert rle == reference_encode(mask)
    decoded = decode(rle, *shape)
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)
    np.testing.assert_array_equal(decoded, reference_decode(rle, *shape))


def random_blobs(rng: np.random.Generator, height: int, width: int, n: int) -> np.ndarray:
    """Rectangles of varied sizes, some at the borders: long runs and runs across columns."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(n):
        top, left = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(1, height + 1), rng.integers(1, width // 4 + 2)
        mask[top : top + h, left : left + w] = 1
    return mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(256, 1600), (37, 101), (8, 8)])
def test_blob_masks_match_reference(seed: int, shape: tuple[int, int]) -> None:
    mask = random_blobs(np.random.default_rng(seed), *shape, n=1 + 3 * seed)
    rle = encode(mask)
    assert rle == reference_encode(mask)
    np.testing.assert_array_equal(decode(rle, *shape), mask)


def test_number_formatting_around_digit_group_boundaries() -> None:
    # One row, so a run over columns lo..hi-1 is "lo+1 hi-lo"; numbers cross 3-digit groups.
    width = 1_300_000
    mask = np.zeros((1, width), np.uint8)
    runs = [(0, 1), (9, 19), (99, 199), (998, 1998), (1999, 3000), (99_999, 199_999)]
    runs += [(999_999, 1_000_999), (1_200_000, width)]
    for lo, hi in runs:
        mask[0, lo:hi] = 1
    rle = encode(mask)
    assert rle == ("1 1 10 10 100 100 999 1000 2000 1001 100000 100000 1000000 1000 1200001 100000")
    assert rle == reference_encode(mask)
    np.testing.assert_array_equal(decode(rle, 1, width), mask)


BAD_RLES = [
    ("1 2 3", r"^odd number of tokens \(3\)$"),
    ("5", r"^odd number of tokens \(1\)$"),
    ("1 2 3 1.5", r"^token 4 is not a positive integer: '1\.5'$"),
    ("1 0", r"^token 2 is not a positive integer: '0'$"),
    ("1 -2", r"^token 2 is not a positive integer: '-2'$"),
    ("-1 2", r"^token 1 is not a positive integer: '-1'$"),
    ("1 2 +3 1", r"^token 3 is not a positive integer: '\+3'$"),
    ("1 2 abc 1", r"^token 3 is not a positive integer: 'abc'$"),
    ("1 2 0x1f 1", r"^token 3 is not a positive integer: '0x1f'$"),
    ("\u0661 2", r"^token 1 is not a positive integer: '\u0661'$"),
    ("0 5", r"^start 0 is below 1 \(pair 1\)$"),
    ("1 2 0 1", r"^start 0 is below 1 \(pair 2\)$"),
    ("1 2 34 3", r"^run 34\+3 ends past the image's 35 pixels \(pair 2\)$"),
    ("36 1", r"^run 36\+1 ends past the image's 35 pixels \(pair 1\)$"),
    ("1 99999999999999999999", r"^run 1\+99999999999999999999 ends past the image's 35 pix"),
    ("99999999999999999999 1", r"^run 99999999999999999999\+1 ends past"),
    (
        "1 5 4 2",
        r"^runs not sorted or overlapping: "
        r"pair 2 starts at 4, at or before the end of pair 1 \(5\)$",
    ),
    ("1 5 5 2", r"^runs not sorted or overlapping: pair 2 starts at 5, .* pair 1 \(5\)$"),
    ("1 2 10 2 3 1", r"^runs not sorted or overlapping: pair 3 starts at 3, .* pair 2 \(11\)$"),
]


@pytest.mark.parametrize(("rle", "message"), BAD_RLES, ids=[r for r, _ in BAD_RLES])
def test_bad_rle_raises_with_message(rle: str, message: str) -> None:
    with pytest.raises(RLEError, match=message):
        parse(rle, 35)
    with pytest.raises(RLEError, match=message):
        decode(rle, 5, 7)


def test_rle_error_is_a_value_error() -> None:
    assert issubclass(RLEError, ValueError)


def test_non_string_rle_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="rle must be a str, got float"):
        decode(float("nan"), 5, 7)  # type: ignore[arg-type]


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        encode(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="positive, got 0x7"):
        decode("", 0, 7)


def test_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rle in [
            "",
            " ",
            "1 2",
            "  1 2  4 1\n",
            " ".join(f"{3 * i + 1} 2" for i in range(2000)),
        ]:
            decode(rle, 100, 100)


def test_stack_helpers_round_trip() -> None:
    rng = np.random.default_rng(7)
    masks = (rng.random((4, 16, 24)) < [[[0.0]], [[0.1]], [[0.6]], [[1.0]]]).astype(np.uint8)
    rles = masks_to_rles(masks)
    assert rles[0] == "" and rles[3] == f"1 {16 * 24}"
    stacked = rles_to_masks(rles, 16, 24)
    assert stacked.shape == (4, 16, 24) and stacked.dtype == np.uint8
    np.testing.assert_array_equal(stacked, masks)


def test_a_strip_of_columns_encodes_as_the_whole_image_with_an_offset():
    # 3x4: column 2 rows 1-2 and column 3 row 0 are one run in column-major order: 8 3
    mask = np.zeros((3, 4), bool)
    mask[1:, 2] = mask[0, 3] = True
    assert encode(mask) == "8 3"
    assert encode(mask[:, 2:]) == "2 3"
    assert encode(mask[:, 2:], offset=2 * 3) == "8 3"
