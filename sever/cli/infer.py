"""Commands that run models on images: predict, export, pseudo-label."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from sever.cli.app import cli, echo_report
from sever.cli.options import (
    FILE_OPTIONS,
    MODEL_OPTIONS,
    data_dir_option,
    ensemble_options,
    json_option,
    parse_size,
)


@cli.command()
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path),
    help="Folder of images to predict (with --from-probs: only for its sample_submission.csv).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Submission CSV.")
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "wide", "long"]),
    help="auto and wide: every image and class (ImageId_ClassId), the format Kaggle scores, "
    "in the order of a sample_submission.csv beside the images; long: defect rows only "
    "(unverified on Kaggle).",
)
@click.option(
    "--overlays",
    type=click.Path(path_type=Path),
    help="Also write PNGs of the predicted masks over the images here.",
)
@click.option(
    "--save-probs",
    type=click.Path(path_type=Path),
    help="Also keep the ensemble's probabilities here (8-bit, compressed) for --from-probs.",
)
@click.option(
    "--instances",
    type=click.Path(path_type=Path),
    help="Also list every defect region (class, box, area, probabilities, its RLE) as JSON "
    "lines here, and as CSV beside it (.csv).",
)
@click.option(
    "--exported",
    "--onnx",
    "exported",
    type=click.Path(path_type=Path),
    help="Predict with a model sever export wrote (.onnx or .pt2) instead of checkpoints.",
)
@click.option(
    "--from-probs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Predict from probabilities --save-probs kept, no model needed; repeat to blend "
    "several (with --averaging).",
)
@click.option(
    "--tile",
    callback=lambda ctx, param, value: parse_size(value, "--tile"),
    metavar="HxW",
    help="Images larger than this are predicted in overlapping tiles, blended (default: "
    "the size the models were trained at, data.image_size).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    help="Pixels neighbouring tiles share [default: a quarter of the tile].",
)
@json_option
def predict(
    spec,
    images_dir: Path | None,
    out: Path,
    fmt: str,
    overlays: Path | None,
    save_probs: Path | None,
    instances: Path | None,
    exported: Path | None,
    from_probs: tuple[Path, ...],
    tile: tuple[int, int] | None,
    overlap: int | None,
    as_json: bool,
) -> None:
    """Predict a folder of images into a Kaggle submission; images larger than the models'
    size (strips of any length) in overlapping tiles."""
    from sever.inference.predict import Outputs
    from sever.inference.sources import PredictRequest, predict_images
    from sever.inference.tiles import Tiling

    outputs = Outputs(out, fmt, overlays, save_probs, instances)
    request = PredictRequest(spec, images_dir, outputs, Tiling(tile, overlap), exported, from_probs)
    echo_report(predict_images(request), as_json)


@cli.command()
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The file to write: .onnx (onnxruntime) or .pt2 (torch.export).",
)
@click.option(
    "--aot",
    is_flag=True,
    help="With a .pt2: compile it with AOTInductor for this machine (minutes; a C++ "
    "compiler needed).",
)
@click.option(
    "--check-images",
    "images",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Validation images the parity check runs on.",
)
@data_dir_option
@json_option
def export(spec, out: Path, aot: bool, images: int, data_dir: Path | None, as_json: bool) -> None:
    """Export a model or an ensemble (TTA, averaging and normalisation inside) to ONNX or
    torch.export's .pt2, and prove it predicts as PyTorch does on validation images."""
    from sever.fileio import check_output_file
    from sever.inference.runtimes import runtime_of

    if spec.device not in ("auto", "cpu"):
        raise click.UsageError(f"--device {spec.device}: sever export runs on the CPU")
    check_output_file(out, "--out")  # before the models load
    runtime_of(out, aot)
    from sever.inference import Ensemble
    from sever.inference.export import export_model

    # traced, compiled and checked on the CPU: the export is for the CPU (onnxruntime
    # takes it to a GPU where it has CUDA)
    ensemble = Ensemble.from_options(dataclasses.replace(spec, device="cpu"))
    report = export_model(ensemble, out, images, data_dir, aot)
    echo_report(report, as_json)


@cli.command("pseudo-label")
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS)
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of unlabelled images.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Pseudo-label CSV (long); also writes <stem>-images.txt and <stem>-summary.json.",
)
@click.option("--hi", default=0.95, show_default=True, type=float, help="Present above this.")
@click.option("--lo", default=0.05, show_default=True, type=float, help="Absent below this.")
@json_option
def pseudo_label(spec, images_dir: Path, out: Path, hi: float, lo: float, as_json: bool) -> None:
    """Keep the images the ensemble is sure about as pseudo-labels (train.csv format)."""
    from sever.inference import Ensemble
    from sever.inference.pseudo import check_cutoffs, pseudo_label

    check_cutoffs(hi, lo)  # before the models load
    echo_report(pseudo_label(Ensemble.from_options(spec), images_dir, out, hi, lo), as_json)
