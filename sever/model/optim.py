"""Optimisers with an encoder and a decoder parameter group, and the learning-rate schedules.

How the trainer steps a scheduler (`steps_per_iteration` tells which):
- 'flat-cosine', 'flat-logistic' and 'constant' are LambdaLRs over iterations:
  `scheduler.step()` after every optimiser step. Fractional epochs in the config become
  whole iterations ('flat-logistic' holds its value through each epoch, as the original
  project stepped it once per epoch).
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

from sever import components
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
OPTIMIZERS: Registry[Callable[[list[dict], OptimizerConfig], Optimizer]] = (
    components.OPTIMIZERS.registry(
        {
            "radam": lambda groups, cfg: torch.optim.RAdam(groups),
            "adamw": lambda groups, cfg: torch.optim.AdamW(groups),
            "sgd": sgd,
        }
    )
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


def flat_logistic(
    step: int,
    steps_per_epoch: int,
    warmup_steps: int,
    flat_epochs: float,
    rolloff_epochs: float,
    min_ratio: float,
) -> float:
    """The lr multiplier at iteration `step` of the original project's 'cosine' schedule (its
    CosineAnnealingScheduler, which is no cosine): 1 for `flat_epochs`, then 1 - a logistic
    CDF over `rolloff_epochs`, centred half way, its scale a tenth of the roll-off, down to
    `min_ratio`; times the warm-up. Held for a whole epoch (epoch e counted from 0, at its
    value e - flat_epochs into the roll-off), as the original stepped it once per epoch."""
    epoch = step // steps_per_epoch
    factor = warmup(step, warmup_steps)
    if epoch < flat_epochs:
        return factor
    z = (epoch - flat_epochs - 0.5 * rolloff_epochs) / (0.1 * rolloff_epochs)
    # 1 / (1 + e^z), in the form that cannot overflow on either side
    survival = math.exp(-z) / (1 + math.exp(-z)) if z > 0 else 1 / (1 + math.exp(z))
    return factor * (min_ratio + (1 - min_ratio) * survival)


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


def flat_logistic_scheduler(
    optimizer: Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, monitor_mode: str
) -> LambdaLR:
    multiplier = partial(
        flat_logistic,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=iterations(cfg.warmup_epochs, steps_per_epoch),
        flat_epochs=cfg.flat_epochs,
        rolloff_epochs=cfg.rolloff_epochs,
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


SCHEDULERS: Registry[Callable[..., Scheduler]] = components.SCHEDULERS.registry(
    {
        "flat-cosine": flat_cosine_scheduler,
        "flat-logistic": flat_logistic_scheduler,
        "constant": constant_scheduler,
        "plateau": plateau_scheduler,
    }
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
