"""The README.md model card of a staged folder: what the model is, how well it validated,
and the notebook cells that run it offline on Kaggle.

Plain string building from the staged folder's facts; no angle brackets, since Kaggle
sanitises model descriptions as HTML.
"""

from __future__ import annotations

from typing import Any

from sever.inference.postprocess_file import TUNED_FILE, read_postprocess
from sever.kaggle.staged import Staged, StagedCheckpoint

METRICS = [
    ("val_dice_mean", "Dice"),
    ("val_dice_1", "class 1"),
    ("val_dice_2", "class 2"),
    ("val_dice_3", "class 3"),
    ("val_dice_4", "class 4"),
    ("val_dice_positive", "defect pairs"),
    ("val_empty_baseline", "empty baseline"),
    ("val_f1_mean", "presence F1"),
    ("val_loss", "val loss"),
]
CHANNELS = {
    "r": "the R channel of the JPEG",
    "g": "the G channel",
    "b": "the B channel",
    "sum": "the sum of R, G and B",
}


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def fmt_size(hw) -> str:
    return "x".join(str(v) for v in hw) if isinstance(hw, list | tuple) else str(hw)


def architecture(config: dict) -> str:
    if config.get("task") == "classify":
        return "classifier: the encoder, pooled, with a per-class presence head"
    return config.get("model", {}).get("arch", "?")


def summary_table(staged: Staged) -> list[str]:
    config = staged.config
    model, data, trainer = config.get("model", {}), config.get("data", {}), config["trainer"]
    head = model.get("class_head", {}) or {}
    normalize = data.get("normalize") or {}
    channel = model.get("input_channel", "?")
    versions = ", ".join(f"{k} {v}" for k, v in staged.versions.items()) or "unknown"
    rows = [
        ("architecture", architecture(config)),
        (
            "encoder",
            f"{model.get('encoder', '?')} (initial weights: {model.get('encoder_weights')})",
        ),
        ("input channel", f"{channel}: one grey channel from {CHANNELS.get(channel, channel)}"),
        ("classes", model.get("classes", 4)),
        ("classification head", "yes" if head.get("enabled") else "no"),
        ("normalisation", f"mean {normalize.get('mean')}, std {normalize.get('std')}"),
        ("image size / crop", f"{fmt_size(data.get('image_size'))} / {fmt_size(data.get('crop'))}"),
        ("validation", validation_split(data)),
        ("epochs configured", trainer.get("epochs")),
        ("monitored", trainer.get("monitor")),
        (
            "validation threshold",
            f"{trainer.get('threshold')}, min_pixels {trainer.get('min_pixels')}",
        ),
        ("trained with", versions),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def validation_split(data: dict) -> str:
    if data.get("folds"):
        return f"fold {data.get('fold') or 0} of {data['folds']}"
    return f"holdout {data.get('val_fraction')} (stratified by class set)"


def checkpoint_table(staged: Staged) -> list[str]:
    keys = [k for k, _ in METRICS if any(k in c.metrics for c in staged.checkpoints)]
    labels = dict(METRICS)
    head = ["file", "epoch", "validated at", *[labels[k] for k in keys], "size"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in staged.checkpoints:
        cells = [
            f"`{c.name}`",
            str(c.epoch),
            f"epoch {c.validated_at}" if c.validated_at else "-",
            *[f"{c.metrics[k]:.4f}" if k in c.metrics else "-" for k in keys],
            megabytes(c.size),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def install_lines(staged: Staged, input_dir: str) -> list[str]:
    if not staged.wheels:
        return [
            "This upload has no wheels (stage with `--with-package` to add them); attach a "
            "dataset that holds the sever wheel and `pip install --no-index --no-deps` it.",
            "",
        ]
    lines = [
        "Install sever (and the wheels beside it) without the internet:",
        "",
        "```",
        f"!pip install --no-index --no-deps {input_dir}/*.whl",
        "```",
        "",
    ]
    if not any(w.startswith("segmentation_models_pytorch") for w in staged.wheels):
        lines += [
            "sever also needs segmentation-models-pytorch, which Kaggle's image lacks: "
            "stage with `--with-deps` to add its wheel here, or attach one.",
            "",
        ]
    return lines


def best_checkpoint(staged: Staged) -> StagedCheckpoint:
    """The staged checkpoint to predict with: model_best.pth when staged, else the best by
    the run's monitored metric (`trainer.monitor`, e.g. 'max val_dice_mean') among those
    that have it, else the first."""
    for c in staged.checkpoints:
        if c.name == "model_best.pth":
            return c
    mode, _, key = str(staged.config.get("trainer", {}).get("monitor", "")).partition(" ")
    scored = [c for c in staged.checkpoints if key in c.metrics]
    if not scored or mode not in ("max", "min"):
        return staged.checkpoints[0]
    sign = 1 if mode == "max" else -1
    return max(scored, key=lambda c: sign * c.metrics[key])


FIND_COMPETITION = [
    "from sever.kaggle.competition import find_competition",
    "",
    "# /kaggle/input/competitions/severstal-steel-defect-detection, or wherever it is attached",
    "COMPETITION = find_competition()",
]


def predict_cells(staged: Staged, input_dir: str) -> list[str]:
    """The notebook cells: install offline, find the competition's data, then predict with
    the CLI or from Python: with the models, TTA and averaging the staged post-processing
    was tuned with (`tuned_cells`), else the best checkpoint staged."""
    found = [
        *install_lines(staged, input_dir),
        "Find the competition's data, wherever the notebook attached it:",
        "",
        "```python",
        *FIND_COMPETITION,
        "```",
        "",
    ]
    record = tuned_record(staged)
    if record is not None:
        return found + tuned_cells(staged, input_dir, record)
    # no tuned file, or one without its record (written by hand): the best checkpoint
    tuned = f"{input_dir}/{TUNED_FILE}" if (staged.run / TUNED_FILE).is_file() else None
    best = best_checkpoint(staged).name
    models = f"-r {input_dir}/{best}"
    paths = f'Path("{input_dir}/{best}")'
    intro = (
        "Predict the test images into submission.csv (every image and class, in the wide "
        "format Kaggle scores; the notebook fills in `{COMPETITION}`):"
    )
    if staged.config.get("task") == "classify":
        models = f"-r SEGMENTER.pth {models}"
        paths = f'Path("SEGMENTER.pth"), {paths}'
        intro = (
            "This is a classifier: it predicts class presence, not masks. Give it beside a "
            "segmentation checkpoint (SEGMENTER.pth), with a post-processing that gates or "
            "scales by presence (`gate`, `scale_c`; `sever tune` finds them):"
        )
    return found + [
        intro,
        "",
        "```",
        f"!sever predict {models} --tta hflip \\",
        *([f"    --postprocess {tuned} \\"] if tuned else []),
        "    --images {COMPETITION}/test_images --out submission.csv",
        "```",
        "",
        *python_cell(
            [
                "ensemble = Ensemble.from_runs(",
                f"    [{paths}],",
                '    tta="hflip",',
                *([f'    postprocess=Path("{tuned}"),'] if tuned else []),
                "    batch_size=8,",
                ")",
            ]
        ),
    ]


def python_cell(ensemble: list[str]) -> list[str]:
    """The Python cell that builds the ensemble with `ensemble`'s lines and predicts."""
    return [
        "Or from Python, for your own ensembling or post-processing:",
        "",
        "```python",
        "from pathlib import Path",
        "from sever.inference import Ensemble, predict_folder",
        "",
        *ensemble,
        'predict_folder(ensemble, COMPETITION / "test_images", Path("submission.csv"))',
        "```",
        "",
        *PYTHON_NOTE,
    ]


PYTHON_NOTE = [
    "`Ensemble.from_runs` takes the checkpoints (or run folders) that `sever predict -r` "
    "takes, and its options as keywords (`epochs`, `which`, `averaging`, `device`, ...); "
    "`Ensemble.from_file` reads an ensemble file. "
    "`sever.inference.postprocess` has the pure-numpy steps (`threshold`, "
    "`remove_small_components`, `min_pixels`, `postprocess_batch`, ...) for "
    "probabilities you compute yourself.",
]


def tuned_record(staged: Staged) -> dict[str, Any] | None:
    """The `tuned_with` record of the run's staged tuned post-processing, if any."""
    path = staged.run / TUNED_FILE
    if not path.is_file():
        return None
    return read_postprocess(path)[1]


def tuned_cells(staged: Staged, input_dir: str, record: dict[str, Any]) -> list[str]:
    """Cells that predict exactly as the staged post-processing was tuned: its models (the
    staged copies, matched by their weights), weights, per-model TTA and size, TTA and
    averaging, written as an ensemble file."""
    by_weights = {c.fingerprint: c for c in staged.checkpoints if c.fingerprint}
    entries, missing = [], []
    for m in record["models"]:
        copy = by_weights.get(m["weights_sha256"])
        if copy is None:
            missing.append(m["checkpoint"])
        path = f"{input_dir}/{copy.name}" if copy else m["checkpoint"]
        entries.append(f"  - checkpoint: {path}")
        if record["averaging"] == "weighted":
            entries.append(f"    weight: {m['weight']:g}")
        if m.get("tta"):
            entries.append(f"    tta: {m['tta']}")
        if m.get("size"):
            entries.append(f"    size: [{m['size'][0]}, {m['size'][1]}]")
    note = []
    if missing:
        note = [
            f"The post-processing was tuned with {len(record['models'])} models; "
            f"{len(missing)} of them are not in this upload ({', '.join(missing)}): attach "
            "their datasets and put their paths in the file below, or it will not load.",
            "",
        ]
    return [
        *note,
        "Predict the test images into submission.csv with the models, TTA and averaging that "
        f"`{TUNED_FILE}` was tuned with (every image and class, in the wide format Kaggle scores; "
        "the notebook fills in `{COMPETITION}`):",
        "",
        "```",
        "%%writefile ensemble.yml",
        "models:",
        *entries,
        f"tta: {record['tta']}",
        f"averaging: {record['averaging']}",
        f"postprocess: {input_dir}/{TUNED_FILE}",
        "```",
        "",
        "```",
        "!sever predict -c ensemble.yml --images {COMPETITION}/test_images --out submission.csv",
        "```",
        "",
        *python_cell(['ensemble = Ensemble.from_file("ensemble.yml", batch_size=8)']),
    ]


def model_card(staged: Staged, files: list[str]) -> str:
    """README.md for the staged folder; `files` are the names it holds."""
    run = staged.run
    target = staged.target
    where = (
        f"Kaggle dataset `{target.owner}/{target.slug}`"
        if target.kind == "dataset"
        else f"Kaggle model `{target.owner}/{target.slug}`, PyTorch variation `{target.variation}`"
    )
    weights = (
        [
            "The checkpoints are **weights only**: optimiser, scheduler, scaler and RNG state "
            "were removed. They predict exactly like the originals but cannot resume training.",
            "",
        ]
        if staged.weights_only
        else []
    )
    model_note = (
        [
            f"In a notebook the files are under `{target.input_dir}` "
            "(the last number is the model version you attach).",
            "",
        ]
        if target.kind == "model"
        else []
    )
    return "\n".join(
        [
            f"# sever {run.parent.name} {run.name}",
            "",
            "Steel-defect segmentation for Kaggle's *Severstal: Steel Defect Detection*, "
            f"trained with sever (run `{run.parent.name}/{run.name}`), published as {where}.",
            "",
            *summary_table(staged),
            "",
            "## Checkpoints",
            "",
            "Validation scores are Kaggle's mean Dice over every (image, class) pair of the "
            "run's validation split, at the trainer's threshold and min_pixels, from the last "
            "validation at or before each checkpoint's epoch.",
            "",
            *checkpoint_table(staged),
            "",
            *weights,
            "## Predict in an offline Kaggle notebook",
            "",
            "Attach this upload and the competition's data, turn the internet off.",
            "",
            *model_note,
            *predict_cells(staged, target.input_dir),
            "",
            "## Files",
            "",
            *[f"- `{name}`" for name in files + ["README.md"]],
            "",
        ]
    )


def instance_usage(staged: Staged) -> str:
    """The model instance's usage text; Kaggle replaces ${PATH} with the files' folder."""
    return "\n".join(predict_cells(staged, "${PATH}")) + "\n"
