"""What `sever train` starts: a new run or a resumed one, one run or k folds, in this
process or under torchrun on N GPUs.

The config is loaded and validated before torch, SMP and albumentations are imported (the
imports inside `start_training`, 5-7 s): a typo in a full recipe is reported in about
0.3 s (tests/test_imports.py holds it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from sever.config import load_config
from sever.errors import SeverError, UsageError


@dataclass(frozen=True)
class TrainRequest:
    """`sever train`'s choices.

    Attributes:
        configs: experiment files, merged in order (none with `resume`).
        overrides: KEY.PATH=VALUE, over the files or over the resumed run's config.yml.
        resume: a run directory or one of its checkpoints, to continue.
        folds: the folds of data.folds to train one after another: all, 0-4, 0,2,3 or 3.
        gpus: processes to train with; more than one starts torchrun (`relaunch_with_torchrun`).
        argv: the command line (without the program), which torchrun runs again.
    """

    configs: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    resume: Path | None = None
    folds: str | None = None
    gpus: int = 1
    argv: tuple[str, ...] = ()


def start_training(request: TrainRequest) -> Path:
    """Train what `request` names: resume its run, or load its configs; with `gpus` > 1,
    run the same command under torchrun and exit with its status.

    Returns:
        The run directory; with `folds`, the k-fold parent holding fold<k>/ and ensemble.yml.

    Raises:
        UsageError: --folds with --resume, or neither -c nor --resume.
        SeverError: -c with --resume; whatever loading the config or training raises.
    """
    if request.resume and request.folds:
        raise UsageError(
            "--folds starts new runs; resume one fold on its own: --resume PARENT/foldK"
        )
    if request.resume:
        if request.configs:
            raise SeverError(
                "--resume continues a run with its own config.yml: drop -c "
                "(-o still works, e.g. -o trainer.epochs=300)"
            )
        return resume_training(request.resume, request)
    if not request.configs:
        raise UsageError("give -c EXPERIMENT.yml, or --resume RUN")
    config = load_config(list(request.configs), list(request.overrides))
    if request.gpus > 1:
        relaunch_with_torchrun(request.gpus, list(request.argv))
    if request.folds:
        from sever.engine.kfold import parse_folds, train_folds  # torch: after the config

        return train_folds(config, parse_folds(request.folds, config.data.folds))
    from sever.engine.trainer import train  # torch: after the config

    return train(config)


def resume_training(path: Path, request: TrainRequest) -> Path:
    """Resume the run `path` names, locked before it is read: a process still training it
    could otherwise save an epoch and end between this one's read and its lock, and this
    one would resume from the older state and cut the newer epoch from the history. The
    lock is released on every way out. Under torchrun rank 0 takes it (`train` stops all
    ranks if the others, reading unlocked, read another state); `--gpus` leaves it to the
    rank 0 it starts."""
    from sever.engine.lock import lock_resumed
    from sever.engine.resume import find_resume_point, named_run, resumed_config  # torch

    run = named_run(path) if main_process() and request.gpus <= 1 else None
    lock = lock_resumed(run) if run is not None else None
    try:
        point = find_resume_point(path)
        config = resumed_config(point, list(request.overrides))
        if request.gpus > 1:
            relaunch_with_torchrun(request.gpus, list(request.argv))
        from sever.engine.trainer import train  # torch: after the config

        return train(config, point, held=lock)
    finally:
        if lock is not None:
            lock.release()


def relaunch_with_torchrun(gpus: int, argv: list[str]) -> NoReturn:
    """`sever train --gpus N ...` is `torchrun --standalone --nproc_per_node=N -m sever
    train ...`: start it, wait, and exit with its status."""
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--gpus starts torchrun itself; under torchrun, drop it")
    i = argv.index("--gpus")
    args = argv[:i] + argv[i + 2 :]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", f"--nproc_per_node={gpus}", "-m", "sever", *args]
    sys.exit(subprocess.call(command))


def main_process() -> bool:
    """Under torchrun, rank 0 speaks for all."""
    return int(os.environ.get("RANK", "0")) == 0
