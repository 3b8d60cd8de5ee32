"""Training commands: config, train, bench, average."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sever.cli.app import cli, echo_report

config_option = click.option(
    "-c",
    "--config",
    "configs",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Experiment YAML; repeat to merge several (later files win).",
)
override_option = click.option(
    "-o",
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override one config key, e.g. -o trainer.epochs=3 (repeatable).",
)


@cli.command()
@config_option
@override_option
def config(configs: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Print the resolved, validated config: exactly what `train` would run."""
    from sever.config import dump_config, load_config

    click.echo(dump_config(load_config(list(configs), list(overrides))), nl=False)


@cli.command()
@click.option(
    "-c",
    "--config",
    "configs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Experiment YAML; repeat to merge several (later files win).",
)
@override_option
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue a run: its directory or one of its checkpoints.",
)
@click.option(
    "--folds",
    metavar="SPEC",
    help="Train these folds of data.folds one after another: all, 0-4, 0,2,3 or 3.",
)
@click.option(
    "--gpus",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Train on N GPUs with DistributedDataParallel (starts torchrun for you).",
)
def train(
    configs: tuple[Path, ...],
    overrides: tuple[str, ...],
    resume: Path | None,
    folds: str | None,
    gpus: int,
) -> None:
    """Train a segmentation model; the last line printed is `run: <run directory>`.

    With --folds, `run:` names the k-fold parent holding fold<k>/ runs and ensemble.yml.
    """
    from sever.engine.launch import TrainRequest, main_process, start_training

    request = TrainRequest(configs, overrides, resume, folds, gpus, tuple(sys.argv[1:]))
    run = start_training(request)
    if main_process():  # under torchrun, rank 0 speaks for all
        click.echo(f"run: {run}")


@cli.command()
@config_option
@override_option
@click.option(
    "--steps",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Timed batches per measurement (after 2 warm-up batches).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the JSON report (default: bench-<name>.json here).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def bench(
    configs: tuple[Path, ...],
    overrides: tuple[str, ...],
    steps: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Measure loading, compute and full-step speed, memory and MFU of a training config."""
    from sever.config import load_config
    from sever.fileio import check_output_file

    config = load_config(list(configs), list(overrides))
    out = out or Path(f"bench-{config.name}.json")
    check_output_file(out, "--out")
    from sever.engine.bench import format_table, run_bench, write_report  # torch: after

    report = run_bench(config, steps)
    write_report(report, out)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(format_table(report))
    click.echo(f"wrote {out}")


@cli.command()
@click.option(
    "-r",
    "--run",
    required=True,
    type=click.Path(path_type=Path),
    help="The run directory whose checkpoints to average.",
)
@click.option(
    "-e", "--epoch", "epochs", multiple=True, type=int, help="An epoch to average; repeatable."
)
@click.option(
    "--top",
    type=click.IntRange(2),
    help="The run's K best kept epochs by its monitored metric (default: all kept).",
)
@click.option(
    "--bn",
    default="recompute",
    show_default=True,
    type=click.Choice(["recompute", "average"]),
    help="BatchNorm statistics: recomputed on the training images (swa_utils.update_bn), "
    "or averaged like the weights.",
)
@click.option(
    "--bn-batches",
    type=click.IntRange(1),
    help="Training batches for --bn recompute (default: one epoch's).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="The checkpoint to write (default: RUN/checkpoints/average-e<N>-...pth).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def average(run, epochs, top, bn, bn_batches, out, device, as_json) -> None:
    """Average the weights of a run's best checkpoints into one checkpoint."""
    from sever.engine.average import AverageOptions, average_run
    from sever.fileio import check_output_file
    from sever.inference.models import inference_device

    if out is not None:
        check_output_file(out, "--out")
    where = inference_device(device)  # checked before any work
    options = AverageOptions(run, list(epochs), top, bn, out, where, bn_batches)
    echo_report(average_run(options), as_json)
