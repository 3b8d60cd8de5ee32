"""Compare training recipes over several seeds, so a change is judged on paired differences
rather than on one run.

A single 80-image validation of one short run moves by several hundredths of mean Dice
from seed to seed (README, Training), more than most recipe changes. This script trains
every recipe once per seed (`sever train -c CONFIG -o seed=S`, the recipe's own epochs)
and scores each run's last weights, with the recipe's threshold and min_pixels (no
tuning), twice:

- on the run's own validation images (its last validation, from metrics.csv);
- on held-out images that no run saw: `sever synth --seed 1` (the demo data is seed 0),
  predicted with `sever predict` (the run's threshold and min_pixels as its
  post-processing) and scored with `sever score`.

It prints each run's scores and training seconds, then per recipe the mean over seeds and
the mean paired difference against the first recipe (with the smallest and largest
difference over the seeds). Writes bench-recipes.json.

Run from the repo root (each demo-sized run takes about ten minutes on two quiet cores):

    .venv/bin/python bench/bench_recipes.py --recipe old=old-demo.yml \
        --recipe new=experiments/demo.yml --seeds 42 7 1 [--holdout 200]

A recipe is NAME=CONFIG, optionally followed by overrides: NAME=CONFIG,KEY=VALUE,...
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from runner import sever, train

from sever.config import load_config

SCORES = ("dice_mean", "dice_positive", "empty_baseline")


def parse_recipe(text: str) -> tuple[str, Path, list[str]]:
    """NAME=CONFIG[,KEY=VALUE...] -> (name, config, overrides)."""
    name, _, rest = text.partition("=")
    config, *overrides = rest.split(",")
    if not name or not config or not Path(config).is_file():
        raise SystemExit(f"--recipe {text}: expected NAME=CONFIG[,KEY=VALUE...] with a config")
    return name, Path(config), overrides


def validation_scores(run: Path) -> dict[str, float]:
    """The run's last validation, as the trainer logged it."""
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    return {key: float(last[f"val_{key}"]) for key in SCORES}


def holdout_scores(run: Path, images: Path, truth: Path, tmp: Path) -> dict[str, float]:
    """Scores of the run's last weights on the held-out images, with the threshold and
    min_pixels its own validation used."""
    trainer = yaml.safe_load((run / "config.yml").read_text())["trainer"]
    settings = {"threshold": trainer.get("threshold", 0.5)}
    if trainer.get("min_pixels") is not None:
        settings["min_pixels"] = trainer["min_pixels"]
    postprocess = tmp / f"{run.parent.name}-{run.name}-postprocess.yml"
    postprocess.write_text(yaml.safe_dump(settings))
    submission = tmp / f"{run.parent.name}-{run.name}.csv"
    checkpoint = run / "checkpoints" / "last.pth"
    sever(
        "predict", "-r", checkpoint, "--images", images, "--out", submission,
        "--postprocess", postprocess, "--workers", 1,
    )  # fmt: skip
    scores = json.loads(sever("score", submission, truth, "--images", images, "--json"))
    return {key: scores[key] for key in SCORES}


def holdout_set(folder: Path, images: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """(images folder, truth CSV) of `images` synthetic images of `size` (H, W) that no
    demo run trains on."""
    height, width = size
    sever(
        "synth", folder, "--seed", 1, "--n-train", images, "--n-test", 0,
        "--height", height, "--width", width,
    )  # fmt: skip
    # predict orders its rows by a sample_submission.csv beside the images: this one lists
    # the (no) test images
    (folder / "sample_submission.csv").unlink()
    return folder / "train_images", folder / "train.csv"


def summary(results: dict[str, dict[int, dict]], first: str) -> list[str]:
    """Per recipe: mean over seeds and mean (min, max) paired difference to `first`."""
    lines = []
    for name, by_seed in results.items():
        for where in ("val", "holdout"):
            parts = []
            for key in ("dice_mean", "dice_positive"):
                values = [r[where][key] for r in by_seed.values()]
                text = f"{key} {statistics.mean(values):.4f}"
                if name != first:
                    diffs = [
                        r[where][key] - results[first][s][where][key] for s, r in by_seed.items()
                    ]
                    text += (
                        f" ({statistics.mean(diffs):+.4f}; {min(diffs):+.4f} to {max(diffs):+.4f})"
                    )
                parts.append(text)
            lines.append(f"{name:>12} {where:>7}: " + ", ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", required=True, help="NAME=CONFIG[,K=V...]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--holdout", type=int, default=200, help="held-out images")
    parser.add_argument("--out", type=Path, default=Path("bench-recipes.json"))
    args = parser.parse_args()
    recipes = [parse_recipe(text) for text in args.recipe]
    results: dict[str, dict[int, dict]] = {name: {} for name, _, _ in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        _, config, overrides = recipes[0]
        size = load_config(config, overrides).data.image_size
        images, truth = holdout_set(Path(tmp) / "holdout", args.holdout, size)
        for seed in args.seeds:
            for name, config, overrides in recipes:
                options = [*overrides, f"seed={seed}", f"trainer.save_dir={tmp}/saved"]
                run, seconds = train(config, options)
                results[name][seed] = {
                    "val": validation_scores(run),
                    "holdout": holdout_scores(run, images, truth, Path(tmp)),
                    "seconds": round(seconds, 1),
                }
                print(name, seed, results[name][seed], flush=True)
    print(
        f"\nseeds {args.seeds}; last weights, the recipes' post-processing; "
        f"holdout: {args.holdout} images of sever synth --seed 1"
    )
    print("\n".join(summary(results, recipes[0][0])))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
