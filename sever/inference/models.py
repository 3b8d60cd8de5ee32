"""Rebuild trained models from checkpoints alone, and check that an ensemble fits together."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from sever.config import Config, config_from_dict
from sever.engine.checkpoint import (
    evaluated_weights,
    load_checkpoint,
    misfit,
    resolve_checkpoint,
    weights_fingerprint,
)
from sever.errors import CheckpointError, OptionError
from sever.model.build import build_model


@dataclass
class Member:
    """One model of an ensemble: the network (eval mode), its config and its weight.

    A segmenter (task "segment") gives masks and, with a class head, presence; a
    classifier (task "classify") gives presence alone."""

    path: Path
    model: nn.Module
    config: Config
    weight: float = 1.0
    tta: str | None = None  # its own TTA views (an ensemble file's `tta` per model)
    size: tuple[int, int] | None = None  # its own input size (H, W): images resized to it

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def has_class_head(self) -> bool:
        return self.task == "classify" or self.config.model.class_head.enabled

    @cached_property
    def fingerprint(self) -> str:
        """`weights_fingerprint` of the weights as loaded."""
        return weights_fingerprint(self.model.state_dict())


def checkpoint_path(run: Path, epoch: int | None = None, which: str = "best") -> Path:
    """`RUN/checkpoints/checkpoint-epoch{epoch}.pth`, or the run's best/last checkpoint."""
    run = Path(run)
    best = run / "checkpoints" / "model_best.pth"
    if epoch is None and which == "best" and run.is_dir() and not best.is_file():
        kept = "; use --last" if (run / "checkpoints" / "last.pth").is_file() else ""
        raise CheckpointError(f"{best}: no best checkpoint (the run never validated?){kept}")
    if epoch is None:
        return resolve_checkpoint(run, which)
    path = run / "checkpoints" / f"checkpoint-epoch{epoch}.pth"
    if not path.is_file():
        kept_epochs = sorted(
            p.stem.removeprefix("checkpoint-epoch")
            for p in (run / "checkpoints").glob("checkpoint-epoch*.pth")
        )
        hint = (
            f"; kept epochs: {', '.join(kept_epochs)}"
            if kept_epochs
            else "; this run kept no epochs"
        )
        raise CheckpointError(f"{path}: no checkpoint for epoch {epoch}{hint} (or use --best)")
    return path


def load_member(path: Path, device: torch.device, weight: float = 1.0) -> Member:
    """Load a checkpoint into its model (EMA weights when the run kept them).

    Raises:
        CheckpointError: unreadable, or its weights do not fit the config stored with it.
    """
    state = load_checkpoint(path)
    stored = dict(state["config"]) if isinstance(state["config"], dict) else {}
    if not isinstance(stored.get("model"), dict) or not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: not a sever checkpoint (its 'config' or 'model' is not)")
    stored["model"] = {**stored["model"], "encoder_weights": None}  # weights come from here
    # Pseudo-label files are training input, checked to exist when a config loads; where
    # the model predicts (a Kaggle notebook, another folder) they are not needed.
    stored["data"] = {**stored["data"], "pseudo": None}
    config = config_from_dict(stored, f"{path} (config)")
    model = build_model(config.model, config.task)
    weights = evaluated_weights(state)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"{path}: weights do not fit the config saved with them "
            f"({misfit(model.state_dict(), weights)})"
        ) from None
    model.to(device).eval()
    return Member(path, model, config, weight)


def load_members(
    paths: list[Path], device: torch.device, weights: Sequence[float] | None = None
) -> list[Member]:
    """Load every checkpoint onto `device` (with its weight, default 1) and check that
    they can be ensembled."""
    weights = list(weights or [1.0] * len(paths))
    members = [load_member(p, device, w) for p, w in zip(paths, weights, strict=True)]
    check_compatible(members)
    return members


def check_compatible(members: list[Member]) -> None:
    """All members must predict the same classes from the same input."""
    first = members[0]
    for member in members[1:]:
        for key in ("classes",):
            if getattr(member.config.model, key) != getattr(first.config.model, key):
                raise CheckpointError(
                    f"{member.path}: model.{key} {getattr(member.config.model, key)} differs from "
                    f"{first.path} ({getattr(first.config.model, key)}); they cannot be ensembled"
                )
        if member.config.data.normalize != first.config.data.normalize:
            raise CheckpointError(
                f"{member.path}: data.normalize differs from {first.path}; the models expect "
                "differently normalised input"
            )


def select_checkpoints(runs: list[Path], epochs: list[int], which: str = "best") -> list[Path]:
    """The checkpoints that `-r RUN [-e EPOCH ...] [--best | --last]` name.

    Every `-e` applies to every run; without one, each run's best (or last) checkpoint. A
    `-r` may also name a checkpoint file directly.
    """
    paths = []
    for run in map(Path, runs):
        if run.is_file():
            paths.append(run)
        elif not run.is_dir():
            raise CheckpointError(f"{run}: no such run directory or checkpoint")
        elif not (run / "checkpoints").is_dir():
            raise CheckpointError(not_a_run(run))
        elif epochs:
            paths += [checkpoint_path(run, epoch) for epoch in epochs]
        else:
            paths.append(checkpoint_path(run, None, which))
    return paths


def not_a_run(folder: Path) -> str:
    """What to give instead of a folder that is not a run directory."""
    folds = sorted(p.name for p in folder.glob("fold*") if (p / "checkpoints").is_dir())
    if folds:
        listed = " ".join(f"-r {folder / f}" for f in folds)
        return (
            f"{folder}: a k-fold parent, not a run; give its folds ({listed}) or "
            f"-c {folder / 'ensemble.yml'}"
        )
    runs = sorted(p.parent.name for p in folder.glob("*/checkpoints") if p.is_dir())
    if runs:
        return f"{folder}: holds runs, not a run; give one of them, e.g. -r {folder / runs[-1]}"
    return f"{folder}: not a run directory (no checkpoints/); give saved/<name>/<MMDD-HHMMSS>"


def inference_device(name: str, option: str = "--device") -> torch.device:
    """The device for `--device`: auto (CUDA when available, else the CPU), cpu, cuda,
    cuda:N or mps, which must exist here.

    Raises:
        OptionError: an unknown name, or a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", name):
        raise OptionError(f"{option} {name}: expected auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"{option} {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise OptionError(
            f"{option} {name}: this machine has {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"{option} {name}: MPS is not available here; use --device cpu")
    return device
