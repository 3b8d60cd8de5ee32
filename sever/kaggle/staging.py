"""Stage a run for Kaggle in `upload/<run name>/<run timestamp>/`.

The folder is flat, as Kaggle uploads it: the chosen checkpoints (optionally stripped to
weights), the run's resolved `config.yml`, `metrics.csv` and `postprocess-tuned.yml` when
it has them, wheels with `--with-package`, the Kaggle metadata and a README.md model card.

It is built in a hidden sibling folder and renamed into place at the end, so the staged
folder is always complete. Staging a run again replaces its folder deliberately (the CLI
says so): the staged folder is an output, rebuilt from the run, never edited by hand.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import torch

from sever.engine.checkpoint import evaluated_weights, load_checkpoint, weights_fingerprint
from sever.engine.runs import run_dir_of
from sever.errors import CheckpointError, SeverError
from sever.fileio import atomic_folder, atomic_path, folders_made, writing
from sever.inference.models import checkpoint_path
from sever.kaggle.card import instance_usage, model_card
from sever.kaggle.staged import MODEL_FRAMEWORK, Staged, StagedCheckpoint, Target
from sever.kaggle.wheels import wheel_contents, write_wheel

log = logging.getLogger(__name__)

UPLOAD_ROOT = Path("upload")
DATASET_LICENSE = "CC0-1.0"
MODEL_LICENSE = "CC0: Public Domain"
COMPETITION = "severstal-steel-defect-detection"
UNKNOWN_OWNER = "YOUR-KAGGLE-USERNAME"
# What a weights-only checkpoint keeps: enough for `sever predict` and the model card.
WEIGHTS_KEYS = ("format", "model", "ema", "config", "epoch", "metrics", "versions")
EXTRAS = ("config.yml", "metrics.csv", "postprocess-tuned.yml")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
Writes = Callable[[], AbstractContextManager[None]]  # a fresh `writing` context per call


# ------------------------------------------------------------------- choosing checkpoints


def find_run(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint) for `-r`: a run directory or one of its checkpoints."""
    path = Path(path)
    if path.is_file():
        return run_dir_of(path), path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory or checkpoint")
    if not (path / "config.yml").is_file():
        raise CheckpointError(
            f"{path}: not a run directory (no config.yml); give saved/<name>/<MMDD-HHMMSS>"
        )
    return path, None


def choose_checkpoints(
    run: Path, epochs: list[int], best: bool, last: bool, given: Path | None = None
) -> list[Path]:
    """The checkpoints named by `-r RUN [-e N ...] [--best] [--last]`, in that order.

    Without any choice (and no checkpoint file in `-r`), the run's best checkpoint.

    Raises:
        CheckpointError: the run kept no checkpoints, or a chosen one is missing.
    """
    kept = sorted((run / "checkpoints").glob("*.pth"))
    if not kept:
        raise CheckpointError(
            f"{run}: this run has no checkpoints in {run / 'checkpoints'} "
            "(it stopped before its first epoch ended)"
        )
    chosen = [given] if given else []
    chosen += [checkpoint_path(run, epoch) for epoch in epochs]
    if best or not (chosen or last):
        chosen.append(checkpoint_path(run, None, "best"))
    if last:
        chosen.append(checkpoint_path(run, None, "last"))
    unique: dict[str, Path] = {}
    for path in chosen:
        unique.setdefault(path.name, path)
    return list(unique.values())


# ----------------------------------------------------------------------------- targets


def slugify(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def parse_handle(text: str, kind: str) -> tuple[str, str, str | None]:
    """(owner, slug, variation) from `--dataset OWNER/SLUG` or `--model OWNER/SLUG[/VAR]`."""
    parts = text.strip("/").split("/")
    form = "OWNER/SLUG" if kind == "dataset" else "OWNER/SLUG or OWNER/SLUG/VARIATION"
    if len(parts) not in ((2,) if kind == "dataset" else (2, 3)) or not all(parts):
        raise SeverError(f"--{kind} {text}: expected {form}")
    for part in parts[1:]:
        if not SLUG.match(part) or len(part) > 50:
            raise SeverError(
                f"--{kind} {text}: '{part}' is not a Kaggle slug (lowercase letters, digits "
                "and single hyphens, at most 50 characters)"
            )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def make_target(
    kind: str, run: Path, owner: str | None, handle: str | None = None, public: bool = False
) -> Target:
    """The dataset (one per run) or model (one per experiment, a variation per run).

    A dataset version replaces all of its files, so each run gets its own dataset and
    uploading a run again adds a version to it. A model groups the runs of one experiment
    name: each run is a PyTorch variation, and uploading it again adds a version.
    """
    name, stamp = run.parent.name, slugify(run.name)
    if handle:
        owner, slug, variation = parse_handle(handle, kind)
        title = slug.replace("-", " ")[:50]
    elif kind == "dataset":
        room = 50 - len(f"sever--{stamp}")
        slug = slugify(f"sever-{slugify(name)[:room]}-{stamp}")
        title, variation = f"sever {name} {run.name}"[:50], None
    else:
        slug = slugify(slugify(f"sever-{name}")[:50])
        title, variation = f"sever {name}"[:50], None
    if kind == "model":
        variation = variation or slugify(f"run-{stamp}")
    return Target(kind, owner or UNKNOWN_OWNER, slug, title, variation, public)


# ----------------------------------------------------------------------------- staging


def strip_to_weights(state: dict) -> dict:
    """The checkpoint without optimiser, scheduler, scaler, saver and RNG state."""
    return {k: state[k] for k in WEIGHTS_KEYS if state.get(k) is not None}


def validated_at(run: Path, epoch: int) -> int | None:
    """The last epoch <= `epoch` with a validation row in metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_loss")]
    epochs = [int(r["epoch"]) for r in rows if int(r["epoch"]) <= epoch]
    return max(epochs) if epochs else None


def stage_checkpoint(
    source: Path, folder: Path, weights_only: bool, run: Path, write: Writes
) -> tuple:
    """Put one checkpoint into `folder`; returns (StagedCheckpoint, its state).

    Args:
        write: a fresh `writing` context for each write (stage's, naming the staged folder).
    """
    state = load_checkpoint(source)
    target = folder / source.name
    stat = source.stat()
    if weights_only:
        with write(), atomic_path(target) as tmp:
            torch.save(strip_to_weights(state), tmp)
            # Keep the source's time: the kaggle client resumes an interrupted upload
            # only for a file with the same path, size and modification time.
            os.utime(tmp, (stat.st_atime, stat.st_mtime))
    else:
        try:
            os.link(source, target)  # checkpoints are replaced, never edited, so a link is safe
        except OSError:
            with write():  # (copy2 reads too: the source was just read whole, above)
                shutil.copy2(source, target)
    metrics = {k: float(v) for k, v in (state.get("metrics") or {}).items()}
    epoch = int(state.get("epoch", 0))
    staged = StagedCheckpoint(
        source.name,
        source,
        epoch,
        metrics,
        validated_at(run, epoch),
        target.stat().st_size,
        source.stat().st_size,
        weights_fingerprint(evaluated_weights(state)),
    )
    return staged, state


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def stage(
    run: Path,
    checkpoints: list[Path],
    target: Target,
    *,
    weights_only: bool = False,
    packages: tuple[str, ...] = (),
    root: Path = UPLOAD_ROOT,
) -> Staged:
    """Build `root/<name>/<stamp>/` for `target` from `run` and its `checkpoints`.

    Args:
        packages: distributions to add as wheels (e.g. 'sever'), built from this
            environment by `sever.kaggle.wheels`.

    Returns:
        The staged folder with everything the model card and the upload need.
    """
    folder = Path(root) / run.parent.name / run.name
    replaced = folder.exists()
    kept = "the earlier staging is kept" if replaced else "nothing is staged"
    then = f"; {kept}; free space and upload again"

    def write() -> AbstractContextManager[None]:
        return writing(folder, "staged folder", then)

    # A failed write (a full disk) leaves the earlier staging as it was, and neither the
    # hidden folder being built nor the folders made for it. Only the writes are
    # `writing`'s: a checkpoint or metrics.csv that cannot be read is no write's failure.
    with ExitStack() as stack:
        with write():
            stack.enter_context(folders_made(folder.parent))
        tmp = stack.enter_context(
            atomic_folder(folder, replace=True, what="staged folder", then=then)
        )
        staged_checkpoints: list[StagedCheckpoint] = []
        config: dict = {}
        versions: dict = {}
        for source in checkpoints:
            log.info("staging %s%s", source, " (weights only)" if weights_only else "")
            item, state = stage_checkpoint(source, tmp, weights_only, run, write)
            staged_checkpoints.append(item)
            config, versions = state["config"], state.get("versions") or {}
        warn_duplicates(staged_checkpoints)
        for name in EXTRAS:
            if (run / name).is_file():
                data, stat = (run / name).read_bytes(), (run / name).stat()  # small files
                with write():
                    (tmp / name).write_bytes(data)
                    os.utime(tmp / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        wheels = []
        for package in packages:
            filename, entries = wheel_contents(package)
            with write():
                wheels.append(write_wheel(tmp / filename, entries).name)
        staged = Staged(
            folder, run, target, config, versions, staged_checkpoints, [], wheels, weights_only
        )
        card = model_card(staged, sorted(p.name for p in tmp.iterdir()))
        usage = instance_usage(staged)
        with write():
            (tmp / "README.md").write_text(card)
            write_metadata(staged, tmp, card, usage)
    staged.replaced = replaced
    metadata = {"dataset-metadata.json", "model-metadata.json", "model-instance-metadata.json"}
    staged.files = sorted(p for p in folder.iterdir() if p.name not in metadata)
    return staged


def warn_duplicates(checkpoints: list[StagedCheckpoint]) -> None:
    """Say when two chosen files hold the same epoch (e.g. --best and --last after a best
    final epoch): both are uploaded, under both names."""
    by_epoch: dict[int, list[str]] = {}
    for c in checkpoints:
        by_epoch.setdefault(c.epoch, []).append(c.name)
    for epoch, names in by_epoch.items():
        if len(names) > 1:
            log.warning(
                "%s hold the same epoch %d; all are uploaded (choose one to upload less)",
                " and ".join(names),
                epoch,
            )


def subtitle(config: dict) -> str:
    model = config.get("model", {})
    text = f"{model.get('arch', '?')} {model.get('encoder', '?')} steel-defect segmentation (sever)"
    return text[:80].ljust(20, ".")


def file_descriptions(staged: Staged, names: list[str]) -> list[dict]:
    described = {c.name: f"checkpoint, epoch {c.epoch}" for c in staged.checkpoints}
    described |= {
        "config.yml": "the run's resolved sever config",
        "metrics.csv": "training and validation metrics, one row per epoch",
        "postprocess-tuned.yml": "post-processing from sever tune, for predict --postprocess",
        "README.md": "model card",
    }
    described |= {w: "wheel for pip install --no-index --no-deps" for w in staged.wheels}
    return [{"path": n, "description": described[n]} for n in names if n in described]


def write_metadata(staged: Staged, folder: Path, card: str, usage: str) -> None:
    """dataset-metadata.json, or model-metadata.json and model-instance-metadata.json."""
    target = staged.target
    names = sorted(p.name for p in folder.iterdir())
    if target.kind == "dataset":
        write_json(
            folder / "dataset-metadata.json",
            {
                "title": target.title,
                "id": f"{target.owner}/{target.slug}",
                "subtitle": subtitle(staged.config),
                "description": card,
                "licenses": [{"name": DATASET_LICENSE}],
                "keywords": [],
                "resources": file_descriptions(staged, names),
            },
        )
        return
    write_json(
        folder / "model-metadata.json",
        {
            "ownerSlug": target.owner,
            "title": target.title,
            "slug": target.slug,
            "subtitle": subtitle(staged.config),
            "isPrivate": not target.public,
            "description": card,
            "publishTime": "",
            "provenanceSources": "",
        },
    )
    write_json(
        folder / "model-instance-metadata.json",
        {
            "ownerSlug": target.owner,
            "modelSlug": target.slug,
            "instanceSlug": target.variation,
            "framework": MODEL_FRAMEWORK,
            "overview": f"sever run {staged.run.parent.name}/{staged.run.name}",
            "usage": usage,
            "licenseName": MODEL_LICENSE,
            "fineTunable": False,
            "trainingData": [f"https://www.kaggle.com/c/{COMPETITION}"],
            "modelInstanceType": "Unspecified",
            "baseModelInstance": "",
            "externalBaseModelUrl": "",
        },
    )
