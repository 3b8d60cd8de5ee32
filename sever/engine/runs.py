"""Run directories: `saved/<name>/<MMDD-HHMMSS>/`, created once and never reused."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sever.config import Config, dump_config
from sever.errors import CheckpointError
from sever.fileio import atomic_path, folders_made, writing


def create_run_dir(config: Config, folder: Path | None = None) -> Path:
    """A new directory for this run; a clash (two runs in one second) gets a suffix.

    Args:
        folder: create exactly this directory instead (a k-fold parent's `fold3/`, say);
            its parent must exist and it must not.

    Raises:
        WriteError: its config.yml could not be written (a full disk); nothing is left of
            the run, nor of the folders made for it.
    """
    parent = folder.parent if folder is not None else config.trainer.save_dir / config.name
    with folders_made(parent):
        run = make_folder(folder, parent)
        try:
            (run / "checkpoints").mkdir()
            with writing(run / "config.yml", "config", "; free space and train again"):
                with atomic_path(run / "config.yml") as tmp:
                    tmp.write_text(dump_config(config))
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            raise
    return run


def make_folder(folder: Path | None, parent: Path) -> Path:
    if folder is not None:
        try:
            folder.mkdir()
        except FileExistsError:
            raise CheckpointError(
                f"{folder}: already exists; runs never reuse a directory"
            ) from None
        return folder
    stamp = time.strftime("%m%d-%H%M%S")
    for attempt in range(1000):
        run = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        return run
    raise CheckpointError(f"{parent}: could not create a new run directory")


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding `checkpoints/<file>`."""
    run = checkpoint.resolve().parent.parent
    if not (run / "config.yml").is_file():
        raise CheckpointError(f"{checkpoint}: not inside a run directory (no config.yml)")
    return run
