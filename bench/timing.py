"""Timing for the benchmarks: the best of a few runs, since these machines are noisy."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 3, warm_up: bool = False) -> float:
    """Seconds of the fastest of `repeats` calls (after one untimed call with `warm_up`)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
