"""Commands that score models on their runs' validation splits: evaluate, tune, compare."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from sever.cli.app import cli, echo_report
from sever.cli.options import (
    FILE_OPTIONS,
    MODEL_OPTIONS,
    RUN_OPTIONS,
    data_dir_option,
    ensemble_options,
    json_option,
)
from sever.errors import SeverError


@cli.command()
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS)
@data_dir_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the JSON report (default: RUN/eval-<checkpoint>[-<key>].json, the "
    "key naming the models and options).",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(path_type=Path),
    help="Also write a self-contained HTML page (scores with intervals, defect shares).",
)
@json_option
def evaluate(
    spec, data_dir: Path | None, out: Path | None, html_out: Path | None, as_json: bool
) -> None:
    """Score checkpoints on their own runs' validation splits (full size).

    -r takes a run directory or a checkpoint file. A classifier run beside a segmenter
    (-r SEG -r CLS), or an ensemble file (-c), evaluates gated or scaled post-processing;
    runs of different folds are each scored on their own fold. Without --postprocess (or
    the file's), the trainer's threshold and min_pixels: the run's own validation."""
    from sever.fileio import check_distinct, check_output_file
    from sever.inference import Ensemble, evaluate_runs

    given = [(o, p) for o, p in (("--out", out), ("--html", html_out)) if p is not None]
    for option, path in given:
        check_output_file(path, option)  # before the models load, not after the work
    check_distinct([(f"{option} {path}", path) for option, path in given])
    ensemble = Ensemble.from_options(spec)
    if html_out is not None and all(m.task == "classify" for m in ensemble.members):
        raise SeverError("--html: classifiers alone have no masks to show")
    report = evaluate_runs(ensemble, data_dir, out)
    echo_report(report, as_json)
    if html_out is not None:
        from sever.inference.report import single, write_html

        assert report.candidate is not None  # a segmenter was scored
        write_html(single(report.candidate), html_out)
        if not as_json:
            click.echo(f"wrote {html_out}")


@cli.command()
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS[:2])
@click.option(
    "--postprocess",  # into the spec: it wins over the ensemble file's
    type=click.Path(path_type=Path),
    help="Starting post-processing (kept for what is not tuned; default: the ensemble "
    "file's, else the model's default: its trainer's threshold and min_pixels).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the tuned YAML (default: RUN/postprocess-tuned.yml).",
)
@click.option(
    "--cache-dir",
    "cache",
    type=click.Path(path_type=Path),
    help="Where to cache the predicted validation probabilities (default: RUN/cache; for a "
    "read-only run, cache/ beside --out).",
)
@click.option(
    "--search",
    "how",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "shared", "per-class", "presence"]),
    help="auto: from one threshold and size for all classes up to per-class values and "
    "presence gates, each adopted only when its held-out gain is significant; else that "
    "search alone.",
)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print before/after as JSON.")
def tune(
    spec,
    out: Path | None,
    cache: Path | None,
    how: str,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Tune per-class thresholds, minimum sizes and presence gates on the validation split.

    -r RUN (repeatable) or -c ENSEMBLE.yml names the models (with the file's TTA and
    averaging). Give a classifier run (task: classify) beside the segmenters, or use models
    with a class head, to also tune the presence gate and the classifier's scaling of the
    minimum sizes (scale_c)."""
    from sever.fileio import check_output_file, check_output_folder
    from sever.inference import Ensemble, tune_runs

    if not spec.runs and spec.file is None:
        raise click.UsageError("give -r RUN (repeatable) or -c ENSEMBLE.yml")
    if out is not None:
        check_output_file(out, "--out")  # before the models load
    if cache is not None:
        check_output_folder(cache, "--cache-dir")
    # Tuning starts where predict would be: the given post-processing, else the one default.
    report = tune_runs(Ensemble.from_options(spec), None, out, data_dir, how, cache)
    echo_report(report, as_json)


@cli.command()
@ensemble_options(*RUN_OPTIONS)
@click.option(
    "-c",
    "--config",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A candidate: an ensemble file (models, TTA, averaging, post-processing); give two "
    "or more.",
)
@click.option(
    "--pick",
    type=click.IntRange(2, 2),
    help="Propose the two final submissions: the best, and the most different of those "
    "within noise of it.",
)
@click.option("--resamples", default=2000, show_default=True, type=click.IntRange(100))
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(path_type=Path),
    help="Also write a self-contained HTML report here (plots, curves, disagreements).",
)
@data_dir_option
@json_option
def compare(
    spec,
    files: tuple[Path, ...],
    pick: int | None,
    resamples: int,
    seed: int,
    html_out: Path | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Score candidate submissions on the same validation images, with bootstrap intervals
    on every score and every difference; --pick 2 proposes the two final submissions."""
    from sever.fileio import check_output_file
    from sever.inference import compare_ensembles

    if html_out is not None:
        check_output_file(html_out, "--html")  # before the work
    candidates = [dataclasses.replace(spec, file=f) for f in files]
    report = compare_ensembles(candidates, data_dir, resamples, seed, pick or 0)
    if html_out is not None:
        from sever.inference.overlays import with_overlays
        from sever.inference.report import write_html

        write_html(with_overlays(report, candidates, data_dir), html_out)
    echo_report(report, as_json)
    if html_out is not None and not as_json:
        click.echo(f"wrote {html_out}")
