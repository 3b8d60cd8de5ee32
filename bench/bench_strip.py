"""Benchmark strips of any length: time and peak memory of tiled prediction as the strip
grows, against predicting the whole strip in one pass, same model, same pixels.

A recipe's model with random weights (no download) predicts grey strips of 256 x W with
`sever.inference.tiles.predict_tiled` (tiles of 256x1600, a quarter overlapping, batch 4)
and, up to --whole-max, as one image through `predict_batch`. Each measurement runs in its
own process, so its peak resident memory (ru_maxrss) is its own.

Run from the repo root (the 100,000-pixel strip takes a few minutes on two CPU cores):

    .venv/bin/python bench/bench_strip.py [--widths 1600 16000 100000] [--whole-max 16000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sever.config import config_from_dict
from sever.inference import Ensemble
from sever.inference.models import Member
from sever.inference.predict import ensemble_tiles
from sever.inference.tiles import Tiling, predict_tiled
from sever.model.build import build_model


def measure(width: int, how: str, threads: int) -> dict[str, float]:
    """Seconds and peak MiB of predicting one 256 x `width` strip `how` (tiled | whole)."""
    torch.set_num_threads(threads)
    config = config_from_dict({"name": "bench", "model": {"arch": "FPN"}}, "bench")
    torch.manual_seed(0)
    member = Member(Path("bench.pth"), build_model(config.model).eval(), config)
    model = ensemble_tiles(Ensemble([member], workers=0), None)
    strip = np.random.default_rng(0).integers(0, 256, (256, width), dtype=np.uint8)
    start = time.perf_counter()
    if how == "tiled":
        predict_tiled(strip, model, Tiling((256, 1600), None, 4), 4)
    else:
        model(strip[None])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1600, 16000, 100000])
    parser.add_argument("--whole-max", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # width how: in a child
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.threads)))
        return
    print(f"FPN resnet18 (random weights), strips of 256 x W, {args.threads} threads")
    print(f"{'width':>8} {'how':>6} {'seconds':>8} {'px/s':>10} {'peak MiB':>9}")
    for width in args.widths:
        for how in ("tiled", "whole"):
            if how == "whole" and width > args.whole_max:
                continue
            command = [sys.executable, __file__, "--one", str(width), how]
            done = subprocess.run(
                [*command, "--threads", str(args.threads)],
                text=True,
                capture_output=True,
                check=True,
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rate = 256 * width / r["seconds"]
            print(f"{width:8d} {how:>6} {r['seconds']:8.1f} {rate:10.0f} {r['peak_mib']:9.0f}")


if __name__ == "__main__":
    main()
