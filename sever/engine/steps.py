"""One epoch of training, one pass of validation, and the rows they log."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import torch
from torch.utils.data import DataLoader

from sever.config import Config, TrainerConfig
from sever.engine.distributed import World, all_max, all_sum, sync_buffers
from sever.engine.interrupt import EpochStart, StopEpoch, StopRequest
from sever.engine.logs import Board
from sever.engine.parts import Parts
from sever.errors import TrainingStopped
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.postprocess_file import default_postprocess
from sever.model.build import split_outputs
from sever.model.metrics import DiceMeter, PresenceMeter
from sever.model.optim import steps_per_iteration
from sever.progress import Tracker
from sever.visualize import denormalize, truth_and_prediction

log = logging.getLogger(__name__)
T = TypeVar("T")
# One item of a SteelDataset: image (1, H, W), masks (C, H, W), ImageId; and a batch of them.
Sample = tuple[torch.Tensor, torch.Tensor, str]
Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


@dataclass
class Progress:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimiser steps so far
    bad_validations: int = 0  # validations without improvement, for early stopping
    last_val: dict[str, float] = field(default_factory=dict)
    origin: dict[str, Any] | None = None  # the weights a run started from (model.init_from)


def optimizer_steps(batches: int, trainer: TrainerConfig) -> int:
    """Optimiser steps per epoch: batches / accumulation, capped by steps_per_epoch."""
    per_epoch = math.ceil(batches / trainer.accumulate)
    return min(per_epoch, trainer.steps_per_epoch or per_epoch)


def epoch_batches(batches: int, trainer: TrainerConfig) -> int:
    """The batches an epoch trains on, of the loader's `batches`."""
    return min(batches, optimizer_steps(batches, trainer) * trainer.accumulate)


def autocast(parts: Parts) -> torch.autocast:
    return torch.autocast(
        parts.device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None
    )


def to_device(
    parts: Parts, images: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = torch.channels_last if parts.channels_last else torch.contiguous_format
    images = images.to(parts.device, non_blocking=True, memory_format=fmt)
    return images, masks.to(parts.device, non_blocking=True).float()


class BatchStream(Protocol):
    """What an epoch trains on: a DataLoader, or the bench's timed stand-in for one."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


def train_one_epoch(
    config: Config,
    parts: Parts,
    loader: BatchStream,
    epoch: int,
    progress: Progress,
    board: Board,
    run: Path,
    begin: EpochStart,
    stop: StopRequest,
) -> dict[str, float]:
    """Train one epoch (from batch `begin.batches` on, the sampler skipping the ones a
    stopped run trained); returns the mean of each loss term as `train_<term>`.

    Raises:
        StopEpoch: a stop was requested; raised after an optimiser step, with the
            batches done and the loss sums so far.
    """
    trainer = config.trainer
    batches = epoch_batches(len(loader), trainer)
    parts.forward.train()
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=parts.device))
    sums.update(begin.sums)
    done = begin  # the last optimiser step: where a stop leaves the epoch
    # Kept on the device: no host sync per step, only at logging intervals.
    first_bad = torch.full((), -1, device=parts.device)
    bar = progress_bar(loader, batches - begin.batches, f"epoch {epoch}/{trainer.epochs}")
    try:
        for i, (images, masks, _) in enumerate(until_stopped(bar, stop), start=begin.batches):
            if i >= batches:
                break
            images, masks = to_device(parts, images, masks)
            with autocast(parts):
                mask_logits, class_logits = split_outputs(parts.forward(images))
            terms = parts.loss(mask_logits, masks, class_logits)
            backward(parts, terms["loss"] / trainer.accumulate)
            for name, value in terms.items():
                sums[name] = sums[name] + value.detach()  # new tensors: `done` keeps its own
            bad_now = ~torch.isfinite(terms["loss"].detach()) & (first_bad < 0)
            first_bad = torch.where(bad_now, progress.step + 1, first_bad)
            if (i + 1) % trainer.accumulate == 0 or i + 1 == batches:
                optimizer_step(parts, trainer)
                progress.step += 1
                done = EpochStart(i + 1, dict(sums))
                logged = progress.step % trainer.log_every == 0 or i + 1 == batches
                if logged:
                    check_finite(first_bad, epoch, run, parts.world)
                    report_step(parts, terms, progress.step, board, bar, epoch, i + 1, batches)
                # under DDP the synced check rides on the logging steps, the same everywhere
                if i + 1 < batches and stop.requested(parts.world, parts.device, synced=logged):
                    raise LoaderStopped
    except LoaderStopped:
        check_finite(first_bad, epoch, run, parts.world)  # a non-finite loss is not a stop
        raise StopEpoch(done) from None
    check_finite(first_bad, epoch, run, parts.world)
    total = batches * parts.world.size
    return {f"train_{n}": (all_sum(v, parts.world) / total).item() for n, v in sums.items()}


class LoaderStopped(Exception):  # noqa: N818 (control flow)
    """The epoch ends early on a stop request."""


def until_stopped(batches: Iterable[T], stop: StopRequest) -> Iterator[T]:
    """The batches, until a stop request. A loader that fails after one is taken as a
    stop: a scheduler (Slurm) signals every process, the loader's workers too, and a dead
    worker surfaces as torch's RuntimeError or, when it died mid-transfer, as the pipe's
    own error (ConnectionResetError, EOFError)."""
    source = iter(batches)
    while True:
        try:
            batch = next(source)
        except StopIteration:
            return
        except (RuntimeError, OSError, EOFError):
            if stop.signum is None:
                raise
            raise LoaderStopped from None
        yield batch


def backward(parts: Parts, loss: torch.Tensor) -> None:
    # torch leaves Tensor.backward unannotated, hence the ignores
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
    else:
        loss.backward()  # type: ignore[no-untyped-call]


def optimizer_step(parts: Parts, trainer: TrainerConfig) -> None:
    if trainer.clip_grad:
        if parts.scaler is not None:
            parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), trainer.clip_grad)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    if steps_per_iteration(parts.scheduler):
        parts.scheduler.step()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)


def check_finite(first_bad: torch.Tensor, epoch: int, run: Path, world: World) -> None:
    # Every process must stop together: a non-finite loss on any rank stops all.
    step = int(all_max(first_bad.clone(), world).item())
    if step >= 0:
        last = run / "checkpoints" / "last.pth"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint yet"
        raise TrainingStopped(
            f"epoch {epoch} step {step}: the loss is not finite; stopped ({kept}, untouched). "
            "Try a lower learning rate, trainer.clip_grad or trainer.amp: bf16"
        )


def report_step(
    parts: Parts,
    terms: Mapping[str, torch.Tensor],
    step: int,
    board: Board,
    bar: Tracker,
    epoch: int,
    batch: int,
    batches: int,
) -> None:
    values = {name: value.item() for name, value in terms.items()}
    board.scalars(values, step, "train/")
    board.scalars(learning_rates(parts.optimizer), step, "lr/")
    bar.set_postfix(loss=f"{values['loss']:.4f}")
    if not bar.terminal:
        log.info("epoch %d step %d/%d loss %.4f", epoch, batch, batches, values["loss"])


def progress_bar(iterable: Iterable[object], total: int, desc: str) -> Tracker:
    """tqdm with loss and ETA on a terminal; elsewhere a log line every 30 s (done / total,
    rate, time left, loss: sever.progress)."""
    return Tracker(total, desc, "batches", iterable=iterable, leave=False)


@torch.no_grad()
def validate(
    config: Config, parts: Parts, loader: DataLoader[Sample], epoch: int, board: Board
) -> dict[str, float]:
    """Full-size validation, as `val_<name>`: mean loss terms, the Kaggle Dice of the masks,
    and the image-level precision, recall and F1 of the presence head (if any)."""
    model = parts.eval_model()
    sync_buffers(model, parts.world)
    model.eval()
    classes, threshold = config.model.classes, config.trainer.threshold
    postprocess = default_postprocess(config)  # as evaluate, tune and predict apply it
    dice, presence = DiceMeter(classes), PresenceMeter(classes)
    sums: dict[str, float] = defaultdict(float)
    shown = 0
    for images, masks, ids in progress_bar(loader, len(loader), f"validate {epoch}"):
        images, masks = to_device(parts, images, masks)
        with autocast(parts):
            mask_logits, class_logits = split_outputs(model(images))
        terms = parts.loss(mask_logits, masks, class_logits)
        for name, value in terms.items():
            sums[name] += value.item() * len(images)
        if mask_logits is not None:
            pred = postprocessed(torch.sigmoid(mask_logits.float()), postprocess)
            dice.update(pred, masks)
            shown = show_images(config, board, images, masks, pred, ids, epoch, shown)
        if class_logits is not None:
            presence.update(torch.sigmoid(class_logits.float()) > threshold, masks.amax((2, 3)))
    sums = reduce_sums(sums, parts.world)
    scores = {k: v / len(cast(Sized, loader.dataset)) for k, v in sums.items()}
    if config.task == "segment":
        scores |= DiceMeter.from_state(all_sum(dice.state(), parts.world)).compute()
    if config.task == "classify" or config.model.class_head.enabled:
        scores |= PresenceMeter.from_state(all_sum(presence.state(), parts.world)).compute()
    board.scalars(scores, epoch, "val/")
    return {f"val_{k}": v for k, v in scores.items()}


def postprocessed(probs: torch.Tensor, postprocess: PostProcess) -> torch.Tensor:
    """Masks (N, C, H, W) on probs' device: the one numpy post-processing every command
    applies, run on the CPU (one home for the rule, so validation cannot drift from it)."""
    masks = postprocess_batch(probs.cpu().numpy(), postprocess)
    return torch.from_numpy(masks).to(probs.device)


def reduce_sums(sums: dict[str, float], world: World) -> dict[str, float]:
    """The sums over every process: the exact mean over all images, not a mean of means."""
    if not world.distributed:
        return dict(sums)
    names = sorted(sums)
    totals = all_sum(torch.tensor([sums[n] for n in names], dtype=torch.float64), world)
    return dict(zip(names, totals.tolist(), strict=True))


def show_images(
    config: Config,
    board: Board,
    images: torch.Tensor,
    masks: torch.Tensor,
    pred: torch.Tensor,
    ids: Sequence[str],
    epoch: int,
    shown: int,
) -> int:
    """Send the first few validation images, truth over prediction, to TensorBoard."""
    norm = config.data.normalize
    for k in range(len(images)):
        if shown >= config.trainer.log_images or board.writer is None:
            break
        grey = denormalize(images[k, 0].float().cpu().numpy(), norm.mean, norm.std)
        picture = truth_and_prediction(grey, masks[k].cpu().numpy(), pred[k].cpu().numpy())
        board.image(f"val_images/{ids[k]}", picture, epoch)
        shown += 1
    return shown


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}


def metric_columns(config: Config) -> list[str]:
    """The fixed header of metrics.csv for this config."""
    if config.task == "classify":
        terms = ["cls"]
    else:
        terms = config.loss.all_terms()
        terms += ["cls"] if config.model.class_head.enabled else []
    columns = ["epoch", "train_loss", *(f"train_{t}" for t in terms)]
    columns += ["val_loss", *(f"val_{t}" for t in terms)]
    classes = range(1, config.model.classes + 1)
    if config.task == "segment":
        columns += ["val_dice_mean", *(f"val_dice_{c}" for c in classes)]
        columns += ["val_dice_positive", "val_empty_baseline"]
    if config.task == "classify" or config.model.class_head.enabled:
        columns.append("val_f1_mean")
        columns += [f"val_{kind}_{c}" for c in classes for kind in ("f1", "precision", "recall")]
    return [*columns, "lr_encoder", "lr_decoder", "seconds"]


def epoch_line(row: Mapping[str, float], monitor: str, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}", f"train_loss {row['train_loss']:.4f}"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f}")
        headline = "val_dice_mean" if "val_dice_mean" in row else "val_f1_mean"
        parts.append(f"{headline} {row[headline]:.4f}")
        if monitor in row and monitor not in ("val_loss", headline):
            parts.append(f"{monitor} {row[monitor]:.4f}")
        parts.append("(best)" if improved else "")
    parts.append(f"{row['seconds']:.0f}s")
    return "  ".join(p for p in parts if p)


def hparams(config: Config) -> dict[str, object]:
    """A flat summary of the config for TensorBoard's HPARAMS tab."""
    c = config
    return {
        "task": c.task,
        "arch": c.model.arch if c.task == "segment" else "classifier",
        "encoder": c.model.encoder,
        "input_channel": c.model.input_channel,
        "crop": str(c.data.crop),
        "augment": c.data.augment,
        "batch_size": c.trainer.batch_size,
        "optimizer": c.optimizer.type,
        "lr_encoder": c.optimizer.encoder.lr,
        "lr_decoder": c.optimizer.decoder.lr,
        "scheduler": c.scheduler.type,
        "epochs": c.trainer.epochs,
        "amp": c.trainer.amp,
        "seed": c.seed,
    }
