"""Benchmark `sever.inference.postprocess.postprocess` on one image, single-threaded.

Builds one realistic (4, 256, 1600) float32 probability map (fixed seed): per class a few
smooth Gaussian blobs, large and small, some overlapping other classes, plus pixel noise
that breaks blob edges into small fragments, so every step has work: classes compete for
pixels, small components get dropped, one class ends up under its minimum size and one is
gated out by its presence probability. It then times `postprocess` with every step on
(presence-scaled thresholds, one class per pixel, minimum component size, minimum pixels,
gating) against a naive implementation of the same steps in the same run: Python loops per
class with the argmax over classes recomputed for each class, `scipy.ndimage.label` (or
cv2 without scipy) and one full-image comparison per component, as in many Kaggle kernels.
Checks that both give the same masks, prints the best-of-N time of each and the speed-up,
and exits 1 on a mismatch. The target for `postprocess` is <= 10 ms on one core.

Threads are pinned to one (OMP/MKL/OpenBLAS env vars before numpy loads,
`cv2.setNumThreads(1)`) so the numbers are per core.

Run from the repo root:

    .venv/bin/python bench/bench_postprocess.py [--repeat 20] [--naive-repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from sever.inference.postprocess import PostProcess, postprocess, scaled_min_pixels  # noqa: E402

try:
    from scipy import ndimage
except ImportError:  # scipy is not a dependency of sever; fall back to cv2
    ndimage = None

cv2.setNumThreads(1)
HEIGHT, WIDTH = 256, 1600
CONFIG = PostProcess(
    threshold=(0.5, 0.5, 0.45, 0.5),
    min_pixels=(600, 600, 1000, 2000),
    one_class_per_pixel=True,
    min_component=(150, 150, 300, 500),
    gate=(0.5, 0.5, 0.5, 0.5),
    scale_c=2.0,
)
PRESENCE = np.array([0.9, 0.8, 0.95, 0.3])  # class 4 is gated out


def _blob(rng: np.random.Generator, sigma: tuple[float, float], peak: float) -> np.ndarray:
    """A (256, 1600) float32 Gaussian at a random centre, as an outer product of 1-D ones."""
    cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
    y = np.exp(-0.5 * ((np.arange(HEIGHT, dtype=np.float32) - cy) / sigma[0]) ** 2)
    x = np.exp(-0.5 * ((np.arange(WIDTH, dtype=np.float32) - cx) / sigma[1]) ** 2)
    return np.float32(peak) * np.outer(y, x)


def build_probs(seed: int = 0) -> np.ndarray:
    """(4, 256, 1600) float32 probabilities in [0, 1] with blobs, overlaps and noise."""
    rng = np.random.default_rng(seed)
    probs = np.full((4, HEIGHT, WIDTH), 0.05, np.float32)
    # (number, sigma y, sigma x, peak) per class: class 3 large patches, class 2 rare and
    # small (ends under min_pixels), class 4 medium (gated out by its presence).
    recipe = [
        [(4, 12, 30, 0.9), (6, 4, 6, 0.6)],
        [(1, 5, 8, 0.7), (3, 3, 4, 0.6)],
        [(3, 60, 200, 0.95), (5, 20, 40, 0.7), (8, 4, 8, 0.6)],
        [(2, 30, 80, 0.9), (4, 5, 10, 0.6)],
    ]
    for c, groups in enumerate(recipe):
        for number, sy, sx, peak in groups:
            for _ in range(number):
                probs[c] = np.maximum(probs[c], _blob(rng, (sy, sx), peak))
    probs += rng.normal(0, 0.06, probs.shape).astype(np.float32)
    return np.clip(probs, 0, 1, out=probs)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (0 = background) and the number of components."""
    if ndimage is not None:
        return ndimage.label(mask, structure=np.ones((3, 3), bool))
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    return labels, count - 1


def naive(probs: np.ndarray, config: PostProcess, presence: np.ndarray) -> np.ndarray:
    """The same steps the usual way: loops per class and per component."""
    classes = probs.shape[0]
    t, c_f = config.threshold, config.scale_c or 1.0
    predicted = [probs[c] > t[c] for c in range(classes)]
    masks = np.zeros(probs.shape, bool)
    for c in range(classes):
        mask = predicted[c].copy()
        if config.one_class_per_pixel:
            # the most probable class of all, predicted there or not (postprocess's rule)
            mask &= probs.argmax(axis=0) == c
        if config.min_component[c] > 0:
            labels, count = _components(mask)
            kept = np.zeros_like(mask)
            for i in range(1, count + 1):
                component = labels == i
                if component.sum() >= config.min_component[c]:
                    kept |= component
            mask = kept
        least = config.min_pixels[c] * c_f - config.min_pixels[c] * (c_f - 1) * presence[c]
        if mask.sum() < least or presence[c] < config.gate[c]:
            mask[:] = False
        masks[c] = mask
    return masks


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` single calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="postprocess calls; best kept")
    parser.add_argument("--naive-repeat", type=int, default=3, help="naive calls; best kept")
    args = parser.parse_args()

    probs = build_probs()
    ours = postprocess(probs, CONFIG, PRESENCE)
    reference = naive(probs, CONFIG, PRESENCE)
    thresholds = np.asarray(CONFIG.threshold)
    least = scaled_min_pixels(CONFIG.min_pixels, PRESENCE, CONFIG.scale_c or 1.0)
    raw = (probs > thresholds[:, None, None]).sum((1, 2))
    components = [_components(probs[c] > thresholds[c])[1] for c in range(probs.shape[0])]
    print(f"map {probs.shape} {probs.dtype}; config {CONFIG.to_dict()}")
    print(f"presence {PRESENCE.tolist()}; scaled min_pixels {least.tolist()}")
    print(f"pixels above threshold per class: {raw.tolist()}, components: {components}")
    print(f"pixels kept per class:            {ours.sum((1, 2)).tolist()}")
    agree = np.array_equal(ours, reference)

    ours_ms = best_ms(lambda: postprocess(probs, CONFIG, PRESENCE), args.repeat)
    naive_ms = best_ms(lambda: naive(probs, CONFIG, PRESENCE), args.naive_repeat)
    label = "scipy.ndimage.label" if ndimage is not None else "cv2.connectedComponents"
    print(f"postprocess: {ours_ms:8.2f} ms (best of {args.repeat}; target <= 10 ms)")
    print(f"naive ({label}, per-component loop): {naive_ms:8.2f} ms (best of {args.naive_repeat})")
    print(f"speed-up: {naive_ms / ours_ms:.1f}x")
    print("results agree" if agree else "RESULTS DISAGREE")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
