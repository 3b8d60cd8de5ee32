"""Benchmark the paired bootstrap at the competition's size: 12,568 images x 4 classes.

Two options' per-image Dice (random, with a planted difference) are compared with
`paired_difference`, timed over the resample counts given, against a baseline in the same
run: the plain loop that draws the image indices of each resample and averages them.

Run from the repo root:

    .venv/bin/python bench/bench_bootstrap.py [--images 12568] [--resamples 1000 2000 10000]
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of

from sever.inference.bootstrap import columns, paired_difference


def loop_baseline(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Each resample's mean difference (overall and per class) by indexing, one by one."""
    delta = columns(a) - columns(b)
    rng = np.random.default_rng(seed)
    return np.stack(
        [delta[rng.integers(len(delta), size=len(delta))].mean(0) for _ in range(resamples)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_568)
    parser.add_argument("--resamples", type=int, nargs="+", default=[1000, 2000, 10000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = (rng.random((args.images, 4)) > 0.1).astype(float)
    b = np.clip(a - (rng.random((args.images, 4)) > 0.98), 0, 1)
    print(f"{args.images} images x 4 classes")
    for resamples in args.resamples:
        ours = best_of(lambda n=resamples: paired_difference(a, b, resamples=n))
        loop = best_of(lambda n=resamples: loop_baseline(a, b, n, 0), repeats=1)
        found = paired_difference(a, b, resamples=resamples)
        print(
            f"  {resamples:6d} resamples: {ours:6.3f} s (loop baseline {loop:6.3f} s, "
            f"{loop / ours:4.1f}x); A - B = {found.diff['mean'].text()}, "
            f"P(A better) {found.p_better['mean']:.3f}"
        )


if __name__ == "__main__":
    main()
