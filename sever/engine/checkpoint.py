"""Checkpoints: plain dicts written atomically, loaded with weights_only=True.

A checkpoint holds only tensors, state dicts and plain values (the resolved config as a
dict, versions, RNG states), so it loads without sever's classes and without pickle's
arbitrary code execution.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sever.errors import CheckpointError
from sever.fileio import atomic_path, torch_load_problem, writing

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` via a temporary file, so a kill never damages the old file.

    Raises:
        WriteError: the write failed (a full disk): the message names `path`, and the old
            file is as it was, its temporary removed.
    """
    with writing(path, "checkpoint"):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through an open file, so a failed write raises torch's error over the OSError
        # that says why (with a file name, torch keeps only "unexpected pos 576 vs 534").
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            torch.save(state, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a sever checkpoint on the CPU.

    Raises:
        CheckpointError: missing, unreadable or not a sever checkpoint.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickles it then refuses anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        problem = torch_load_problem(exc, path)
        raise CheckpointError(f"{path}: not a readable checkpoint ({problem})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a sever checkpoint (no 'model' and 'config')")
    if state.get("format", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format']} is newer than this sever "
            f"understands ({FORMAT_VERSION}); upgrade sever"
        )
    return state


def evaluated_weights(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights a checkpoint is validated and used with: its EMA weights when
    the run kept them (AveragedModel's, without its `module.` prefix and step count),
    else its model's."""
    ema = state.get("ema")
    if not ema:
        return dict(state["model"])
    return {k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"}


def weights_fingerprint(weights: Mapping[str, torch.Tensor]) -> str:
    """16 hex digits of the SHA-256 of a model's weights (names and raw bytes, by name):
    the same model gives the same digits wherever its file lies (a staged copy, weights
    only, on Kaggle). `sever tune` records it; predict and the model card match by it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(weights.items()):
        digest.update(name.encode())
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()[:16]


def misfit(own: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str:
    """`3 missing keys (e.g. 'decoder.p5.weight'), 1 misshapen key (...)`: how the state
    dict `given` differs from a model's own."""
    kinds = {
        "missing": sorted(own.keys() - given.keys()),
        "unexpected": sorted(given.keys() - own.keys()),
        "misshapen": sorted(
            k for k in own.keys() & given.keys() if own[k].shape != getattr(given[k], "shape", None)
        ),
    }
    parts = [
        f"{len(keys)} {kind} key{'s' * (len(keys) > 1)} (e.g. '{keys[0]}')"
        for kind, keys in kinds.items()
        if keys
    ]
    return ", ".join(parts) or "they do not load"


def initial_weights(source: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load into `model` the weights a new run starts from (`model.init_from`): a run's
    best checkpoint or a checkpoint file, its EMA weights where kept. Returns where they
    came from, for the run's checkpoints.

    Raises:
        CheckpointError: no such run or checkpoint, or weights that do not fit the model.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "model_best.pth"
    if not path.is_file():
        raise CheckpointError(
            f"model.init_from: {source}: no such run (with checkpoints/model_best.pth) or "
            "checkpoint"
        )
    state = load_checkpoint(path)
    weights = evaluated_weights(state)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"model.init_from: {path}: its weights do not fit this model "
            f"({misfit(model.state_dict(), weights)}); start from a run of the same "
            "model.arch, encoder and classes"
        ) from None
    return {"checkpoint": str(path), "epoch": state.get("epoch")}


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (hard link, else copy), atomically.

    Raises:
        WriteError: neither worked (a full disk where links are impossible).
    """
    with writing(target, "checkpoint"), atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def resolve_checkpoint(path: Path, which: str = "last") -> Path:
    """A checkpoint file, or a run directory's `last.pth` / `model_best.pth`."""
    path = Path(path)
    if path.is_dir():
        name = {"last": "last.pth", "best": "model_best.pth"}[which]
        path = path / "checkpoints" / name
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer touches, as tensors and plain values."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
