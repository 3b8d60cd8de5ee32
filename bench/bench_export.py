"""Benchmark an exported model on the CPU: PyTorch eager against onnxruntime, same images,
same run.

A recipe's model with random weights (no download) is exported with `sever.inference.export`
(normalisation and averaging inside the graph), then both predict the same full-size images
(256x1600 by default) in batches; images/s is the best of a few passes after a warm-up.

Run from the repo root (needs sever[export]):

    .venv/bin/python bench/bench_export.py [--arch FPN] [--encoder resnet18] [--images 8]
        [--batch 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from timing import best_of

from sever.config import config_from_dict
from sever.inference import Ensemble
from sever.inference.export import Exported, write_onnx
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

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.onnx"
        write_onnx(Exported(ensemble).eval(), batches[0], path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

        def exported() -> None:
            for batch in batches:
                session.run(None, {"pixels": batch.numpy()})

        difference = np.abs(
            session.run(None, {"pixels": batches[0].numpy()})[0]
            - predict_batch(ensemble, (batches[0] / 255 - normalize.mean) / normalize.std)[0]
        ).max()
        torch_s, onnx_s = best_of(eager, warm_up=True), best_of(exported, warm_up=True)
    print(
        f"{args.arch} {args.encoder}, {args.images} images of {height}x{width}, batch "
        f"{args.batch}, {args.threads} threads"
    )
    print(f"  PyTorch eager: {args.images / torch_s:6.2f} images/s")
    print(f"  onnxruntime:   {args.images / onnx_s:6.2f} images/s ({torch_s / onnx_s:.2f}x)")
    print(f"  largest probability difference {difference:.1e}")


if __name__ == "__main__":
    main()
