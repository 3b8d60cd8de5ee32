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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sever.config_errors import describe_error
from sever.errors import CheckpointError, ConfigError
from sever.inference.models import Member, checkpoint_path
from sever.inference.postprocess import TUNED_WITH, PostProcess
from sever.yamlio import read_yaml

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

    @field_validator("postprocess", mode="before")
    @classmethod
    def _postprocess(cls, value: object) -> object:
        if value is None or isinstance(value, (str, Path, dict)):
            return value
        raise ValueError(f"expected a post-processing file or its mapping, got {value!r}")


def load_ensemble(path: Path) -> EnsembleConfig:
    """Read and validate an ensemble YAML; relative paths are relative to the working dir."""
    data = read_yaml(path, "ensemble file") or {}
    if isinstance(data, dict) and "name" in data and "models" not in data:
        raise ConfigError(
            f"{path}: this is an experiment config (it has 'name'), not an ensemble file; "
            "give -r RUN, or an ensemble file with models: [- run: RUN]"
        )
    try:
        return EnsembleConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, {}, str(path), EnsembleConfig)) from None


def load_postprocess(source: Path | dict | None, name: str = "postprocess") -> PostProcess:
    """A PostProcess from a YAML file (as `sever tune` writes), a mapping, or the defaults.

    Args:
        name: where a mapping came from, for messages (e.g. 'ensemble.yml: postprocess').
    """
    return read_postprocess(source, name)[0]


def read_postprocess(
    source: Path | dict | None, name: str = "postprocess"
) -> tuple[PostProcess, dict | None]:
    """The PostProcess of a YAML file, a mapping or the defaults, and the `tuned_with`
    record of a tuned file (None without one)."""
    if source is None:
        return PostProcess(), None
    if not isinstance(source, dict):
        name = str(source)
        source = read_yaml(Path(source), "post-processing file") or {}
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
    paths = []
    for i, m in enumerate(spec.models):
        try:
            paths.append(entry_checkpoint(m))
        except CheckpointError as exc:
            raise CheckpointError(f"{ensemble}: models.{i}: {exc}") from None
    weights = [m.weight for m in spec.models]
    chosen = averaging or spec.averaging
    if chosen != "weighted" and any(w != 1.0 for w in weights):
        by = f"--averaging {chosen}" if averaging else f"averaging: {chosen}"
        listed = ", ".join(f"{w:g}" for w in weights)
        raise ConfigError(
            f"{ensemble}: {by} ignores the models' weights ({listed}); set averaging: "
            "weighted to use them, or remove the weights"
        )
    return Sources(
        paths,
        [],
        weights,
        spec.tta if tta == "none" else tta,
        chosen,
        pp_path or spec.postprocess,
    )


def entry_checkpoint(entry: ModelEntry) -> Path:
    """The checkpoint file of one `models:` entry (which must exist)."""
    if entry.run is not None and not entry.run.exists():
        raise CheckpointError(f"run: {entry.run}: no such run directory")
    if entry.checkpoint is None:
        return checkpoint_path(entry.run, entry.epoch, "last" if entry.last else "best")
    if not entry.checkpoint.is_file():
        raise CheckpointError(f"checkpoint: {entry.checkpoint}: no such checkpoint file")
    return entry.checkpoint


def check_weights(members: list[Member], averaging: str, source: Path | None) -> None:
    """Weighted averaging needs a weight above 0 among the segmenters, and classifiers
    take no weight (their presence is a plain mean): refuse what would be ignored."""
    if averaging != "weighted":
        return
    where = f"{source}: " if source else ""
    for m in members:
        if m.task == "classify" and m.weight != 1.0:
            raise ConfigError(
                f"{where}{m.path} is a classifier: its weight {m.weight:g} would be ignored "
                "(classifiers' presence is a plain mean); remove it"
            )
    if sum(m.weight for m in members if m.task == "segment") <= 0:
        raise ConfigError(f"{where}every segmentation model has weight 0; give one a weight > 0")
