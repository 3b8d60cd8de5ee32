"""Ensemble files: which checkpoints, their weights, TTA, averaging and post-processing.

models:
  - run: saved/fpn-b5/1122-101500      # its best checkpoint (or `epoch: 40`, `last: true`)
    weight: 1.0
  - checkpoint: saved/unet-b5/1121-090000/checkpoints/checkpoint-epoch52.pth
    weight: 0.5
tta: hflip
averaging: rms            # mean | rms | weighted (uses the weights)
postprocess: tuned.yml    # a file written by `sever tune`, or the mapping itself
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sever.config_errors import describe_error
from sever.errors import ConfigError
from sever.inference.models import checkpoint_path
from sever.inference.postprocess import PostProcess


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: Path | None = None
    checkpoint: Path | None = None
    epoch: Annotated[int, Field(ge=1)] | None = None
    last: bool = False
    weight: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.run is None) == (self.checkpoint is None):
            raise ValueError("each model needs exactly one of 'run' or 'checkpoint'")
        return self


class EnsembleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: Annotated[list[ModelEntry], Field(min_length=1)]
    tta: Literal["none", "hflip", "vflip", "both"] = "none"
    averaging: Literal["mean", "rms", "weighted"] = "mean"
    postprocess: Path | dict | None = None


def load_ensemble(path: Path) -> EnsembleConfig:
    """Read and validate an ensemble YAML; relative paths are relative to the working dir."""
    if not path.is_file():
        raise ConfigError(f"{path}: ensemble file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return EnsembleConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, {}, str(path), EnsembleConfig)) from None


def load_postprocess(source: Path | dict | None) -> PostProcess:
    """A PostProcess from a YAML file (as `sever tune` writes), a mapping, or the defaults."""
    if source is None:
        return PostProcess()
    name = "postprocess"
    if not isinstance(source, dict):
        name = str(source)
        if not Path(source).is_file():
            raise ConfigError(f"{source}: post-processing file not found")
        try:
            source = yaml.safe_load(Path(source).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return PostProcess.from_dict(source)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class Sources:
    """What to run, from -r/-e/--best or an ensemble file (predict, pseudo-label)."""

    runs: list[Path]
    epochs: list[int]
    weights: list[float] | None
    tta: str
    averaging: str
    postprocess: Path | dict | None


def resolve_sources(
    ensemble: Path | None,
    runs: list[Path],
    epochs: list[int],
    tta: str,
    averaging: str | None,
    pp_path: Path | None,
) -> Sources:
    """The ensemble file's models, TTA, averaging and post-processing; command-line
    --tta/--averaging/--postprocess win over the file's."""
    if ensemble is None:
        if not runs:
            raise ConfigError("give -r RUN (repeatable) or -c ENSEMBLE.yml")
        return Sources(list(runs), list(epochs), None, tta, averaging or "mean", pp_path)
    if runs:
        raise ConfigError("give either -c ENSEMBLE.yml or -r RUN, not both")
    spec = load_ensemble(ensemble)
    paths = [
        m.checkpoint or checkpoint_path(m.run, m.epoch, "last" if m.last else "best")
        for m in spec.models
    ]
    return Sources(
        paths,
        [],
        [m.weight for m in spec.models],
        spec.tta if tta == "none" else tta,
        averaging or spec.averaging,
        pp_path or spec.postprocess,
    )
