"""Kaggle commands: upload (stage a run's checkpoints and publish them), download (the
competition's files)."""

from __future__ import annotations

from pathlib import Path

import click

from sever.cli.app import cli


@cli.command()
@click.option(
    "-r",
    "--run",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory (or one of its checkpoints).",
)
@click.option(
    "-e", "--epoch", "epochs", multiple=True, type=int, help="checkpoint-epochN.pth; repeatable."
)
@click.option("--best", is_flag=True, help="model_best.pth (the default with no other choice).")
@click.option("--last", is_flag=True, help="last.pth.")
@click.option(
    "--target",
    default="dataset",
    show_default=True,
    type=click.Choice(["dataset", "model"]),
    help="A Kaggle dataset, or a Kaggle Models variation (PyTorch).",
)
@click.option(
    "--dataset",
    metavar="OWNER/SLUG",
    help="The dataset (default: <you>/sever-<name>-<stamp>, one per run).",
)
@click.option(
    "--model",
    metavar="OWNER/SLUG[/VARIATION]",
    help="With --target model (default: <you>/sever-<name>, variation run-<stamp>).",
)
@click.option("--public", is_flag=True, help="Make it public when it is created.")
@click.option("-m", "--message", help="Version notes (default: the checkpoints and scores).")
@click.option(
    "--weights-only",
    is_flag=True,
    help="Strip optimiser, scheduler and scaler state (about 3x smaller).",
)
@click.option("--with-package", is_flag=True, help="Add a wheel of sever for offline pip install.")
@click.option(
    "--with-deps",
    is_flag=True,
    help="Also add wheels of the dependencies Kaggle's image lacks (implies --with-package).",
)
@click.option("--dry-run", is_flag=True, help="Stage the folder only; send nothing.")
@click.option(
    "--staging-dir",
    default="upload",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to stage: STAGING_DIR/<name>/<stamp>/.",
)
def upload(
    run,
    epochs,
    best,
    last,
    target,
    dataset,
    model,
    public,
    message,
    weights_only,
    with_package,
    with_deps,
    dry_run,
    staging_dir,
) -> None:
    """Stage a run's checkpoints with a model card and publish them on Kaggle."""
    from sever.kaggle.publish import UploadOptions, upload_run

    if (dataset and target == "model") or (model and target == "dataset"):
        raise click.UsageError("--dataset goes with --target dataset, --model with --target model")
    options = UploadOptions(
        run=run,
        epochs=list(epochs),
        best=best,
        last=last,
        target=target,
        handle=dataset or model,
        public=public,
        message=message,
        weights_only=weights_only,
        with_package=with_package,
        with_deps=with_deps,
        dry_run=dry_run,
        root=staging_dir,
    )
    for line in upload_run(options).report():
        click.echo(line)


@cli.command()
@click.argument(
    "data_dir",
    required=False,
    default="data/raw/severstal-steel-defect-detection",
    type=click.Path(path_type=Path),
)
@click.option("--force", is_flag=True, help="Download again even if DATA_DIR is complete.")
@click.pass_context
def download(ctx: click.Context, data_dir: Path, force: bool) -> None:
    """Download the competition's files into DATA_DIR, unzip them, then check them."""
    from sever.kaggle.competition import download_competition

    fetched = download_competition(data_dir, force)
    click.echo(f"{data_dir}: {'downloaded' if fetched else 'already downloaded'}")
    check_data = cli.commands["check-data"]  # the command itself: commands import no other
    ctx.invoke(check_data, data_dir=data_dir, fast=False, classes=4)
