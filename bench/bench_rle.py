"""Benchmark `sever.data.rle` decode and encode against the straightforward reference.

Builds realistic 256x1600 Severstal-like defect masks (filled ellipses, rectangles, thin
scratches and streaks drawn with cv2, some touching the borders, from a few tiny spots to
large patches; fixed seed), then for each mask times decode and encode of ours and of the
reference (the loop-per-run decoder and full-image encoder common in Kaggle kernels) in the
same run with timeit, best of several repeats. Checks that all four agree, prints one row
per mask (kind, runs, reference us, ours us, speed-up) and the overall speed-up (total
reference time over total time of ours), and exits 1 if any result disagrees.

The reference decoder returns a transposed (Fortran-ordered) view, while ours returns a
C-contiguous mask, so decode rows also show the reference followed by
`np.ascontiguousarray` ("ref+C"), the like-for-like cost for anything that needs
contiguous memory (cv2, albumentations, most of torch).

Run from the repo root:

    .venv/bin/python bench/bench_rle.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from sever.data.rle import decode, encode
from sever.data.rle_reference import reference_decode, reference_encode

HEIGHT, WIDTH = 256, 1600


def reference_decode_contiguous(rle: str) -> np.ndarray:
    """The reference decode made C-contiguous like ours, at the bench's image size."""
    return np.ascontiguousarray(reference_decode(rle, HEIGHT, WIDTH))


def _ellipse(mask: np.ndarray, rng: np.random.Generator, axes: tuple[int, int]) -> None:
    """Draw one filled, randomly rotated ellipse with semi-axes up to `axes` (x, y)."""
    ax = (
        int(rng.integers(axes[0] // 2, axes[0] + 1)),
        int(rng.integers(axes[1] // 2, axes[1] + 1)),
    )
    centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
    cv2.ellipse(mask, centre, ax, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)


def _scratch(mask: np.ndarray, rng: np.random.Generator, length: int, thickness: int) -> None:
    """Draw one straight scratch of about `length` pixels at a shallow random angle."""
    x0, y0 = int(rng.integers(0, WIDTH - length)), int(rng.integers(0, HEIGHT))
    y1 = int(np.clip(y0 + rng.integers(-HEIGHT // 2, HEIGHT // 2), 0, HEIGHT - 1))
    cv2.line(mask, (x0, y0), (x0 + length, y1), 1, thickness=thickness)


def build_masks(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Named (256, 1600) uint8 masks from tiny spots to large border-touching patches."""
    rng = np.random.default_rng(seed)

    def new() -> np.ndarray:
        return np.zeros((HEIGHT, WIDTH), np.uint8)

    masks = []
    m = new()
    for _ in range(3):
        _ellipse(m, rng, (6, 6))
    masks.append(("3 small spots", m))
    m = new()
    for _ in range(3):
        _ellipse(m, rng, (40, 25))
    masks.append(("3 medium blobs", m))
    m = new()
    _ellipse(m, rng, (200, 90))
    _ellipse(m, rng, (120, 60))
    masks.append(("2 large blobs", m))
    m = new()
    # Class-3-like patch: a wide region touching the top and bottom borders.
    cv2.rectangle(m, (300, 0), (1100, HEIGHT - 1), 1, thickness=-1)
    for _ in range(6):
        _ellipse(m, rng, (60, 40))
    masks.append(("wide patch, borders", m))
    m = new()
    cv2.rectangle(m, (0, 40), (180, 200), 1, thickness=-1)
    cv2.rectangle(m, (1450, 150), (WIDTH - 1, HEIGHT - 1), 1, thickness=-1)
    cv2.rectangle(m, (700, 0), (760, 90), 1, thickness=-1)
    masks.append(("3 rectangles, borders", m))
    m = new()
    for _ in range(4):
        _scratch(m, rng, int(rng.integers(150, 500)), int(rng.integers(1, 4)))
    masks.append(("4 scratches", m))
    m = new()
    for x in rng.integers(0, WIDTH - 20, 5):
        cv2.rectangle(m, (int(x), 0), (int(x) + int(rng.integers(2, 20)), HEIGHT - 1), 1, -1)
    masks.append(("5 vertical streaks", m))
    m = new()
    for _ in range(12):
        _ellipse(m, rng, (50, 30))
    for _ in range(6):
        _scratch(m, rng, int(rng.integers(50, 400)), int(rng.integers(1, 3)))
    masks.append(("mixed: 12 blobs, 6 scratches", m))
    m = new()
    for _ in range(30):
        _ellipse(m, rng, (120, 80))
    masks.append(("30 big blobs, ~half image", m))
    return masks


def best_us(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-`repeat` time of one call in microseconds, autoranging the loop count."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats; best is kept")
    args = parser.parse_args()

    header = (
        f"{'mask':30} {'runs':>5} {'op':6} {'ref us':>8} {'ours us':>8} {'speed-up':>8}"
        f" {'ref+C us':>9} {'vs ref+C':>8}"
    )
    print(header)
    print("-" * len(header))
    totals = {"decode": np.zeros(3), "encode": np.zeros(3)}
    ok = True
    for name, mask in build_masks():
        rle = reference_encode(mask)
        runs = len(rle.split()) // 2
        agree = (
            encode(mask) == rle
            and np.array_equal(decode(rle, HEIGHT, WIDTH), mask)
            and np.array_equal(reference_decode(rle, HEIGHT, WIDTH), mask)
        )
        if not agree:
            print(f"MISMATCH on {name!r}", file=sys.stderr)
            ok = False
        ref_us = best_us(partial(reference_decode, rle, HEIGHT, WIDTH), args.repeat)
        our_us = best_us(partial(decode, rle, HEIGHT, WIDTH), args.repeat)
        # Ours returns a C-contiguous mask; the reference a transposed view. Making that
        # contiguous too (as cv2, albumentations or torch will) gives the like-for-like cost.
        ref_c_us = best_us(partial(reference_decode_contiguous, rle), args.repeat)
        totals["decode"] += ref_us, our_us, ref_c_us
        print(
            f"{name:30} {runs:5d} {'decode':6} {ref_us:8.1f} {our_us:8.1f} "
            f"{ref_us / our_us:7.1f}x {ref_c_us:9.1f} {ref_c_us / our_us:7.1f}x"
        )
        ref_us = best_us(partial(reference_encode, mask), args.repeat)
        our_us = best_us(partial(encode, mask), args.repeat)
        totals["encode"] += ref_us, our_us, 0.0
        print(
            f"{name:30} {runs:5d} {'encode':6} {ref_us:8.1f} {our_us:8.1f} {ref_us / our_us:7.1f}x"
        )
    print("-" * len(header))
    for op, (ref_total, our_total, ref_c_total) in totals.items():
        line = (
            f"overall {op}: {ref_total / our_total:.1f}x ({ref_total:.0f} us vs {our_total:.0f} us)"
        )
        if ref_c_total:
            line += f"; vs C-contiguous reference {ref_c_total / our_total:.1f}x"
        print(line)
    print("results agree" if ok else "RESULTS DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
