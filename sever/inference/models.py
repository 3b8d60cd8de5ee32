"""Rebuild trained models from checkpoints alone, and check that an ensemble fits together."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from sever.config import Config, config_from_dict
from sever.engine.checkpoint import load_checkpoint, resolve_checkpoint
from sever.errors import CheckpointError
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

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def has_class_head(self) -> bool:
        return self.task == "classify" or self.config.model.class_head.enabled

    @cached_property
    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the weights as loaded: the same for the same
        model wherever its file lies (a staged copy, weights only, on Kaggle)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
        return digest.hexdigest()[:16]


def checkpoint_path(run: Path, epoch: int | None = None, which: str = "best") -> Path:
    """`RUN/checkpoints/checkpoint-epoch{epoch}.pth`, or the run's best/last checkpoint."""
    run = Path(run)
    if epoch is None:
        return resolve_checkpoint(run, which)
    path = run / "checkpoints" / f"checkpoint-epoch{epoch}.pth"
    if not path.is_file():
        kept = sorted(
            p.stem.removeprefix("checkpoint-epoch")
            for p in (run / "checkpoints").glob("checkpoint-epoch*.pth")
        )
        hint = f"; kept epochs: {', '.join(kept)}" if kept else "; this run kept no epochs"
        raise CheckpointError(f"{path}: no checkpoint for epoch {epoch}{hint} (or use --best)")
    return path


def load_member(path: Path, device: torch.device, weight: float = 1.0) -> Member:
    """Load a checkpoint into its model (EMA weights when the run kept them).

    Raises:
        CheckpointError: unreadable, or its weights do not fit the config stored with it.
    """
    state = load_checkpoint(path)
    stored = dict(state["config"])
    stored["model"] = {**stored["model"], "encoder_weights": None}  # weights come from here
    # Pseudo-label files are training input, checked to exist when a config loads; where
    # the model predicts (a Kaggle notebook, another folder) they are not needed.
    stored["data"] = {**stored["data"], "pseudo": None}
    config = config_from_dict(stored, f"{path} (config)")
    model = build_model(config.model, config.task)
    weights = state["model"]
    if state.get("ema"):
        weights = {
            k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"
        }
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(
            f"{path}: weights do not fit the config saved with them ({first})"
        ) from None
    model.to(device).eval()
    return Member(path, model, config, weight)


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
        elif epochs:
            paths += [checkpoint_path(run, epoch) for epoch in epochs]
        else:
            paths.append(checkpoint_path(run, None, which))
    return paths
