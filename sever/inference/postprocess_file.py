"""Post-processing files: read strictly, with the record of what they were tuned with.

A file that `sever tune` writes holds the tuned values and `tuned_with`: the TTA, the
averaging and each model (checkpoint, weight, task, weights fingerprint). Thresholds fit
the probabilities of one ensemble, so predict, pseudo-label and evaluate compare the
record with their own ensemble and warn in one line when it differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from sever.config import Config
from sever.config_errors import describe_error
from sever.errors import ConfigError
from sever.inference.postprocess import DEFAULT_CLASSES, TUNED_WITH, PostProcess
from sever.yamlio import read_yaml

log = logging.getLogger(__name__)
TUNED_FILE = "postprocess-tuned.yml"  # sever tune's output in a run (and staged beside it)


class TunedMember(Protocol):
    """What the record says of one model (an ensemble's `Member` has it)."""

    @property
    def path(self) -> Path: ...
    @property
    def weight(self) -> float: ...
    @property
    def task(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def tta(self) -> str | None: ...
    @property
    def size(self) -> tuple[int, int] | None: ...


class TunedEnsemble(Protocol):
    """What the record says of an ensemble: `sever.inference.ensemble.Ensemble` has it. The
    record belongs to the post-processing file; the ensemble, which reads such files,
    imports this module, so this one names what it reads rather than the class."""

    @property
    def members(self) -> Sequence[TunedMember]: ...
    @property
    def tta(self) -> str: ...
    @property
    def averaging(self) -> str: ...


def default_postprocess(config: Config) -> PostProcess:
    """The one default post-processing of a model, when none is given: its trainer's
    `threshold` and `min_pixels` (None: `DEFAULT_MIN_PIXELS`, 600/600/1000/2000, for 4
    classes, else 0), with one class per pixel. Validation during training, evaluate, tune's
    "before", predict, compare, pseudo-label, overlays and export's manifest all use it, so
    a model scores the same wherever it is scored.
    """
    trainer = config.trainer
    return PostProcess(
        threshold=trainer.threshold,
        min_pixels=trainer.min_pixels,
        one_class_per_pixel=True,
        classes=config.model.classes,
    )


def load_postprocess(
    source: Path | dict[str, Any] | None,
    name: str = "postprocess",
    classes: int | None = None,
) -> PostProcess:
    """A PostProcess from a YAML file (as `sever tune` writes), a mapping, or the defaults.

    Args:
        name: where a mapping came from, for messages (e.g. 'ensemble.yml: postprocess').
        classes: the models' classes, which the file must fit (see `PostProcess.from_dict`);
            None checks the file on its own, before the models are loaded.
    """
    return read_postprocess(source, name, classes)[0]


def read_postprocess(
    source: Path | dict[str, Any] | None,
    name: str = "postprocess",
    classes: int | None = None,
) -> tuple[PostProcess, dict[str, Any] | None]:
    """The PostProcess of a YAML file, a mapping or the defaults, and the `tuned_with`
    record of a tuned file (None without one)."""
    if source is None:
        return PostProcess(classes=classes or DEFAULT_CLASSES), None
    data: object = source
    if not isinstance(source, dict):
        name = str(source)
        data = read_yaml(Path(source), "post-processing file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: PostProcess: expected a mapping, got {type(data).__name__}")
    try:
        postprocess = PostProcess.from_dict(data, classes)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    record = data.get(TUNED_WITH)
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
    tta: str | None = None  # its own TTA, when the ensemble file set one
    size: list[int] | None = None  # its own input size, likewise


class TunedWith(BaseModel):
    """What a tuned file was tuned with: `sever tune` writes it, predict compares it."""

    tta: str
    averaging: str
    models: list[TunedModel]


def tuned_with(ensemble: TunedEnsemble) -> dict[str, Any]:
    """The `tuned_with` record of a tuned file: TTA, averaging, and each model's checkpoint,
    weight, task and weights fingerprint (the same wherever the file is copied)."""
    models = [
        {
            "checkpoint": str(m.path),
            "weight": m.weight,
            "task": m.task,
            "weights_sha256": m.fingerprint,
        }
        | ({"tta": m.tta} if m.tta else {})
        | ({"size": list(m.size)} if m.size else {})
        for m in ensemble.members
    ]
    return {"tta": ensemble.tta, "averaging": ensemble.averaging, "models": models}


def tuning_differences(record: dict[str, Any], ensemble: TunedEnsemble) -> list[str]:
    """How this ensemble differs from the one a post-processing was tuned with (empty
    when it is the same: TTA, averaging where it matters, models by their weights, and
    their weights under weighted averaging)."""
    members, tta, averaging = ensemble.members, ensemble.tta, ensemble.averaging
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
    views = [
        str(m.path) for key, m in here.items() if key in tuned and tuned[key].get("tta") != m.tta
    ]
    if views:
        found.append(f"another per-model TTA for {', '.join(views)}")
    sizes = [
        str(m.path)
        for key, m in here.items()
        if key in tuned and tuned[key].get("size") != (list(m.size) if m.size else None)
    ]
    if sizes:
        found.append(f"another per-model input size for {', '.join(sizes)}")
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
    source: Path | dict[str, Any] | None, ensemble: TunedEnsemble
) -> list[str]:
    """Log one warning when the post-processing was tuned with other models or options
    than this ensemble's; returns what differs."""
    _, record = read_postprocess(source)
    if record is None:
        return []
    found = tuning_differences(record, ensemble)
    if found:
        where = source if not isinstance(source, dict) else "the ensemble's postprocess"
        log.warning(
            "%s was tuned for another ensemble: %s; its thresholds may not fit this one (tune "
            "it again with these models and options)",
            where,
            "; ".join(found),
        )
    return found
