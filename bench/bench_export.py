"""Benchmark an exported model on the CPU: PyTorch eager against onnxruntime, torch.export's
.pt2 and (with --aot) an AOTInductor package, same images, same run.

A recipe's model with random weights (no download) is exported with `sever.inference.export`
(normalisation and averaging inside the graph), then each predicts the same full-size images
(256x1600 by default) in batches; images/s is the best of a few passes after a warm-up.

Run from the repo root (needs sever[export]):

    .venv/bin/python bench/bench_export.py [--arch FPN] [--encoder resnet18] [--images 8]
        [--batch 4] [--threads 2] [--aot]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import best_of

from sever.config import config_from_dict
from sever.inference import Ensemble, runtimes
from sever.inference.export import Exported
from sever.inference.models import Member
from sever.inference.predict import predict_batch
from sever.model.build import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="FPN")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 1600])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aot", action="store_true", help="also AOTInductor (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = config_from_dict(
        {"name": "bench", "model": {"arch": args.arch, "encoder": args.encoder}}, "bench"
    )
    torch.manual_seed(0)
    member = Member(Path("bench.pth"), build_model(config.model).eval(), config)
    ensemble = Ensemble([member], workers=0)
    height, width = args.size
    pixels = torch.randint(0, 256, (args.images, 1, height, width)).float()
    normalize = config.data.normalize
    batches = pixels.split(args.batch)

    def eager() -> None:
        for batch in batches:
            predict_batch(ensemble, (batch / 255 - normalize.mean) / normalize.std)

    module = Exported(ensemble).eval()
    runners: dict[str, runtimes.Runner] = {}
    with tempfile.TemporaryDirectory() as folder:
        wanted = ["onnxruntime", "torch.export", *(["aoti"] if args.aot else [])]
        for runtime in wanted:
            path = (
                Path(folder) / f"bench-{runtime}{'.onnx' if runtime == 'onnxruntime' else '.pt2'}"
            )
            started = time.perf_counter()
            runtimes.write(runtime, module, batches[0], path, 32)
            print(f"{runtime}: written in {time.perf_counter() - started:.0f} s", flush=True)
            runners[runtime] = runtimes.load(path, runtime)
        reference = predict_batch(ensemble, (batches[0] / 255 - normalize.mean) / normalize.std)[0]
        torch_s = best_of(eager, warm_up=True)
        timed = {}
        for runtime, run in runners.items():
            difference = np.abs(run(batches[0].numpy())[0] - reference).max()

            def exported(run: runtimes.Runner = run) -> None:
                for batch in batches:
                    run(batch.numpy())

            timed[runtime] = (best_of(exported, warm_up=True), difference)
    print(
        f"{args.arch} {args.encoder}, {args.images} images of {height}x{width}, batch "
        f"{args.batch}, {args.threads} threads (same images, same run)"
    )
    print(f"  {'PyTorch eager':<14} {args.images / torch_s:6.2f} images/s")
    for runtime, (seconds, difference) in timed.items():
        print(
            f"  {runtime:<14} {args.images / seconds:6.2f} images/s ({torch_s / seconds:.2f}x), "
            f"largest probability difference {difference:.1e}"
        )


if __name__ == "__main__":
    main()
