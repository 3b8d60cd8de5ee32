"""The trainer's time per optimiser step against a bare PyTorch loop.

Both sides train the same model (same seed), on the same DataLoader (same batches and
augmentations), with the same loss, optimiser and schedule; the bare loop is the
textbook `forward, loss, backward, step, zero_grad, scheduler.step`. The trainer adds its
bookkeeping: device transfer, per-term loss sums kept on the device, non-finite detection
without a host sync, progress and logging every `log_every` steps. Rounds alternate
(trainer, bare, trainer, bare, ...) so machine noise hits both; the median per-step time of
each side is compared. Target: trainer / bare <= 1.05.

    python bench/bench_trainer.py [--steps 8] [--rounds 5] [--config experiments/demo.yml]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sever.config import load_config
from sever.data.loaders import build_loaders, load_labels
from sever.data.splits import make_split
from sever.data.synth import generate
from sever.engine import steps
from sever.engine.logs import Board
from sever.engine.parts import build_parts
from sever.engine.trainer import Progress
from sever.model.build import split_outputs


def trainer_round(config, parts, loader, epoch: int, run: Path) -> float:
    loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    steps.train_one_epoch(config, parts, loader, epoch, Progress(), Board(run, False), run)
    return time.perf_counter() - start


def bare_round(config, parts, loader, epoch: int) -> float:
    loader.sampler.set_epoch(epoch)
    model, optimizer, scheduler = parts.model, parts.optimizer, parts.scheduler
    model.train()
    start = time.perf_counter()
    for i, (images, masks, _) in enumerate(loader):
        if i >= config.trainer.steps_per_epoch:
            break
        mask_logits, class_logits = split_outputs(model(images.to(parts.device)))
        loss = parts.loss(mask_logits, masks.to(parts.device).float(), class_logits)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    if parts.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/demo.yml")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, n_train=96, n_test=0, seed=0)
        config = load_config(
            args.config,
            [
                f"data.dir={data}",
                "data.workers=0",
                f"trainer.steps_per_epoch={args.steps}",
                "trainer.tensorboard=false",
            ],
        )
        labels = load_labels(config)
        split = make_split(labels.class_sets(), 0.2, None, None, config.seed)
        loader = build_loaders(config, labels, split, torch.cuda.is_available()).train
        parts = build_parts(config, args.steps)
        times: dict[str, list[float]] = {"trainer": [], "bare": []}
        trainer_round(config, parts, loader, 0, Path(tmp))  # warm-up, both sides share it
        for r in range(1, args.rounds + 1):
            times["trainer"].append(trainer_round(config, parts, loader, r, Path(tmp)))
            times["bare"].append(bare_round(config, parts, loader, r))
    per_step = {k: statistics.median(v) / args.steps for k, v in times.items()}
    print(
        f"{config.model.arch} {config.model.encoder}, batch {config.trainer.batch_size}, "
        f"crop {config.data.crop}, device {parts.device}, {args.steps} steps x "
        f"{args.rounds} rounds"
    )
    print(f"{'loop':<10}{'s/step (median)':>18}{'all rounds, s/step':>40}")
    for name, values in times.items():
        listed = " ".join(f"{v / args.steps:.3f}" for v in values)
        print(f"{name:<10}{per_step[name]:>18.3f}{listed:>40}")
    print(f"trainer / bare: {per_step['trainer'] / per_step['bare']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
