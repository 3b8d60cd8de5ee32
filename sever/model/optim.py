"""Optimisers with an encoder and a decoder parameter group, and the learning-rate schedules.

How the trainer steps a scheduler (`steps_per_iteration` tells which):
- 'flat-cosine' and 'constant' are LambdaLRs over iterations: `scheduler.step()` after every
  optimiser step. Fractional epochs in the config become whole iterations.
- 'plateau' is ReduceLROnPlateau: `scheduler.step(value)` once per validation, with the
  monitored metric's value.
Each LambdaLR multiplies every group's own base lr by one factor, so the encoder/decoder lr
ratio holds all along. All schedulers resume from `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, TypeGuard

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from sever.model.build import encoder_and_rest
from sever.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from sever.config import OptimizerConfig, SchedulerConfig

    Scheduler = LRScheduler | ReduceLROnPlateau


def sgd(groups: list[dict], cfg: OptimizerConfig) -> Optimizer:
    """SGD with Nesterov momentum (plain SGD when momentum is 0)."""
    return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


# Each takes the parameter groups (which carry their own lr and weight_decay) and the config.
OPTIMIZERS: Registry[Callable[[list[dict], OptimizerConfig], Optimizer]] = Registry(
    "optimizer",
    {
        "radam": lambda groups, cfg: torch.optim.RAdam(groups),
        "adamw": lambda groups, cfg: torch.optim.AdamW(groups),
        "sgd": sgd,
    },
)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> Optimizer:
    """The optimiser `cfg.type` over two groups, named 'encoder' and 'decoder' (the rest)."""
    encoder, rest = encoder_and_rest(model)
    named = [("encoder", encoder, cfg.encoder), ("decoder", rest, cfg.decoder)]
    groups = [
        {"name": name, "params": params, "lr": group.lr, "weight_decay": group.weight_decay}
        for name, params, group in named
    ]
    return OPTIMIZERS[cfg.type](groups, cfg)


def warmup(step: int, warmup_steps: int) -> float:
    """Linear ramp from 1/warmup_steps at step 0 up to 1, then 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def flat_cosine(
    step: int, warmup_steps: int, flat_steps: int, cosine_steps: int, min_ratio: float
) -> float:
    """The lr multiplier at iteration `step`: warm-up, flat at 1 until `flat_steps` (counted
    from 0, warm-up included), cosine from 1 down to `min_ratio` over `cosine_steps`, then
    `min_ratio`."""
    start = max(flat_steps, warmup_steps)
    if step < start:
        return warmup(step, warmup_steps)
    t = min(1.0, (step - start) / cosine_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def iterations(epochs: float, steps_per_epoch: int) -> int:
    return round(epochs * steps_per_epoch)


def flat_cosine_scheduler(
    optimizer: Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, monitor_mode: str
) -> LambdaLR:
    # partial of a module-level function, not a lambda: LambdaLR can save its (empty) state.
    multiplier = partial(
        flat_cosine,
        warmup_steps=iterations(cfg.warmup_epochs, steps_per_epoch),
        flat_steps=iterations(cfg.flat_epochs, steps_per_epoch),
        cosine_steps=max(1, iterations(cfg.cosine_epochs, steps_per_epoch)),
        min_ratio=cfg.min_lr_ratio,
    )
    return LambdaLR(optimizer, multiplier)


def constant_scheduler(
    optimizer: Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, monitor_mode: str
) -> LambdaLR:
    multiplier = partial(warmup, warmup_steps=iterations(cfg.warmup_epochs, steps_per_epoch))
    return LambdaLR(optimizer, multiplier)


def plateau_scheduler(
    optimizer: Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, monitor_mode: str
) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(
        optimizer,
        mode="max" if monitor_mode == "max" else "min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
    )


SCHEDULERS: Registry[Callable[..., Scheduler]] = Registry(
    "scheduler",
    {
        "flat-cosine": flat_cosine_scheduler,
        "constant": constant_scheduler,
        "plateau": plateau_scheduler,
    },
)


def build_scheduler(
    optimizer: Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, monitor_mode: str
) -> Scheduler:
    """The scheduler `cfg.type` for `optimizer`.

    Args:
        steps_per_epoch: optimiser steps per epoch, to turn epochs into iterations.
        monitor_mode: 'max' or 'min', the direction of the monitored metric (for 'plateau').
    """
    return SCHEDULERS[cfg.type](optimizer, cfg, steps_per_epoch, monitor_mode)


def steps_per_iteration(scheduler: Scheduler) -> TypeGuard[LambdaLR]:
    """True (the LambdaLR schedules): call `scheduler.step()` after each optimiser step;
    False (plateau): call `scheduler.step(value)` after each validation with the
    monitored value."""
    return isinstance(scheduler, LambdaLR)
