"""K-fold training: every fold of `data.folds` in turn, under one parent directory.

    saved/<name>/<MMDD-HHMMSS>-kfold/
      fold0/ fold1/ ...    ordinary run directories (data.fold set to the fold)
      ensemble.yml         each fold's model_best.pth, for `sever predict -c`

Every fold trains with the same seed, so `make_split` deals the same folds each time and
fold k's validation images are exactly fold k: the folds' validation sets are disjoint and
cover every image, which is what lets `sever tune` score them out-of-fold.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from contextlib import suppress
from pathlib import Path

import yaml

from sever.config import Config
from sever.engine.checkpoint import resolve_checkpoint
from sever.engine.distributed import barrier, close_world, init_world
from sever.engine.parts import pick_device
from sever.engine.runs import create_run_dir
from sever.engine.trainer import train
from sever.errors import CheckpointError, ConfigError
from sever.fileio import atomic_path, folders_made, writing

log = logging.getLogger(__name__)

SPEC_FORMS = "'all', a fold (3), a range (0-4) or a list (0,2,3)"


def parse_folds(spec: str, folds: int | None) -> list[int]:
    """The folds that `--folds SPEC` names, ascending: 'all', '3', '0-4', '0,2,3' (or a mix
    such as '0-1,3').

    Args:
        folds: k, the config's data.folds (None when unset).

    Raises:
        ConfigError: data.folds unset, a malformed spec, a fold out of range or named twice.
    """
    text = spec.strip()
    if folds is None:
        raise ConfigError(
            f"--folds {spec}: data.folds is not set; set it in the config or with -o data.folds=5"
        )
    if text == "all":
        return list(range(folds))
    chosen: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match:
            raise ConfigError(f"--folds {spec}: expected {SPEC_FORMS}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise ConfigError(f"--folds {spec}: range {first}-{last} runs backwards")
        if last >= folds:
            raise ConfigError(
                f"--folds {spec}: fold {max(first, folds)} is out of range for "
                f"data.folds={folds} (folds 0-{folds - 1})"
            )
        chosen += range(first, last + 1)
    repeated = sorted({f for f in chosen if chosen.count(f) > 1})
    if repeated:
        raise ConfigError(f"--folds {spec}: fold {repeated[0]} is named twice")
    return sorted(chosen)


def train_folds(config: Config, folds: list[int]) -> Path:
    """Train `config` once per fold (fold f validates), then write `ensemble.yml`.

    A failing fold stops the loop with its error; the folds before it stay as they are,
    and no ensemble.yml is written.

    Returns:
        The parent directory holding `fold<f>/` and `ensemble.yml`.
    """
    if not folds:
        raise ConfigError("no folds to train (give --folds all, 0-4, 0,2,3 or 3)")
    # Under torchrun, every process trains every fold; rank 0 alone writes.
    world = init_world(pick_device(config.trainer.device).type)
    parent = Parent(config)
    try:
        runs = [train_fold(config, fold, folds, parent) for fold in folds]
        if world.main:
            write_ensemble(runs[0].parent, runs, config.task)
        barrier(world)
    finally:
        close_world(world)
    return runs[0].parent


class Parent:
    """The k-fold parent directory, created (by rank 0) when the first fold has passed its
    checks, so that a refused k-fold leaves nothing behind."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.path: Path | None = None

    def new_fold(self, config: Config) -> Path:
        """The run directory of the fold `config.data.fold`, with its config."""
        fold = config.data.fold
        if self.path is not None:
            run = create_run_dir(config, self.path / f"fold{fold}")
        else:
            # the first fold: one that cannot be created (a full disk) leaves neither the
            # parent nor the folders made for it
            with folders_made(self.config.trainer.save_dir / self.config.name):
                self.path = create_parent(self.config)
                try:
                    run = create_run_dir(config, self.path / f"fold{fold}")
                except BaseException:
                    with suppress(OSError):
                        self.path.rmdir()  # empty: create_run_dir leaves nothing of a fold
                    self.path = None
                    raise
        log.info("fold %d: %s", fold, run)
        return run


def train_fold(config: Config, fold: int, folds: list[int], parent: Parent) -> Path:
    fold_config = config.model_copy(deep=True)
    fold_config.data.fold = fold  # validated on assignment
    log.info("fold %d (%d of %d)", fold, folds.index(fold) + 1, len(folds))
    try:
        return train(fold_config, new_run=lambda: parent.new_fold(fold_config))
    except BaseException:
        done = ", ".join(f"fold{f}" for f in folds[: folds.index(fold)]) or "none"
        where = f" stay in {parent.path}" if parent.path else ""
        log.error("k-fold stopped in fold %d; completed folds (%s)%s", fold, done, where)
        raise


def create_parent(config: Config) -> Path:
    """A new `save_dir/<name>/<MMDD-HHMMSS>-kfold/`; a clash gets a number before `-kfold`."""
    base = config.trainer.save_dir / config.name
    stamp = time.strftime("%m%d-%H%M%S")
    with writing(base, "k-fold folder", "; free space and train again"):
        base.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            parent = base / (f"{stamp}-kfold" if attempt == 0 else f"{stamp}-{attempt}-kfold")
            try:
                parent.mkdir()
            except FileExistsError:
                continue
            return parent
    raise CheckpointError(f"{base}: could not create a new k-fold directory")


def write_ensemble(parent: Path, runs: list[Path], task: str = "segment") -> Path:
    """`parent/ensemble.yml`: each run's best checkpoint, weight 1, mean, no TTA, under a
    header with the commands that use it (for classifiers: beside the segmenters).

    Paths are written as the runs are named (relative to the working directory when
    trainer.save_dir is), like every other path `sever predict` reads.
    """
    spec = {
        "models": [
            {"checkpoint": str(resolve_checkpoint(run, "best")), "weight": 1.0} for run in runs
        ],
        "tta": "none",
        "averaging": "mean",
    }
    q = shlex.quote
    path, tuned = parent / "ensemble.yml", parent / "postprocess-tuned.yml"
    runs_args = " ".join(f"-r {q(str(r))}" for r in runs)
    if task == "classify":
        header = (
            f"# K-fold classifiers of {parent}: the best checkpoint of each fold. They give\n"
            "# class presence only: list these models in a segmenters' ensemble file, where\n"
            "# they gate or scale the masks; tune the gates out-of-fold with\n"
            f"# sever tune -r SEGMENTER_FOLD0 -r SEGMENTER_FOLD1 ... {runs_args}\n"
        )
    else:
        header = (
            f"# K-fold ensemble of {parent}: the best checkpoint of each fold.\n"
            f"# Tune out-of-fold: sever tune {runs_args} --out {q(str(tuned))}\n"
            f"#   then add the line `postprocess: {tuned}` below.\n"
            f"# Predict: sever predict -c {q(str(path))} --images DIR --out submission.csv\n"
        )
    then = (
        f"; the folds' runs in {parent} are complete: free space, then list each fold's "
        "checkpoints/model_best.pth in it"
    )
    with writing(path, "k-fold ensemble file", then), atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return path
