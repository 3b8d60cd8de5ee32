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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sever.config_errors import describe_error
from sever.errors import ConfigError
from sever.inference.models import Member, checkpoint_path
from sever.inference.postprocess import TUNED_WITH, PostProcess

log = logging.getLogger(__name__)


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
    return read_postprocess(source)[0]


def read_postprocess(source: Path | dict | None) -> tuple[PostProcess, dict | None]:
    """The PostProcess of a YAML file, a mapping or the defaults, and the `tuned_with`
    record of a tuned file (None without one)."""
    if source is None:
        return PostProcess(), None
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
        postprocess = PostProcess.from_dict(source)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    record = source.get(TUNED_WITH)
    if record is not None:
        try:
            record = TunedWith.model_validate(record).model_dump()
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, {}, f"{name}: {TUNED_WITH}", TunedWith)) from None
    return postprocess, record


class TunedModel(BaseModel):
    checkpoint: str
    weight: float = 1.0
    task: str = "segment"
    weights_sha256: str


class TunedWith(BaseModel):
    """What a tuned file was tuned with: `sever tune` writes it, predict compares it."""

    tta: str
    averaging: str
    models: list[TunedModel]


def tuned_with(members: list[Member], tta: str, averaging: str) -> dict:
    """The `tuned_with` record of a tuned file: TTA, averaging, and each model's checkpoint,
    weight, task and weights fingerprint (the same wherever the file is copied)."""
    models = [
        {
            "checkpoint": str(m.path),
            "weight": m.weight,
            "task": m.task,
            "weights_sha256": m.fingerprint,
        }
        for m in members
    ]
    return {"tta": tta, "averaging": averaging, "models": models}


def tuning_differences(record: dict, members: list[Member], tta: str, averaging: str) -> list[str]:
    """How this ensemble differs from the one a post-processing was tuned with (empty
    when it is the same: TTA, averaging where it matters, models by their weights, and
    their weights under weighted averaging)."""
    found = []
    if record["tta"] != tta:
        found.append(f"TTA {record['tta']} (here {tta})")
    segmenters = sum(m.task == "segment" for m in members)
    if record["averaging"] != averaging and segmenters > 1:
        found.append(f"averaging {record['averaging']} (here {averaging})")
    tuned = {m["weights_sha256"]: m for m in record["models"]}
    here = {m.fingerprint: m for m in members}
    missing = [m["checkpoint"] for key, m in tuned.items() if key not in here]
    if missing:
        found.append(f"{len(missing)} model(s) not given here ({', '.join(missing)})")
    extra = [str(m.path) for key, m in here.items() if key not in tuned]
    if extra:
        found.append(f"{len(extra)} model(s) here that it was not tuned with ({', '.join(extra)})")
    if averaging == "weighted" and record["averaging"] == "weighted":
        changed = [
            str(m.path)
            for key, m in here.items()
            if key in tuned and tuned[key]["weight"] != m.weight
        ]
        if changed:
            found.append(f"other weights for {', '.join(changed)}")
    return found


def warn_if_tuned_otherwise(
    source: Path | dict | None, members: list[Member], tta: str, averaging: str
) -> list[str]:
    """Log one warning when the post-processing was tuned with other models or options
    than these; returns what differs."""
    _, record = read_postprocess(source)
    if record is None:
        return []
    found = tuning_differences(record, members, tta, averaging)
    if found:
        where = source if not isinstance(source, dict) else "the ensemble's postprocess"
        log.warning(
            "%s was tuned for another ensemble: %s; its thresholds may not fit this one (tune "
            "it again with these models and options)",
            where,
            "; ".join(found),
        )
    return found


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
