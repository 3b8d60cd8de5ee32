"""The pieces a training run is made of, built from the config: device, precision, model,
loss, optimiser, schedule, gradient scaler and EMA weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sever.config import Config
from sever.engine.distributed import World
from sever.errors import ConfigError
from sever.model.build import build_model
from sever.model.losses import PresenceLoss, SegmentationLoss, build_loss
from sever.model.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything the loops need. `forward` is the (possibly compiled) module to call;
    `model` the plain one whose state dict is saved."""

    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module
    forward: nn.Module
    loss: SegmentationLoss | PresenceLoss
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | ReduceLROnPlateau
    scaler: torch.amp.GradScaler | None
    ema: AveragedModel | None
    channels_last: bool
    world: World = World()

    def eval_model(self) -> nn.Module:
        """The weights to validate: the EMA ones when kept. Uncompiled and without the DDP
        wrapper, whose forward would expect the same number of calls on every process."""
        return self.ema.module if self.ema is not None else self.model


def pick_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name} was asked for but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device: {name} was asked for but MPS is not available")
    return device


def pick_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: `auto` is bf16 on GPUs that support it (no loss scaling needed, which
    is what broke fp16 for the original project) and off on the CPU."""
    if mode == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if mode == "fp16" and device.type == "cpu":
        raise ConfigError("trainer.amp: fp16 needs a GPU; use bf16 or off on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def build_parts(config: Config, steps_per_epoch: int, world: World = World()) -> Parts:
    """Build every part on its device. The caller seeds torch first (initial weights), the
    same on every process, so DDP replicas start equal."""
    trainer = config.trainer
    device = pick_device(trainer.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    amp_dtype = pick_amp(trainer.amp, device)
    if device.type == "cpu":
        # Tiny values late in a cosine schedule turn denormal and slow CPU maths down ~5x.
        torch.set_flush_denormal(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = trainer.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(config.model, config.task)
    if world.distributed and trainer.sync_bn:
        # torch leaves convert_sync_batchnorm unannotated
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    model = model.to(device)
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optimizer)
    scheduler = build_scheduler(optimizer, config.scheduler, steps_per_epoch, trainer.monitor_mode)
    ema = None
    if trainer.ema:
        # torch leaves get_ema_multi_avg_fn unannotated
        average = get_ema_multi_avg_fn(trainer.ema)  # type: ignore[no-untyped-call]
        ema = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    return Parts(
        device=device,
        amp_dtype=amp_dtype,
        model=model,
        forward=wrap_ddp(maybe_compile(model, trainer.compile), device, world),
        loss=build_loss(config).to(device),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        channels_last=trainer.channels_last,
        world=world,
    )


def wrap_ddp(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """DistributedDataParallel under torchrun. Some SMP encoders keep layers the decoder
    never uses (EfficientNet's conv_head), hence find_unused_parameters."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    return CompiledOrEager(model) if enabled else model


class CompiledOrEager(nn.Module):
    """torch.compile(model), falling back to the plain model if compiling fails.

    Compilation happens lazily at the first call, so that is where it can fail (no C
    compiler, an unsupported op); the run then goes on uncompiled with a warning.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.eager = model
        self.compiled = torch.compile(model)
        self.failed = False

    def forward(self, x: torch.Tensor) -> object:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as exc:
                self.failed = True
                log.warning(
                    "torch.compile failed (%s: %s); continuing uncompiled",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                )
        return self.eager(x)


def describe(parts: Parts) -> str:
    """`cuda (NVIDIA H100 80GB HBM3), amp bf16, channels_last` for the log."""
    where = str(parts.device)
    if parts.device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(parts.device)})"
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[parts.amp_dtype]
    return f"{where}, amp {amp}" + (", channels_last" if parts.channels_last else "")
