"""Commands on datasets and submission files, no model: synth, check-data, score, counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from sever.cli.app import cli, echo_report
from sever.errors import SeverError


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--n-train", default=400, show_default=True, type=click.IntRange(1))
@click.option("--n-test", default=100, show_default=True, type=click.IntRange(0))
@click.option("--height", default=256, show_default=True, type=click.IntRange(32))
@click.option("--width", default=1600, show_default=True, type=click.IntRange(32))
@click.option(
    "--format", "fmt", default="long", show_default=True, type=click.Choice(["long", "wide"])
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--classes",
    default=4,
    show_default=True,
    type=click.IntRange(1, 6),
    help="Defect classes: the competition's 4, or up to 6 (5: rolled-in scale, 6: cracks).",
)
def synth(
    out_dir: Path,
    n_train: int,
    n_test: int,
    height: int,
    width: int,
    fmt: str,
    seed: int,
    classes: int,
) -> None:
    """Write a synthetic dataset in the competition's layout to OUT_DIR."""
    from sever.data.synth import generate
    from sever.fileio import check_output_folder

    check_output_folder(out_dir, "OUT_DIR")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SeverError(f"{out_dir}: already exists and is not empty; choose another folder")
    layout: Literal["long", "wide"] = "wide" if fmt == "wide" else "long"
    summary = generate(out_dir, n_train, n_test, height, width, layout, seed, classes)
    for key, value in summary.items():
        click.echo(f"{key:>22}: {value}")
    click.echo(f"wrote {out_dir}")


classes_option = click.option(
    "--classes",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Defect classes: ClassIds run 1..N (the competition has 4).",
)


@cli.command("check-data")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--fast", is_flag=True, help="Skip decoding every image.")
@classes_option
def check_data(data_dir: Path, fast: bool, classes: int) -> None:
    """Check a dataset (train.csv, train_images/, test_images/) and summarise it."""
    from sever.data.checks import check_dataset

    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "data folder not found"
        raise SeverError(f"{data_dir}: {what}")
    if not (data_dir / "train.csv").exists() and not (data_dir / "train_images").exists():
        raise SeverError(
            f"{data_dir}: not a dataset (no train.csv or train_images/); give the folder "
            "holding them"
        )
    report = check_dataset(data_dir, full=not fast, classes=classes)
    for key, value in report.summary.items():
        click.echo(f"{key:>22}: {value}")
    # The problems are the report (stdout); stderr gets the one line of the verdict.
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    if not report.ok:
        count = len(report.problems)
        raise SeverError(
            f"{data_dir}: {count} problem{'s' * (count > 1)} found, the first: {report.problems[0]}"
        )
    click.echo(f"{data_dir}: no problems found")


@cli.command()
@click.argument("submission", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path),
    help="Image folder: gives the image size; with a long-format TRUTH, its files without "
    "rows are scored as defect-free.",
)
@classes_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def score(
    submission: Path, truth: Path, images_dir: Path | None, classes: int, as_json: bool
) -> None:
    """Score SUBMISSION against TRUTH (either CSV format) with Kaggle's mean Dice."""
    from sever.inference.submission import check_image_folder, score_submission

    check_image_folder(truth, images_dir, classes)
    scores = score_submission(submission, truth, images_dir, classes=classes)
    if as_json:
        click.echo(json.dumps(scores))
        return
    width = max(map(len, scores))
    for key, value in scores.items():
        shown = f"{value:.5f}" if isinstance(value, float) else value
        click.echo(f"{key:>{width}}: {shown}")


@cli.command()
@click.argument("submission", type=click.Path(path_type=Path))
@click.option(
    "--train",
    type=click.Path(path_type=Path),
    help="A dataset folder (train.csv, train_images/): its share of images per class is "
    "the reference.",
)
@click.option(
    "--expected",
    metavar="1:SHARE,2:SHARE,...",
    help="The reference as a share of images per class, e.g. one probed on the leaderboard.",
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path),
    help="The predicted images' folder: needed for a long-format SUBMISSION (defects only).",
)
@classes_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def counts(
    submission: Path,
    train: Path | None,
    expected: str | None,
    images_dir: Path | None,
    classes: int,
    as_json: bool,
) -> None:
    """Compare SUBMISSION's share of images per class with the training data or an expected
    distribution; flag classes that differ beyond sampling."""
    from sever.inference.counts import check_counts

    report = check_counts(submission, images_dir, train, expected, classes)
    echo_report(report, as_json)
