"""`sever bench`: how fast a config trains on this machine, and what holds it back.

Three measurements, each timed after warm-up batches (worker start-up, cuDNN autotuning,
torch.compile) and with CUDA synchronised only around the timed stretch:

* data loading alone: the real training DataLoader, nothing else running;
* compute alone: forward, loss, backward and optimiser step on one random batch of the
  training crop and batch size, kept on the device (what the model costs without data);
* the full training step: the real loader feeding `steps.train_one_epoch` itself, so the
  trainer's own bookkeeping is in the number, as in `sever train`.

Comparing the three says whether the loader or the model limits training. Besides the
rates: the model's FLOPs per image (one forward and backward, counted by torch's
FlopCounterMode, so on any device), peak memory, and on known GPUs the model FLOPs
utilisation (MFU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from sever.config import Config
from sever.data.loaders import Loaders, build_loaders, load_labels
from sever.data.sampling import EpochOrder
from sever.data.splits import make_split
from sever.engine import steps as trainer_steps
from sever.engine.interrupt import EpochStart, StopRequest
from sever.engine.logs import Board
from sever.engine.parts import Parts, build_parts, describe
from sever.engine.steps import Batch, Sample
from sever.fileio import atomic_path
from sever.model.build import split_outputs

log = logging.getLogger(__name__)


class Peak(NamedTuple):
    """Dense peak TFLOP/s by precision; None where the GPU has no such units."""

    bf16: float | None
    fp16: float | None
    tf32: float | None
    fp32: float


# From the vendors' data sheets (dense, no sparsity). Matched in order against
# torch.cuda.get_device_name(), so the more specific names come first.
PEAK_TFLOPS: list[tuple[str, Peak]] = [
    (r"H100.*PCIe", Peak(756, 756, 378, 51)),
    (r"H[12]00.*NVL", Peak(835, 835, 418, 60)),
    (r"H100|H200", Peak(989, 989, 495, 67)),
    (r"A100", Peak(312, 312, 156, 19.5)),
    (r"V100", Peak(None, 125, None, 15.7)),
    (r"RTX 4090", Peak(165, 165, 82.6, 82.6)),
    (r"\bL4\b", Peak(121, 121, 60, 30)),
]


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's peak TFLOP/s at `precision` (bf16, fp16, tf32, fp32); None if unknown.

    A GPU without TF32 units runs TF32-enabled float32 maths on its plain float32 units.
    """
    for pattern, peak in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            value = getattr(peak, precision)
            return peak.fp32 if value is None and precision == "tf32" else value
    return None


def precision_of(parts: Parts) -> str:
    """The units the matmuls and convolutions run on: autocast's dtype, else TF32 when
    allowed (build_parts allows it on CUDA), else plain float32."""
    if parts.amp_dtype is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[parts.amp_dtype]
    tf32 = torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    return "tf32" if tf32 else "fp32"


@dataclass(frozen=True)
class Advice:
    loader_bound: bool
    workers_needed: int
    text: str


def loader_advice(
    loader_rate: float, compute_rate: float, workers: int, cores: int | None = None
) -> Advice:
    """Whether the loader keeps up with the model, and how many workers would.

    Args:
        loader_rate: samples/s of the loader alone with `workers` workers (0: the main
            process, which counts as one worker).
        compute_rate: images/s of forward, backward and step on the device.
        cores: CPU cores, to warn when the estimate is more than the machine has.
    """
    per_worker = loader_rate / max(workers, 1)
    needed = max(1, math.ceil(compute_rate / per_worker))
    rates = f"{loader_rate:.1f} samples/s against {compute_rate:.1f} images/s of compute"
    if loader_rate < compute_rate:
        text = (
            f"the loader is the bottleneck: {rates} ({per_worker:.1f} samples/s per worker, "
            f"{workers} worker(s)); data.workers: {needed} would keep up"
        )
        if cores and needed > cores:
            text += (
                f", more than this machine's {cores} cores: lighten data.augment or "
                "move the images to a faster disk"
            )
    elif workers == 0:
        text = (
            f"the loader is fast enough ({rates}) but data.workers is 0, so loading runs "
            "between the steps instead of beside them; data.workers: 1 would hide it"
        )
    else:
        text = f"the loader keeps up: {rates}"
    return Advice(loader_rate < compute_rate, needed, text)


class Batches:
    """`total` batches from a DataLoader, across epochs if one is too short, timed from
    the request of batch number `skip` (0-based) on.

    Shaped like the DataLoader for `train_one_epoch` (it takes `len` and iterates).
    `start` is set just before batch `skip` is asked for; CUDA is synchronised there once,
    so the device has no queued work from the untimed batches.
    """

    def __init__(
        self,
        loader: DataLoader[Sample],
        order: EpochOrder,
        total: int,
        skip: int,
        device: torch.device,
    ) -> None:
        self.loader, self.order, self.total = loader, order, total
        self.skip, self.device = skip, device
        self.start: float | None = None

    def elapsed(self) -> float:
        """Seconds since batch `skip` was asked for."""
        assert self.start is not None, "not iterated yet"
        return time.perf_counter() - self.start

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[Batch]:
        epoch, served = 1, 0
        self.order.set_epoch(epoch)
        batches = iter(self.loader)
        while served < self.total:
            if served == self.skip and self.start is None:
                synchronize(self.device)
                self.start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                epoch += 1
                self.order.set_epoch(epoch)
                batches = iter(self.loader)
                continue
            yield batch
            served += 1


def run_bench(config: Config, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Measure `config`'s training speed; every rate over `steps` timed batches.

    Returns:
        Plain values: rates (`loader_samples_per_s`, `compute_images_per_s`,
        `step_images_per_s`), `flops_per_image` (forward and backward), peak memory,
        MFU (None off CUDA or on an unknown GPU, with `mfu_note` saying why) and the
        loader advice.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"expected steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    labels = load_labels(config)
    data = config.data
    split = make_split(labels.class_sets(), data.val_fraction, data.folds, data.fold, config.seed)
    # As `sever train` builds them: same loader settings, same seeded initial weights.
    loaders = build_loaders(config, labels, split, torch.cuda.is_available())
    torch.manual_seed(config.seed)
    per_epoch = trainer_steps.optimizer_steps(len(loaders.train), config.trainer)
    parts = build_parts(config, per_epoch)
    if parts.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(parts.device)
    height, width = data.crop or data.image_size
    batch = config.trainer.batch_size
    log.info(
        "bench %s on %s: %d warm-up + %d timed batches each",
        config.name,
        describe(parts),
        warmup,
        steps,
    )
    # Compute first: the loader's workers are not started yet and take no CPU from it.
    images, masks = synthetic_batch(config, parts, batch, height, width)
    flops = count_flops(parts, images, masks) / batch
    compute = measure_compute(config, parts, images, masks, steps, warmup)
    log.info("compute: %.2f images/s", compute)
    loading = measure_loader(loaders, steps, parts.device)
    log.info("data loading: %.2f samples/s with %d worker(s)", loading, data.workers)
    full = measure_full_step(config, parts, loaders, steps, warmup)
    log.info("full training step: %.2f images/s", full)
    memory, memory_kind = peak_memory(parts.device)
    advice = loader_advice(loading, compute, data.workers, os.cpu_count())
    return {
        "name": config.name,
        "device": describe(parts),
        "arch": config.model.arch,
        "encoder": config.model.encoder,
        "batch_size": batch,
        "crop": [height, width],
        "workers": data.workers,
        "steps": steps,
        "warmup": warmup,
        "loader_samples_per_s": loading,
        "compute_images_per_s": compute,
        "step_images_per_s": full,
        "flops_per_image": flops,
        "step_tflops": flops * full / 1e12,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        **utilisation(parts, flops, compute, full),
        "loader_bottleneck": advice.loader_bound,
        "workers_needed": advice.workers_needed,
        "advice": advice.text,
    }


def synthetic_batch(
    config: Config, parts: Parts, batch: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (N, 1, H, W) and sparse 0/1 masks (N, C, H, W), on the device."""
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.randn(batch, 1, height, width, generator=generator)
    masks = torch.rand(batch, config.model.classes, height, width, generator=generator) < 0.05
    return trainer_steps.to_device(parts, images, masks)


def train_step(
    config: Config, parts: Parts, images: torch.Tensor, masks: torch.Tensor, index: int
) -> None:
    """One batch as train_one_epoch trains it, with the optimiser stepping every
    `accumulate` batches; no host synchronisation."""
    trainer = config.trainer
    with trainer_steps.autocast(parts):
        mask_logits, class_logits = split_outputs(parts.forward(images))
    loss = parts.loss(mask_logits, masks, class_logits)["loss"]
    trainer_steps.backward(parts, loss / trainer.accumulate)
    if (index + 1) % trainer.accumulate == 0:
        trainer_steps.optimizer_step(parts, trainer)


def count_flops(parts: Parts, images: torch.Tensor, masks: torch.Tensor) -> float:
    """FLOPs of one forward and backward of the batch (the eager model: FlopCounterMode
    cannot see inside a compiled graph); the gradients are dropped afterwards."""
    parts.model.train()
    with FlopCounterMode(display=False) as counter:
        with trainer_steps.autocast(parts):
            mask_logits, class_logits = split_outputs(parts.model(images))
        parts.loss(mask_logits, masks, class_logits)["loss"].backward()
    parts.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure_compute(
    config: Config,
    parts: Parts,
    images: torch.Tensor,
    masks: torch.Tensor,
    steps: int,
    warmup: int,
) -> float:
    """Images/s of the training step on one batch already on the device."""
    parts.forward.train()
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(parts.device)
            start = time.perf_counter()
        train_step(config, parts, images, masks, i)
    synchronize(parts.device)
    return steps * len(images) / (time.perf_counter() - start)


def measure_loader(loaders: Loaders, steps: int, device: torch.device) -> float:
    """Samples/s of the training loader alone, after its first batch (worker start-up)."""
    batches = Batches(loaders.train, loaders.sampler, 1 + steps, 1, device)
    samples = [len(images) for images, _, _ in batches]
    return sum(samples[1:]) / batches.elapsed()


def measure_full_step(
    config: Config, parts: Parts, loaders: Loaders, steps: int, warmup: int
) -> float:
    """Images/s of `train_one_epoch` over the real loader, after `warmup` batches."""
    bench_config = config.model_copy(deep=True)
    bench_config.trainer.steps_per_epoch = None  # len(batches) alone sets the length
    batches = Batches(loaders.train, loaders.sampler, warmup + steps, warmup, parts.device)
    with quiet(trainer_steps.log):
        # It ends with .item() on the device's loss sums: a synchronisation.
        trainer_steps.train_one_epoch(
            bench_config,
            parts,
            batches,
            1,
            trainer_steps.Progress(),
            Board(Path.cwd(), False),
            Path.cwd(),
            EpochStart(),
            StopRequest(),  # not entered: no signal handlers while measuring
        )
    return steps * config.trainer.batch_size / batches.elapsed()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def quiet(logger: logging.Logger) -> Iterator[None]:
    """Hide a logger's INFO lines (train_one_epoch's step lines) for the duration."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): the CUDA allocator's peak, else this process's peak RSS
    (the whole process, model and data included; DataLoader workers not included)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda max allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "process peak RSS"


def utilisation(
    parts: Parts, flops: float, compute: float, full: float
) -> dict[str, float | str | None]:
    """MFU of the full step and of compute alone against the GPU's peak, or a note why not."""
    result: dict[str, float | str | None] = {
        "peak_tflops": None,
        "mfu": None,
        "mfu_compute": None,
        "mfu_note": None,
    }
    if parts.device.type != "cuda":
        result["mfu_note"] = "MFU is measured on CUDA only"
        return result
    name, precision = torch.cuda.get_device_name(parts.device), precision_of(parts)
    peak = peak_tflops(name, precision)
    if peak is None:
        result["mfu_note"] = f"no {precision} peak known for {name} (see PEAK_TFLOPS)"
        return result
    result |= {
        "peak_tflops": peak,
        "mfu": flops * full / (peak * 1e12),
        "mfu_compute": flops * compute / (peak * 1e12),
        "mfu_note": f"against {peak:g} TFLOP/s {precision} dense",
    }
    return result


def write_report(report: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def format_table(report: dict[str, Any]) -> str:
    """The report as a few aligned lines: header, one row per measure, the advice."""
    r = report
    workers = f"{r['workers']} worker{'s' if r['workers'] != 1 else ''}"
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}"
    rows = [
        (f"data loading ({workers})", f"{r['loader_samples_per_s']:.1f}", "samples/s"),
        ("compute (synthetic batch)", f"{r['compute_images_per_s']:.1f}", "images/s"),
        ("full training step", f"{r['step_images_per_s']:.1f}", "images/s"),
        ("model FLOPs (fwd+bwd)", f"{r['flops_per_image'] / 1e9:.2f}", "GFLOP/image"),
        ("achieved (full step)", f"{r['step_tflops']:.3f}", "TFLOP/s"),
        (f"peak memory ({r['peak_memory_kind']})", f"{r['peak_memory_bytes'] / 2**30:.2f}", "GiB"),
        ("MFU (full step)", mfu, "%" if r["mfu"] is not None else f"({r['mfu_note']})"),
    ]
    if r["mfu_compute"] is not None:
        rows.append(("MFU (compute alone)", f"{100 * r['mfu_compute']:.1f}", "%"))
    label_width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    crop = "x".join(map(str, r["crop"]))
    lines = [
        f"{r['name']}: {r['arch']} {r['encoder']}, batch {r['batch_size']}, crop {crop}, "
        f"{r['device']}; {r['steps']} timed batches after {r['warmup']} warm-up",
        *(
            f"  {label:<{label_width}}  {value:>{value_width}}  {unit}"
            for label, value, unit in rows
        ),
        r["advice"],
    ]
    return "\n".join(lines)
