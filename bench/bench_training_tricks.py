"""Measure the training moves of the top teams on the synthetic data, each against the
same baseline: same data, seed and epochs, with and without.

The baseline is experiments/demo.yml (or --config), trained for --epochs epochs with
validation at its end. Each variant changes one thing:

- ema: EMA weights (trainer.ema 0.99), validated and saved instead of the raw ones;
- balanced: the class-balanced sampler (data.sampler class-balanced);
- lovasz-stage: BCE + Dice, then Lovasz alone for the last quarter of the epochs
  (loss.stages);
- multi-crop: each batch one of three crop widths around the baseline's (data.crops);
- average: the baseline run's last three epochs averaged (`sever average`, BatchNorm
  recomputed), scored with `sever evaluate`;
- full-size: the baseline run fine-tuned one more epoch at full size with a tenth of the
  learning rates (model.init_from, data.crop null), scored at its end.

Every figure is the validation of the run's last weights with the recipe's own threshold
and min_pixels (no tuning): mean Dice, the all-empty baseline, Dice on (image, class)
pairs with a defect, and the training time. Prints a table and writes bench-tricks.json.

Run from the repo root (about an hour and a half for 10 epochs on two quiet CPU cores; the
README has the figures of `--epochs 10`):

    .venv/bin/python bench/bench_training_tricks.py [--epochs 8] [--data data/synthetic]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from runner import sever, train

BASE = Path(__file__).resolve().parents[1] / "experiments" / "demo.yml"


def evaluate(checkpoint: Path) -> dict:
    """The validation scores of a checkpoint with its run's threshold and min_pixels."""
    return json.loads(sever("evaluate", "-r", checkpoint, "--workers", "1", "--json"))


def scores_of(report: dict) -> dict:
    scores = report.get("scores", report)
    return {k: scores[k] for k in ("dice_mean", "empty_baseline", "dice_positive")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=BASE)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--out", type=Path, default=Path("bench-tricks.json"))
    args = parser.parse_args()
    e = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"data.dir={args.data}",
            f"trainer.save_dir={tmp}",
            f"trainer.epochs={e}",
            f"trainer.val_every={e}",
            f"scheduler.flat_epochs={e // 2}",
            f"scheduler.cosine_epochs={e - e // 2}",
            "trainer.save_top_k=0",
            "trainer.save_period=1",
        ]
        variants = {
            "baseline": [],
            "ema": ["trainer.ema=0.99"],
            "balanced": ["data.sampler=class-balanced"],
            "lovasz-stage": [f"loss.stages=[{{from_epoch: {e - e // 4 + 1}, lovasz: 1.0}}]"],
            "multi-crop": [
                "data.crops=[{from_epoch: 1, sizes: [[256, 160], [256, 192], [256, 256]]}]"
            ],
        }
        results: dict[str, dict] = {}
        runs: dict[str, Path] = {}
        for name, extra in variants.items():
            run, seconds = train(args.config, [*common, *extra])
            runs[name] = run
            last = run / "checkpoints" / "last.pth"
            results[name] = scores_of(evaluate(last)) | {"seconds": round(seconds, 1)}
            print(name, results[name], flush=True)
        base = runs["baseline"]
        started = time.perf_counter()
        averaged = Path(tmp) / "average.pth"
        sever(
            "average",
            "-r",
            base,
            *[a for k in range(e - 2, e + 1) for a in ("-e", k)],
            "--out",
            base / "checkpoints" / averaged.name,
        )
        results["average"] = scores_of(evaluate(base / "checkpoints" / averaged.name)) | {
            "seconds": round(results["baseline"]["seconds"] + time.perf_counter() - started, 1)
        }
        print("average", results["average"], flush=True)
        finetune = [
            *common,
            f"model.init_from={base / 'checkpoints' / 'last.pth'}",
            "data.crop=null",
            "trainer.epochs=1",
            "trainer.val_every=1",
            "trainer.batch_size=4",
            "optimizer.encoder.lr=1.0e-4",
            "optimizer.decoder.lr=3.0e-4",
            "scheduler.type=constant",
        ]
        run, seconds = train(args.config, finetune)
        results["full-size"] = scores_of(evaluate(run / "checkpoints" / "last.pth")) | {
            "seconds": round(results["baseline"]["seconds"] + seconds, 1)
        }
        print("full-size", results["full-size"], flush=True)
    baseline = results["baseline"]
    print(
        f"\n{e} epochs of {args.config.name} on {args.data}; last weights, recipe's post-processing"
    )
    header = ("variant", "dice_mean", "gain", "empty", "positive", "gain", "seconds")
    widths = (13, 10, 8, 7, 9, 8, 8)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for name, r in results.items():
        print(
            f"{name:>13} {r['dice_mean']:10.4f} {r['dice_mean'] - baseline['dice_mean']:+8.4f} "
            f"{r['empty_baseline']:7.4f} {r['dice_positive']:9.4f} "
            f"{r['dice_positive'] - baseline['dice_positive']:+8.4f} {r['seconds']:8.0f}"
        )
    args.out.write_text(json.dumps({"epochs": e, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
