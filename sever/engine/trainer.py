"""The fit loop: `train(config) -> run directory`.

Reproducibility comes from seeding by (seed, epoch) at every epoch's start: the sampler's
order, each item's augmentation and torch's RNG (dropout) depend on nothing else, so a run
resumed from the end of epoch k trains exactly like one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from sever.config import Config, config_dict
from sever.data.loaders import Loaders, build_loaders, load_labels
from sever.data.splits import make_split, read_split, write_split
from sever.engine import steps
from sever.engine.checkpoint import FORMAT_VERSION, load_checkpoint, rng_state, set_rng_state
from sever.engine.distributed import World, barrier, close_world, init_world, share
from sever.engine.logs import Board, MetricsLog
from sever.engine.parts import Parts, build_parts, describe, pick_device
from sever.engine.runs import create_run_dir, run_dir_of
from sever.engine.saver import CheckpointSaver
from sever.errors import CheckpointError, SeverError
from sever.logsetup import add_file_log, remove_handler

log = logging.getLogger(__name__)


class TrainingStopped(SeverError):
    """The loss became non-finite; the last good checkpoint is untouched."""


@dataclass
class Progress:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimiser steps so far
    bad_validations: int = 0  # validations without improvement, for early stopping
    last_val: dict = field(default_factory=dict)


def train(config: Config, resume: Path | None = None, run_dir: Path | None = None) -> Path:
    """Train `config`, or continue the run that `resume` (a checkpoint) belongs to. Under
    torchrun every process calls this; rank 0 alone writes the run directory.

    Args:
        run_dir: the new run's directory (k-fold names its folds); default
            `save_dir/<name>/<MMDD-HHMMSS>`.

    Returns:
        The run directory.
    """
    owned = not dist.is_initialized()  # a caller (k-fold) may hold the process group
    world = init_world(pick_device(config.trainer.device).type)
    try:
        state = load_checkpoint(resume) if resume else None
        check_world_size(state, world, resume)
        run = run_dir_of(resume) if resume else None
        if run is None and world.main:
            run = create_run_dir(config, run_dir)
        run = share(run, world)
        handler = add_file_log(run / "train.log") if world.main else quiet()
        try:
            return fit(config, run, state, world)
        finally:
            if handler is not None:
                remove_handler(handler)
            logging.getLogger("sever").setLevel(logging.DEBUG)
    finally:
        if owned:
            close_world(world)


def quiet() -> None:
    """Ranks other than 0 keep to warnings, so each message appears once."""
    logging.getLogger("sever").setLevel(logging.WARNING)


def check_world_size(state: dict | None, world: World, resume: Path | None) -> None:
    saved = (state or {}).get("world_size", 1)
    if state is not None and saved != world.size:
        raise CheckpointError(
            f"{resume}: trained with {saved} process(es), resumed with {world.size}; resume "
            f"with the same number (torchrun --nproc_per_node={saved}) so the batches and "
            "schedule continue exactly"
        )


def fit(config: Config, run: Path, state: dict | None, world: World = World()) -> Path:
    labels = load_labels(config)
    split = (
        read_split(run / "split.csv")
        if state
        else make_split(
            labels.class_sets(),
            config.data.val_fraction,
            config.data.folds,
            config.data.fold,
            config.seed,
        )
    )
    if world.main:
        write_split(split, run / "split.csv")
    torch.manual_seed(config.seed)  # the initial weights, the same on every process
    loaders = build_loaders(
        config, labels, split, torch.cuda.is_available(), world.rank, world.size
    )
    parts = build_parts(config, steps.optimizer_steps(len(loaders.train), config.trainer), world)
    progress = Progress()
    trainer = config.trainer
    saver = CheckpointSaver(
        run / "checkpoints", trainer.monitor_mode, trainer.save_top_k, trainer.save_period
    )
    if state:
        restore(state, parts, saver, progress)
    metrics = MetricsLog(run / "metrics.csv", steps.metric_columns(config))
    metrics.resume(progress.epoch)
    board = Board(
        run, trainer.tensorboard and world.main, purge_step=progress.step if state else None
    )
    log.info(
        "run %s: %d training / %d validation images on %s%s",
        run,
        len(loaders.train.dataset),
        len(loaders.val.dataset),
        describe(parts),
        f" x {world.size} processes" if world.distributed else "",
    )
    try:
        loop(config, run, parts, loaders, progress, saver, metrics, board)
        summarise(config, run, saver, progress, board)
    except KeyboardInterrupt:
        if world.main and not (run / "checkpoints" / "last.pth").is_file():
            saver.write(checkpoint(config, parts, progress, saver), progress.epoch)
        log.warning(
            "interrupted after epoch %d; resume with: sever train --resume %s", progress.epoch, run
        )
        raise
    finally:
        board.close()
    return run


def loop(
    config: Config,
    run: Path,
    parts: Parts,
    loaders: Loaders,
    progress: Progress,
    saver: CheckpointSaver,
    metrics: MetricsLog,
    board: Board,
) -> None:
    trainer = config.trainer
    for epoch in range(progress.epoch + 1, trainer.epochs + 1):
        started = time.time()
        torch.manual_seed(config.seed * 100_003 + epoch)
        loaders.train.sampler.set_epoch(epoch)
        row = steps.train_one_epoch(config, parts, loaders.train, epoch, progress, board, run)
        value = None
        if epoch % trainer.val_every == 0 or epoch == trainer.epochs:
            val = steps.validate(config, parts, loaders.val, epoch, board)
            row |= val
            progress.last_val = val
            value = row[trainer.monitor_metric]
            if not parts.per_iteration:
                parts.scheduler.step(value)
        improved = saver.record(epoch, value)
        if value is not None:
            progress.bad_validations = 0 if improved else progress.bad_validations + 1
        progress.epoch = epoch
        row |= steps.learning_rates(parts.optimizer)
        row |= {"epoch": epoch, "seconds": round(time.time() - started, 2)}
        if parts.world.main:
            metrics.append(row)
            saver.write(checkpoint(config, parts, progress, saver), epoch)
        barrier(parts.world)  # nobody runs ahead of (or resumes from) an unwritten checkpoint
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


def checkpoint(config: Config, parts: Parts, progress: Progress, saver: CheckpointSaver) -> dict:
    """The plain-dict checkpoint of the current state."""
    import segmentation_models_pytorch as smp

    from sever import __version__

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
        "rng": rng_state(),
        "world_size": parts.world.size,
        "config": config_dict(config),
        "versions": {
            "sever": __version__,
            "torch": str(torch.__version__),
            "smp": str(smp.__version__),
        },
    }


def restore(state: dict, parts: Parts, saver: CheckpointSaver, progress: Progress) -> None:
    missing = [k for k in ("optimizer", "scheduler", "saver", "rng", "step") if k not in state]
    if missing:
        raise CheckpointError(
            f"cannot resume from a weights-only checkpoint (no {', '.join(missing)}); resume "
            "from the run's own checkpoints/last.pth"
        )
    parts.model.load_state_dict(state["model"])
    if parts.ema is not None and state.get("ema"):
        parts.ema.load_state_dict(state["ema"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    saver.load_state_dict(state["saver"])
    progress.epoch, progress.step = state["epoch"], state["step"]
    progress.bad_validations = state["bad_validations"]
    progress.last_val = dict(state.get("metrics", {}))
    set_rng_state(state["rng"])
    log.info("resumed after epoch %d (step %d)", progress.epoch, progress.step)


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
