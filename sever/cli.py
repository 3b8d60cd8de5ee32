"""The `sever` command line. Commands only parse, call one library function and report.

User errors (`SeverError`, and click's usage errors) print as one line on stderr with a
non-zero exit status; a traceback appears only with `--debug`. Anything else is a bug and
says so, in one line too.

Each command imports the library it calls inside its function: torch, SMP and
albumentations take 5-7 s to import, and `sever --help`, `sever config` or a config
typo answer in about 0.3-0.6 s without them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Literal

import click

from sever import __version__
from sever.errors import Interrupted, SeverError
from sever.logsetup import setup_logging

log = logging.getLogger("sever")
NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


@dataclasses.dataclass
class Flags:
    """-v/--verbose and --debug, given before the subcommand or after it: the context's
    object, which `main` reads back to decide on tracebacks."""

    verbose: bool = False
    debug: bool = False


def flag_options() -> list[click.Option]:
    """-v/--verbose and --debug, for the group and for every command (fresh objects each:
    click keeps per-command state on its parameters)."""

    def setter(name: str):
        def store(ctx: click.Context, param: click.Parameter, value: bool) -> None:
            if value:
                setattr(ctx.ensure_object(Flags), name, True)

        return store

    return [
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=setter("verbose"),
            help="Log debug messages too.",
        ),
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            callback=setter("debug"),
            help="Show tracebacks for errors.",
        ),
    ]


class SeverCommand(click.Command):
    """A command that also takes -v/--verbose and --debug, and sets up logging once its
    own arguments are parsed: both positions of the flags are known by then."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params += flag_options()

    def invoke(self, ctx: click.Context):
        from sever.progress import interval_from_env

        setup_logging(ctx.ensure_object(Flags).verbose)
        interval_from_env()  # a bad SEVER_PROGRESS_INTERVAL fails here, before any work
        return super().invoke(ctx)


class SeverGroup(click.Group):
    command_class = SeverCommand


@click.group(
    cls=SeverGroup, params=flag_options(), context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="sever")
def cli() -> None:
    """Train, evaluate, ensemble and ship Severstal steel-defect segmentation models.

    -v/--verbose and --debug go before the command or after it."""


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
    from sever.config import load_config

    point = None
    if resume and folds:
        raise click.UsageError(
            "--folds starts new runs; resume one fold on its own: --resume PARENT/foldK"
        )
    if resume:
        if configs:
            raise SeverError(
                "--resume continues a run with its own config.yml: drop -c "
                "(-o still works, e.g. -o trainer.epochs=300)"
            )
        from sever.engine.resume import find_resume_point, resumed_config

        point = find_resume_point(resume)
        config = resumed_config(point, list(overrides))
    elif configs:
        config = load_config(list(configs), list(overrides))
    else:
        raise click.UsageError("give -c EXPERIMENT.yml, or --resume RUN")
    if gpus > 1:
        relaunch_with_torchrun(gpus)
    if folds:
        from sever.engine.kfold import parse_folds, train_folds

        run = train_folds(config, parse_folds(folds, config.data.folds))
    else:
        from sever.engine.trainer import train as run_training  # torch: after the config

        run = run_training(config, point)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for all
        click.echo(f"run: {run}")


def relaunch_with_torchrun(gpus: int) -> None:
    """`sever train --gpus N ...` is `torchrun --standalone --nproc_per_node=N -m sever
    train ...`: start it, wait, and exit with its status."""
    import subprocess

    if "WORLD_SIZE" in os.environ:
        raise click.UsageError("--gpus starts torchrun itself; under torchrun, drop it")
    args = sys.argv[1:]
    i = args.index("--gpus")
    args = args[:i] + args[i + 2 :]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", f"--nproc_per_node={gpus}", "-m", "sever", *args]
    sys.exit(subprocess.call(command))


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
    import json

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
    import json

    from sever.engine.average import AverageOptions, average_run
    from sever.fileio import check_output_file
    from sever.inference.models import inference_device

    if out is not None:
        check_output_file(out, "--out")
    where = inference_device(device)  # checked before any work
    options = AverageOptions(run, list(epochs), top, bn, out, where, bn_batches)
    report = average_run(options)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)


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
    import json

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
        help="Post-processing YAML (default: the ensemble file's, else the defaults).",
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


def echo_report(report, as_json: bool) -> None:
    """An inference report: its lines, or with --json one JSON object."""
    import json

    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The runs' dataset folder (default: their data.dir, relative to the folder they "
    "trained in, else to this one).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the report as one JSON object."
)


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
    from sever.inference import Ensemble, Outputs, predict_folder, predict_saved
    from sever.inference.tiles import Tiling

    outputs = Outputs(out, fmt, overlays, save_probs, instances)
    tiling = Tiling(tile, overlap)
    if from_probs and exported is not None:
        raise click.UsageError("give --from-probs or --exported, not both")
    if (from_probs or exported) and (spec.runs or spec.file or spec.tta is not None):
        raise click.UsageError(
            f"{'--from-probs' if from_probs else '--exported'} predicts without checkpoints: drop "
            "-r/-c and --tta (the views are in the saved probabilities or the export)"
        )
    if exported is not None and spec.device != "auto":
        raise click.UsageError(
            "--exported: the model runs where its runtime puts it (onnxruntime: CUDA when "
            "it has it; .pt2: the CPU); drop --device"
        )
    if exported is not None and spec.averaging:
        raise click.UsageError(
            "--exported: the export averages its models inside; drop --averaging"
        )
    if from_probs:
        if overlays or save_probs or tile or overlap is not None:
            raise click.UsageError(
                "--from-probs: drop --overlays, --save-probs, --tile and --overlap"
            )
        averaging = spec.averaging or "mean"
        report = predict_saved(from_probs, outputs, spec.postprocess, averaging, images_dir)
    elif images_dir is None:
        raise click.UsageError("give --images DIR (or --from-probs DIR)")
    elif exported is not None:
        from sever.inference.export import predict_exported

        loading = (spec.batch_size, spec.workers)
        report = predict_exported(exported, images_dir, outputs, spec.postprocess, loading, tiling)
    else:
        report = predict_folder(Ensemble.from_options(spec), images_dir, outputs, tiling)
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


@cli.command()
@ensemble_options(*MODEL_OPTIONS, *FILE_OPTIONS[:2])
@click.option(
    "--postprocess",
    "start",
    type=click.Path(path_type=Path),
    help="Starting post-processing (kept for what is not tuned; default: the ensemble "
    "file's, else the defaults).",
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
    start: Path | None,
    out: Path | None,
    cache: Path | None,
    how: str,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Tune per-class thresholds, minimum sizes and presence gates on the validation split.

    -r RUN (repeatable) or -c ENSEMBLE.yml names the models (with the file's TTA and
    averaging). Give a classifier run (task: classify) beside the segmenters, or use models
    with a class head, to also tune the presence gate and the threshold scaling."""
    from sever.fileio import check_output_file, check_output_folder
    from sever.inference import Ensemble, tune_runs

    if not spec.runs and spec.file is None:
        raise click.UsageError("give -r RUN (repeatable) or -c ENSEMBLE.yml")
    if out is not None:
        check_output_file(out, "--out")  # before the models load
    if cache is not None:
        check_output_folder(cache, "--cache-dir")
    if start is not None:  # --postprocess wins over the ensemble file's
        spec = dataclasses.replace(spec, postprocess=start)
    # Tuning starts where predict would be: the given post-processing, else the one default.
    ensemble = Ensemble.from_options(spec)
    report = tune_runs(ensemble, ensemble.applied_postprocess, out, data_dir, how, cache)
    echo_report(report, as_json)


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
    ctx.invoke(check_data, data_dir=data_dir, fast=False, classes=4)


def one_line(exc: Exception) -> str:
    """The message alone, also for errors re-raised from DataLoader workers, whose message
    carries the worker's traceback with the original message on its last line."""
    text = str(exc).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("sever.errors.") else last


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = Flags()
    try:
        check_working_directory()
        cli.main(args=args, prog_name="sever", standalone_mode=False, obj=flags)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except NO_ARGS_HELP as exc:  # bare `sever`: the help is the answer
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if flags.debug:
            raise
        click.echo(f"error: {usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if flags.debug:
            raise
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Interrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except SeverError as exc:
        if flags.debug:
            raise
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line unless --debug
        if flags.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(
            f"error: {type(exc).__name__}: {first} (this is a bug in sever; rerun with --debug "
            "and report it with the traceback)",
            err=True,
        )
        sys.exit(1)


def usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line, pointing at the command's --help."""
    command = exc.ctx.command_path if exc.ctx else "sever"
    return f"{exc.format_message()} (see '{command} --help')"


def check_working_directory() -> None:
    """Relative paths need the directory sever runs in: refuse one that was deleted."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise SeverError(
            "the current directory no longer exists (deleted or moved); cd to an existing "
            "folder and run again"
        ) from None


if __name__ == "__main__":
    main()
