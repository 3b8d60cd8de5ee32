"""Options shared by the inference commands (predict, export, pseudo-label, evaluate, tune,
compare): which models, how their predictions combine, where and how fast they run, and
`ensemble_options`, which hands a command their values as one EnsembleOptions."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

# Where and how fast models run: every inference command.
RUN_OPTIONS = [
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA, else CPU), cpu, cuda, cuda:N.",
    ),
    click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1)),
    click.option("--workers", default=2, show_default=True, type=click.IntRange(0)),
]


# Which models (-r/-e/--best/--last), how their predictions combine, and where and how fast
# to run them: gathered by `ensemble_options` into one EnsembleOptions.
MODEL_OPTIONS = [
    click.option(
        "-r",
        "--run",
        "runs",
        multiple=True,
        type=click.Path(path_type=Path),
        help="Run directory (or a checkpoint file); repeat for an ensemble.",
    ),
    click.option(
        "-e",
        "--epoch",
        "epochs",
        multiple=True,
        type=int,
        help="Epoch of each run's checkpoint-epochN.pth; repeatable.",
    ),
    click.option(
        "--best",
        "which",
        flag_value="best",
        default=True,
        help="Each run's model_best.pth (the default without -e).",
    ),
    click.option("--last", "which", flag_value="last", help="Each run's last.pth."),
    *RUN_OPTIONS,
    click.option(
        "--tta",
        type=click.Choice(["none", "hflip", "vflip", "both"]),
        help="Test-time flips (default: the ensemble file's, else none).",
    ),
]
# -c ENSEMBLE.yml, and what the command line says over the file: predict, evaluate,
# pseudo-label.
FILE_OPTIONS = [
    click.option(
        "-c",
        "--config",
        "file",
        type=click.Path(path_type=Path),
        help="Ensemble YAML: models with weights, TTA, averaging, post-processing.",
    ),
    click.option(
        "--averaging",
        type=click.Choice(["mean", "rms", "weighted"]),
        help="Ensemble averaging (default: mean, or the ensemble file's).",
    ),
    click.option(
        "--postprocess",
        type=click.Path(path_type=Path),
        help="Post-processing YAML (default: the ensemble file's, else the model's default: "
        "its trainer's threshold and min_pixels, one class per pixel).",
    ),
]


def ensemble_options(*options):
    """Add `options` to a command, and hand it their values as one EnsembleOptions: its
    first argument, `spec`."""

    def decorate(command):
        @functools.wraps(command)
        def run(**values):
            from sever.inference import EnsembleOptions

            names = {f.name for f in dataclasses.fields(EnsembleOptions)} & values.keys()
            return command(EnsembleOptions(**{k: values.pop(k) for k in names}), **values)

        for option in reversed(options):
            run = option(run)
        return run

    return decorate


def parse_size(value: str | None, option: str) -> tuple[int, int] | None:
    """'256x1600' -> (256, 1600); a usage error naming the option otherwise."""
    if value is None:
        return None
    height, _, width = value.lower().partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) and int(width)):
        raise click.UsageError(f"{option} {value}: expected HEIGHTxWIDTH in pixels, e.g. 256x1600")
    return int(height), int(width)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The runs' dataset folder (default: their data.dir, relative to the folder they "
    "trained in, else to this one).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the report as one JSON object."
)
