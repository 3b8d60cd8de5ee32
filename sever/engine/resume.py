"""Where a resumed run continues: its directory, the checkpoint to load, and the config.

`sever train --resume RUN` takes, in order, `checkpoints/interrupted.pth` (a run stopped
mid-epoch by Ctrl-C or SIGTERM), `checkpoints/last.pth` (the last completed epoch), or
nothing (the run was killed before its first epoch ended: it starts over in its folder,
with its config.yml and split.csv). A checkpoint file names the point exactly.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sever import fileio
from sever.config import Config, config_dict, config_from_dict, dump_config, load_config
from sever.engine.checkpoint import load_checkpoint
from sever.engine.runs import run_dir_of
from sever.engine.saver import INTERRUPTED
from sever.errors import CheckpointError, ConfigError
from sever.fileio import atomic_path

log = logging.getLogger(__name__)

# Keys a resumed run cannot change: the checkpoint's weights, optimiser and plateau state
# would not fit or would silently override them, and split.csv fixes the split.
FIXED_ON_RESUME = (
    "task",
    "model.",
    "optimizer.",
    "scheduler.type",
    "scheduler.plateau_",
    "data.folds",
    "data.fold",
    "data.val_fraction",
)
# Keys that also fix where a mid-epoch stop continues (the batches already trained).
FIXED_MID_EPOCH = ("trainer.batch_size", "trainer.accumulate", "trainer.steps_per_epoch")


@dataclass
class ResumePoint:
    """A run to continue. `state` is None when the run has no checkpoint yet."""

    run: Path
    checkpoint: Path | None
    state: dict[str, Any] | None

    @property
    def mid_epoch(self) -> bool:
        return bool(self.state and self.state.get("partial"))

    @property
    def latest(self) -> bool:
        """The run's newest state (not an older epoch's file, which rewinds the run)."""
        return self.checkpoint is not None and self.checkpoint.name in ("last.pth", INTERRUPTED)


def find_resume_point(path: Path) -> ResumePoint:
    """The run and checkpoint that `--resume PATH` (a run directory or a checkpoint) means.

    Raises:
        CheckpointError: PATH is neither, or its checkpoint is unreadable.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.yml").is_file():
            raise CheckpointError(
                f"{path}: not a run directory (no config.yml); give --resume a run directory "
                "(saved/NAME/STAMP) or one of its checkpoints"
            )
        for name in (INTERRUPTED, "last.pth"):
            checkpoint = path / "checkpoints" / name
            if checkpoint.is_file():
                return ResumePoint(path, checkpoint, resumable(checkpoint, path))
        return ResumePoint(path, None, None)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such run directory or checkpoint (--resume)")
    run = path.resolve().parent.parent
    state = resumable(path, run if (run / "config.yml").is_file() else None)
    return ResumePoint(run_dir_of(path), path, state)


def named_run(path: Path) -> Path | None:
    """The run directory `--resume PATH` names, as `find_resume_point` finds it, without
    reading a checkpoint (to lock it first); None where PATH names no run (
    `find_resume_point` says what it is instead)."""
    path = Path(path)
    run = path if path.is_dir() else path.resolve().parent.parent if path.is_file() else None
    return run if run is not None and (run / "config.yml").is_file() else None


def resumable(path: Path, run: Path | None = None) -> dict[str, Any]:
    """The checkpoint at `path`, which must hold the training state, not weights only.

    Args:
        run: the run directory `path` is in: an unreadable checkpoint's message then names
            the newest intact one to resume from instead.

    Raises:
        CheckpointError: unreadable, or weights only (an upload's, an average's).
    """
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        if run is None:
            raise
        raise CheckpointError(f"{exc}; {intact_instead(run, path)}") from None
    missing = [k for k in ("optimizer", "scheduler", "saver", "rng", "step") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: cannot resume from a weights-only checkpoint (no {', '.join(missing)}); "
            "resume from the run's own checkpoints/last.pth"
        )
    return state


def intact_instead(run: Path, damaged: Path) -> str:
    """What to resume from when `damaged` does not load (a truncated copy of the run): the
    newest checkpoint of the run that does, last.pth first after a damaged interrupted.pth."""
    folder = run / "checkpoints"
    epochs = sorted(folder.glob("checkpoint-epoch*.pth"), key=epoch_of, reverse=True)
    candidates = [folder / "last.pth"] if damaged.name == INTERRUPTED else []
    for candidate in [*candidates, *epochs, folder / "model_best.pth"]:
        if not candidate.is_file() or os.path.samefile(candidate, damaged):
            continue  # a hard link of the damaged file is damaged too
        try:
            state = resumable(candidate)
        except CheckpointError:
            continue
        return (
            f"the newest intact checkpoint is epoch {state['epoch']}'s: "
            f"sever train --resume {candidate}"
        )
    return "the run has no intact checkpoint to resume from; train it again"


def epoch_of(checkpoint: Path) -> int:
    found = re.search(r"(\d+)\.pth$", checkpoint.name)
    return int(found.group(1)) if found else -1


def resumed_config(point: ResumePoint, overrides: list[str]) -> Config:
    """The run's own config (its checkpoint's, else its config.yml) with `overrides`.

    Raises:
        ConfigError: an override changes what the checkpoint fixes (the model, the
            optimiser, the split; mid-epoch also the batches).
    """
    fixed = FIXED_ON_RESUME + (FIXED_MID_EPOCH if point.mid_epoch else ())
    if point.state is None:
        stored = load_config(point.run / "config.yml")
    else:
        source = f"{point.checkpoint} (config)"
        stored = config_from_dict(point.state["config"], source)
    try:
        if point.state is None:
            config = load_config(point.run / "config.yml", overrides)
        else:
            config = config_from_dict(point.state["config"], source, overrides)
    except ConfigError:
        # An override of a fixed key is refused as such, even where the value it would
        # give does not validate with the run's other settings (model.classes=3 against
        # its four min_pixels).
        stored_flat = flatten(config_dict(stored))
        for key in (o.partition("=")[0].strip() for o in overrides):
            if key.startswith(fixed):
                raise refusal(key, stored_flat.get(key), point) from None
        raise
    for key, (old, _) in changed_keys(stored, config).items():
        if key.startswith(fixed):
            raise refusal(key, old, point)
    return config


def refusal(key: str, old: object, point: ResumePoint) -> ConfigError:
    """-o KEY changes what a resumed run keeps: one line naming it and what to do."""
    where = "a run stopped mid-epoch" if key.startswith(FIXED_MID_EPOCH) else "a run"
    return ConfigError(
        f"-o {key}: {where} resumes with its own {key} ({old!r}); start a new run "
        f"instead: sever train -c {point.run / 'config.yml'} -o {key}=..."
    )


def changed_keys(before: Config, after: Config) -> dict[str, tuple[object, object]]:
    """Dotted key -> (old, new) for every setting that differs."""
    old, new = flatten(config_dict(before)), flatten(config_dict(after))
    return {
        k: (old.get(k), new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    }


def flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def record_config(run: Path, config: Config) -> None:
    """Rewrite the run's config.yml to what is being run now, naming what changed."""
    path = run / "config.yml"
    before = load_config(path) if path.is_file() else None
    if before is not None:
        for key, (old, new) in changed_keys(before, config).items():
            log.info("resumed with %s = %r (was %r); config.yml updated", key, new, old)
    with atomic_path(path) as tmp:
        tmp.write_text(dump_config(config))


def finished(config: Config, state: Mapping[str, Any] | None) -> str | None:
    """Why a resumed run has nothing left to do, or None."""
    if not state or state.get("partial"):
        return None
    epoch, trainer = state["epoch"], config.trainer
    if epoch >= trainer.epochs:
        return (
            f"already finished: epoch {epoch} of trainer.epochs {trainer.epochs}; to train "
            f"longer, resume with -o trainer.epochs={epoch + max(1, epoch // 2)} (or more)"
        )
    if trainer.early_stop and state.get("bad_validations", 0) >= trainer.early_stop:
        return (
            f"already stopped early at epoch {epoch}: {state['bad_validations']} validations "
            f"without improvement (trainer.early_stop {trainer.early_stop}); to go on, resume "
            f"with a larger -o trainer.early_stop"
        )
    return None


def remove_leftovers(run: Path) -> list[Path]:
    """Delete temporary files that a killed writer left (`.NAME.tmp-PID`) in the run."""
    return [*fileio.remove_leftovers(run), *fileio.remove_leftovers(run / "checkpoints")]
