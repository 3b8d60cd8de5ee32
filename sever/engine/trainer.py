"""The fit loop: `train(config) -> run directory`.

Reproducibility comes from seeding by (seed, epoch) at every epoch's start: the sampler's
order, each item's augmentation and torch's RNG (dropout) depend on nothing else (the
loaders draw from their own generators), so a run resumed from the end of epoch k trains
exactly like one that never stopped. A run stopped mid-epoch (Ctrl-C, SIGTERM) saves its
RNG states, loss sums and batch count too, and continues from that very step.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import segmentation_models_pytorch as smp
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import ReduceLROnPlateau

from sever import __version__
from sever.config import Config, config_dict
from sever.data.checks import check_images
from sever.data.loaders import Loaders, build_loaders, load_labels
from sever.data.sampling import CropSizes
from sever.data.splits import make_split, read_split, write_split
from sever.engine import steps
from sever.engine.checkpoint import FORMAT_VERSION, initial_weights, rng_state, set_rng_state
from sever.engine.distributed import (
    World,
    checked_on_main,
    close_world,
    gathered,
    init_world,
    share,
)
from sever.engine.interrupt import EpochStart, StopEpoch, StopRequest
from sever.engine.lock import RunLock, lock_resumed, lock_run
from sever.engine.logs import Board, MetricsLog
from sever.engine.parts import Parts, build_parts, describe, pick_device
from sever.engine.resume import ResumePoint, finished, record_config, remove_leftovers
from sever.engine.runs import create_run_dir
from sever.engine.saver import INTERRUPTED, CheckpointSaver
from sever.engine.steps import Progress
from sever.errors import CheckpointError, ConfigError, Interrupted, WriteError
from sever.fileio import existing_ancestor, probe_writable, writing
from sever.logsetup import add_file_log, remove_handler

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """What a run is made of, built and checked before its directory exists."""

    split: pd.DataFrame
    loaders: Loaders
    parts: Parts
    resume: ResumePoint | None = None
    init_from: dict[str, Any] | None = None  # where a new run's weights came from (model.init_from)


def train(
    config: Config,
    resume: ResumePoint | None = None,
    new_run: Callable[[], Path] | None = None,
    held: RunLock | None = None,
) -> Path:
    """Train `config`, or continue the run `resume` points at. Under torchrun every
    process calls this; rank 0 alone writes the run directory.

    Everything checkable (the device, save_dir, then data, images, split, model and
    weights) is checked before the run directory is created, so a refused run leaves
    nothing behind. The run is locked while it trains (sever.engine.lock): a second
    process is refused.

    Args:
        new_run: creates the new run's directory (k-fold names its folds); default
            `save_dir/<name>/<MMDD-HHMMSS>`.
        held: `resume`'s run, already locked by this process (rank 0) before the run was
            read; released here all the same.

    Returns:
        The run directory.
    """
    owned = not dist.is_initialized()  # a caller (k-fold) may hold the process group
    world = init_world(pick_device(config.trainer.device).type)
    lock: RunLock | None = None
    try:
        state = resume.state if resume else None
        check_world_size(state, world, resume)
        if resume:
            # Before anything writes the run: a second process on it is refused. `held`:
            # start_training locked it before reading it (sever.engine.launch).
            lock = checked_on_main(lambda: held or lock_resumed(resume.run), world)
            check_same_point(resume, world)
        if resume and (done := finished(config, state)):
            if resume.latest:
                checked_on_main(partial(complete_last_epoch, config, resume), world)
            log.warning("%s: %s", resume.run, done)
            return resume.run
        if lock is not None:
            lock.announce()
        if not resume:  # before the heavy work: labels, images, loaders, model, weights
            checked_on_main(lambda: check_save_dir(config.trainer.save_dir), world)
        setup = prepare(config, split_file(resume), world, fresh=resume is None)
        setup.resume = resume
        if resume:
            run = resume.run
        else:
            make = new_run or (lambda: create_run_dir(config))
            made = share(checked_on_main(make, world), world)
            assert made is not None
            run = made
            lock = checked_on_main(lambda: lock_run(run), world)
            if lock is not None:
                lock.announce()
        handler = add_file_log(run / "train.log") if world.main else None
        if not world.main:
            quiet()
        try:
            if resume and world.main:
                remove_leftovers(run)
                with writing(run / "config.yml", "config", retry_hint(run)):
                    record_config(run, config)
            return fit(config, run, setup, world)
        finally:
            if handler is not None:
                remove_handler(handler)
            logging.getLogger("sever").setLevel(logging.DEBUG)
    finally:
        if lock is not None:
            lock.release()
        if owned:
            close_world(world)


def complete_last_epoch(config: Config, resume: ResumePoint) -> None:
    """What a kill after the final epoch's last.pth left undone: its links, its
    metrics.csv row (from the checkpoint's history) and the temporaries of those writes.
    Resuming a run with epochs left redoes these in `fit`; a finished run has no `fit`.
    A run that ended normally is left as it is."""
    assert resume.state is not None  # finished() said so
    epoch, trainer = resume.state["epoch"], config.trainer
    remove_leftovers(resume.run)
    saver = CheckpointSaver(
        resume.run / "checkpoints", trainer.monitor_mode, trainer.save_top_k, trainer.save_period
    )
    saver.load_state_dict(resume.state["saver"])
    saver.relink(epoch)
    metrics = MetricsLog(resume.run / "metrics.csv", steps.metric_columns(config))
    metrics.resume(epoch, resume.state.get("history"))


def quiet() -> None:
    """Ranks other than 0 keep to warnings, so each message appears once."""
    logging.getLogger("sever").setLevel(logging.WARNING)


def check_world_size(
    state: dict[str, Any] | None, world: World, resume: ResumePoint | None
) -> None:
    saved = (state or {}).get("world_size", 1)
    if resume and state is not None and saved != world.size:
        raise CheckpointError(
            f"{resume.checkpoint}: trained with {saved} process(es), resumed with {world.size}; "
            f"resume with the same number (torchrun --nproc_per_node={saved}) so the batches "
            "and schedule continue exactly"
        )


def check_same_point(resume: ResumePoint, world: World) -> None:
    """Under torchrun only rank 0 locks the run before reading it: the others, which read
    it unlocked, must have read the same state (another sever that saved an epoch and
    ended as they started could have given them an older one), else all stop.

    Raises:
        CheckpointError: on every rank, when a rank read another checkpoint state.
    """
    state = resume.state or {}
    batches = (state.get("partial") or {}).get("batches")
    mark = (str(resume.checkpoint), state.get("epoch"), state.get("step"), batches)
    if len(set(gathered(mark, world))) > 1:
        raise CheckpointError(
            f"{resume.run}: changed while its {world.size} processes read it (another sever "
            "saved it as they started); resume again"
        )


def split_file(resume: ResumePoint | None) -> Path | None:
    """The split to read back: a resumed run's split.csv, unless the run was killed before
    it wrote one (and before any checkpoint): it deals the same split again."""
    if resume is None:
        return None
    path = resume.run / "split.csv"
    return path if resume.state is not None or path.exists() else None


def check_save_dir(save_dir: Path) -> None:
    """trainer.save_dir must take new files: a file created and removed there (or in the
    nearest folder above it that exists) says so, where `os.access` would say yes to root
    on a read-only mount or /proc."""
    existing = save_dir if save_dir.exists() else existing_ancestor(save_dir.absolute())
    if not existing.is_dir():
        raise ConfigError(
            f"trainer.save_dir: {existing} is a file, not a folder; choose another save_dir"
        )
    probe_writable(save_dir, "trainer.save_dir", ConfigError)


def prepare(config: Config, split_file: Path | None, world: World, fresh: bool = True) -> Setup:
    """Read and check the data, deal (or read back) the split and build the loaders and
    the model, optimiser and schedule: every check that can fail, before any output.

    Args:
        fresh: a new run, which starts from `model.init_from`'s weights if set (a resumed
            one continues from its own).
    """
    labels = load_labels(config)
    if split_file is not None:
        split = read_split(split_file)
    else:
        split = make_split(
            labels.class_sets(),
            config.data.val_fraction,
            config.data.folds,
            config.data.fold,
            config.seed,
        )
    if config.data.check:
        names = split["ImageId"].tolist()
        check_images(config.data.dir / "train_images", names, config.data.image_size)
    torch.manual_seed(config.seed)  # the initial weights, the same on every process
    loaders = build_loaders(
        config, labels, split, torch.cuda.is_available(), world.rank, world.size
    )
    parts = build_parts(config, steps.optimizer_steps(len(loaders.train), config.trainer), world)
    origin = None
    if fresh and config.model.init_from is not None:
        origin = initial_weights(config.model.init_from, parts.model)
        if parts.ema is not None:  # the EMA weights start where the model does
            parts.ema.module.load_state_dict(parts.model.state_dict())
        log.info("weights from %s (epoch %s)", origin["checkpoint"], origin["epoch"])
    return Setup(split, loaders, parts, init_from=origin)


def fit(config: Config, run: Path, setup: Setup, world: World = World()) -> Path:
    if world.main:
        with writing(run / "split.csv", "split", retry_hint(run)):
            write_split(setup.split, run / "split.csv")
    parts, loaders, trainer, resume = setup.parts, setup.loaders, config.trainer, setup.resume
    state = resume.state if resume else None
    progress = Progress(origin=setup.init_from)
    saver = CheckpointSaver(
        run / "checkpoints", trainer.monitor_mode, trainer.save_top_k, trainer.save_period
    )
    start = restore(resume, parts, saver, progress) if resume and resume.state else None
    if resume and resume.latest and world.main:
        saver.relink(progress.epoch)  # a kill between last.pth and its links
    metrics = MetricsLog(run / "metrics.csv", steps.metric_columns(config))
    if world.main:
        metrics.resume(progress.epoch, state.get("history") if state else [])
    board = Board(
        run, trainer.tensorboard and world.main, purge_step=progress.step if state else None
    )
    log.info(
        "run %s: %d training / %d validation images on %s%s",
        run,
        loaders.train_images,
        loaders.val_images,
        describe(parts),
        f" x {world.size} processes" if world.distributed else "",
    )
    with StopRequest() as stop:
        try:
            loop(config, run, parts, loaders, progress, saver, metrics, board, stop, start)
            summarise(config, run, saver, progress, board)
        except StopEpoch as stopped:
            stop_save = partial(save_stop, config, run, parts, progress, saver, metrics, stopped)
            checked_on_main(stop_save, world)
            where = f"in epoch {progress.epoch + 1} after {stopped.done.batches} batches"
            raise interrupted(run, stop, f"{where}, saved to checkpoints/{INTERRUPTED}") from None
        except KeyboardInterrupt:
            kept = (
                f"checkpoints/last.pth keeps epoch {progress.epoch}"
                if progress.epoch
                else "no epoch completed, so resuming starts it over"
            )
            log.warning("interrupted; %s; resume with: sever train --resume %s", kept, run)
            raise
        finally:
            board.close()
    return run


def interrupted(run: Path, stop: StopRequest, where: str) -> Interrupted:
    assert stop.signum is not None
    name = signal.Signals(stop.signum).name
    return Interrupted(
        f"stopped by {name} {where}; resume with: sever train --resume {run}", stop.signum
    )


def partial_state(epoch: int, done: EpochStart) -> dict[str, Any]:
    """A mid-epoch stop: which epoch, how many of its batches are trained, and the loss
    sums so far (the RNG states at the stop are the checkpoint's `rng`)."""
    sums = {name: value.detach().cpu() for name, value in done.sums.items()}
    return {"epoch": epoch, "batches": done.batches, "sums": sums}


def loop(
    config: Config,
    run: Path,
    parts: Parts,
    loaders: Loaders,
    progress: Progress,
    saver: CheckpointSaver,
    metrics: MetricsLog,
    board: Board,
    stop: StopRequest,
    start: EpochStart | None = None,
) -> None:
    trainer = config.trainer
    for epoch in range(progress.epoch + 1, trainer.epochs + 1):
        started = time.time()
        begin, start = start or EpochStart(), None
        if not begin.batches:  # mid-epoch, the RNG continues from the stop (restore)
            torch.manual_seed(config.seed * 100_003 + epoch)
        weights = parts.loss.set_epoch(epoch)
        if weights is not None:
            terms = ", ".join(f"{name} {weight:g}" for name, weight in weights.items())
            log.info("epoch %d: the loss is now %s (loss.stages)", epoch, terms)
        loaders.sampler.set_epoch(epoch, begin.batches * trainer.batch_size)
        if isinstance(loaders.sampler, CropSizes):
            used = loaders.sampler.describe(steps.epoch_batches(len(loaders.train), trainer))
            log.info("epoch %d: crops %s (data.crops)", epoch, used)
        row = steps.train_one_epoch(
            config, parts, loaders.train, epoch, progress, board, run, begin, stop
        )
        value = None
        if epoch % trainer.val_every == 0 or epoch == trainer.epochs:
            val = steps.validate(config, parts, loaders.val, epoch, board)
            row |= val
            progress.last_val = val
            value = row[trainer.monitor_metric]
            if isinstance(parts.scheduler, ReduceLROnPlateau):
                parts.scheduler.step(value)
        improved = saver.record(epoch, value)
        if value is not None:
            progress.bad_validations = 0 if improved else progress.bad_validations + 1
        progress.epoch = epoch
        row |= steps.learning_rates(parts.optimizer)
        row |= {"epoch": epoch, "seconds": round(time.time() - started, 2)}
        # Rank 0 writes; the others wait (nobody runs ahead of, or resumes from, an unwritten
        # checkpoint) and stop with its error if a write fails.
        checked_on_main(
            partial(save_epoch, config, run, parts, progress, saver, metrics, row), parts.world
        )
        log.info(steps.epoch_line(row, trainer.monitor_metric, improved))
        if trainer.early_stop and progress.bad_validations >= trainer.early_stop:
            log.info(
                "early stop: %s did not improve for %d validations (best %.4f, epoch %s)",
                trainer.monitor_metric,
                progress.bad_validations,
                saver.best,
                saver.best_epoch,
            )
            break
        if epoch < trainer.epochs and stop.requested(parts.world, parts.device):
            raise interrupted(run, stop, f"after epoch {epoch}, kept in checkpoints/last.pth")


def save_epoch(
    config: Config,
    run: Path,
    parts: Parts,
    progress: Progress,
    saver: CheckpointSaver,
    metrics: MetricsLog,
    row: dict[str, Any],
) -> None:
    """An epoch's writes: its checkpoint first, then its metrics.csv row, so the file never
    holds an epoch that no checkpoint has (a failed checkpoint leaves the previous one and
    the rows before). The checkpoint's history holds the row too: a metrics.csv write that
    fails after it is made good on resume.

    Raises:
        WriteError: naming the file (a full disk, say), what is kept and how to go on.
    """
    epoch, line = progress.epoch, metrics.line(row)
    state = checkpoint(config, parts, progress, saver, [*metrics.rows, line])
    try:
        saver.write(state, epoch)
    except WriteError as exc:
        done = epoch - 1 if exc.path == saver.folder / "last.pth" else epoch
        raise WriteError(f"{exc}{resume_hint(run, done)}", exc.path) from None
    metrics.append(line, resume_hint(run, epoch, " (resuming rebuilds metrics.csv from it)"))


def save_stop(
    config: Config,
    run: Path,
    parts: Parts,
    progress: Progress,
    saver: CheckpointSaver,
    metrics: MetricsLog,
    stopped: StopEpoch,
) -> None:
    """A mid-epoch stop's state, to checkpoints/interrupted.pth."""
    snapshot = checkpoint(config, parts, progress, saver, metrics.rows)
    snapshot["partial"] = partial_state(progress.epoch + 1, stopped.done)
    try:
        saver.write_interrupted(snapshot)
    except WriteError as exc:
        raise WriteError(f"{exc}{resume_hint(run, progress.epoch)}", exc.path) from None


def resume_hint(run: Path, epoch: int, note: str = "") -> str:
    """`; checkpoints/last.pth keeps epoch 3; ...`: what a failed write left, for its error."""
    kept = f"checkpoints/last.pth keeps epoch {epoch}{note}" if epoch else "no epoch is saved"
    return f"; {kept}{retry_hint(run)}"


def retry_hint(run: Path) -> str:
    return f"; free space (or fix the folder), then: sever train --resume {run}"


def checkpoint(
    config: Config,
    parts: Parts,
    progress: Progress,
    saver: CheckpointSaver,
    history: list[dict[str, str]],
) -> dict[str, Any]:
    """The plain-dict checkpoint of the current state; `history`: metrics.csv's rows."""
    return {
        "format": FORMAT_VERSION,
        "model": parts.model.state_dict(),
        "ema": parts.ema.state_dict() if parts.ema else None,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
        "epoch": progress.epoch,
        "step": progress.step,
        "bad_validations": progress.bad_validations,
        "metrics": {k: float(v) for k, v in progress.last_val.items()},
        "saver": saver.state_dict(),
        "history": [dict(line) for line in history],
        "rng": rng_state(),
        "world_size": parts.world.size,
        "init_from": progress.origin,
        "config": config_dict(config),
        "versions": {
            "sever": __version__,
            "torch": str(torch.__version__),
            "smp": str(smp.__version__),
        },
    }


def restore(
    resume: ResumePoint, parts: Parts, saver: CheckpointSaver, progress: Progress
) -> EpochStart | None:
    """Load a checkpoint's state into the parts; for a mid-epoch stop, where its epoch
    continues."""
    state = resume.state
    assert state is not None  # a checkpoint find_resume_point found resumable
    try:
        parts.model.load_state_dict(state["model"])
        if parts.ema is not None and state.get("ema"):
            parts.ema.load_state_dict(state["ema"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if parts.scaler is not None and state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(
            f"{resume.checkpoint}: does not fit the model and optimiser its config builds "
            f"({first}); was it written by another version of sever?"
        ) from None
    saver.load_state_dict(state["saver"])
    progress.epoch, progress.step = state["epoch"], state["step"]
    progress.bad_validations = state["bad_validations"]
    progress.last_val = dict(state.get("metrics", {}))
    progress.origin = state.get("init_from")
    set_rng_state(state["rng"])
    partial = state.get("partial")
    if not partial:
        log.info("resumed after epoch %d (step %d)", progress.epoch, progress.step)
        return None
    log.info(
        "resumed in epoch %d after %d batches (step %d)",
        partial["epoch"],
        partial["batches"],
        progress.step,
    )
    sums = {name: value.to(parts.device) for name, value in partial["sums"].items()}
    return EpochStart(partial["batches"], sums)


def summarise(
    config: Config, run: Path, saver: CheckpointSaver, progress: Progress, board: Board
) -> None:
    val = progress.last_val
    value = saver.best if saver.best is not None else math.nan
    best = f"best {config.trainer.monitor_metric} {value:.4f} at epoch {saver.best_epoch}"
    if val and "val_dice_mean" in val:
        log.info(
            "last validation: dice_mean %.4f (all-empty baseline %.4f), dice on defect pairs "
            "%.4f; %s",
            val["val_dice_mean"],
            val["val_empty_baseline"],
            val["val_dice_positive"],
            best,
        )
    elif val:
        f1 = ", ".join(f"{val[f'val_f1_{c}']:.3f}" for c in range(1, config.model.classes + 1))
        log.info(
            "last validation: presence F1 mean %.4f (per class %s); %s",
            val["val_f1_mean"],
            f1,
            best,
        )
    board.hparams(steps.hparams(config), {"hparam/best": saver.best or math.nan})
    log.info("TensorBoard: tensorboard --logdir %s", config.trainer.save_dir)
