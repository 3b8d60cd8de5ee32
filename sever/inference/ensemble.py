"""The Ensemble every inference command runs, and the ensemble files it can come from.

An ensemble file::

    models:
      - run: saved/fpn-b5/1122-101500      # its best checkpoint (or `epoch: 40`, `last: true`)
        weight: 1.0
      - checkpoint: saved/unet-b5/1121-090000/checkpoints/checkpoint-epoch52.pth
        weight: 0.5
    tta: hflip
    averaging: rms            # mean | rms | weighted (uses the weights)
    postprocess: tuned.yml    # a file written by `sever tune`, or the mapping itself

The command line's `-r RUN [-e EPOCH ... | --best | --last]` says the same without a file.
Either way the options become one `EnsembleOptions`, and `Ensemble.from_options` loads it:
the file's models turn into checkpoints as `-r` names them, and the command line's
--tta/--averaging/--postprocess win over the file's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
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
from sever.inference.models import (
    Member,
    checkpoint_path,
    inference_device,
    load_members,
    select_checkpoints,
)
from sever.inference.postprocess import PostProcess
from sever.inference.postprocess_file import (
    default_postprocess,
    load_postprocess,
    warn_if_tuned_otherwise,
)
from sever.yamlio import read_yaml


@dataclass(frozen=True)
class EnsembleOptions:
    """What an ensemble is built from: an ensemble file (-c) or runs (-r/-e/--best/--last),
    how their predictions combine, and where and how fast to run them.

    Attributes:
        file: an ensemble file; its models, weights, TTA, averaging and post-processing.
        runs: run directories or checkpoint files (without `file`).
        epochs: each run's checkpoint-epochN.pth (every epoch for every run).
        which: "best" or "last": each run's checkpoint without `epochs`.
        weights: one per checkpoint (default 1), used by weighted averaging alone.
        tta: "none", "hflip", "vflip" or "both", over the file's; None (not given): the
            file's, else none.
        averaging: "mean", "rms" or "weighted"; None: the file's, else mean.
        postprocess: a post-processing file or mapping; None: the file's, else none given
            (each command's default: see `Ensemble.postprocess`).
        device: auto (CUDA, else the CPU), cpu, cuda, cuda:N or mps.
    """

    file: Path | None = None
    runs: tuple[Path, ...] = ()
    epochs: tuple[int, ...] = ()
    which: str = "best"
    weights: tuple[float, ...] | None = None
    tta: str | None = None
    averaging: str | None = None
    postprocess: Path | dict[str, Any] | None = None
    device: str = "auto"
    batch_size: int = 4
    workers: int = 2
    member_tta: tuple[str | None, ...] | None = None  # per checkpoint, from a file
    member_size: tuple[tuple[int, int] | None, ...] | None = None  # the same


@dataclass(frozen=True)
class Ensemble:
    """Models that predict together, and how: TTA views averaged in probability space,
    then the segmenters averaged, then post-processed; with the batch size and loader
    workers to run at. The device is the members' own.

    Attributes:
        members: segmenters, and classifiers beside them (their presence gates or scales
            the masks); loaded, in eval mode, on one device.
        postprocess: None when none was given; `applied_postprocess` is what every
            command then applies: the one default of `default_postprocess`.
    """

    members: list[Member]
    tta: str = "none"
    averaging: str = "mean"
    postprocess: PostProcess | None = None
    batch_size: int = 4
    workers: int = 2

    @property
    def classes(self) -> int:
        """The classes every member predicts (load_members checks they agree)."""
        return self.members[0].config.model.classes

    @property
    def device(self) -> torch.device:
        return next(self.members[0].model.parameters()).device

    @property
    def applied_postprocess(self) -> PostProcess:
        """The post-processing given, else the one default (`default_postprocess`) of the
        first segmenter: its trainer's threshold and min_pixels, one class per pixel."""
        if self.postprocess is not None:
            return self.postprocess
        segmenter = next((m for m in self.members if m.task == "segment"), self.members[0])
        return default_postprocess(segmenter.config)

    @classmethod
    def from_options(cls, options: EnsembleOptions) -> Ensemble:
        """Load the checkpoints that the options name and check they fit together.

        Warns (one line) when the post-processing was tuned with other models or options.

        Raises:
            ConfigError: -c and -r together, or neither; a bad ensemble or post-processing
                file; weights that the averaging would ignore.
            CheckpointError: a missing, unreadable or incompatible checkpoint.
            OptionError: a device this machine does not have.
        """
        if options.file is not None:
            options = file_options(options)
        elif not options.runs:
            raise ConfigError("give -r RUN (repeatable) or -c ENSEMBLE.yml")
        averaging = options.averaging or "mean"
        name = f"{options.file}: postprocess" if options.file else "postprocess"
        if options.postprocess is not None:
            load_postprocess(options.postprocess, name, None)  # its own mistakes first
        device = inference_device(options.device)
        paths = select_checkpoints(list(options.runs), list(options.epochs), options.which)
        if options.weights is not None and len(options.weights) != len(paths):
            raise ConfigError(
                f"weights: {len(options.weights)} given for {len(paths)} checkpoints; give one "
                "per checkpoint"
            )
        members = load_members(paths, device, options.weights)
        for member, tta in zip(members, options.member_tta or (), strict=False):
            member.tta = tta
        for member, size in zip(members, options.member_size or (), strict=False):
            member.size = size
        check_weights(members, averaging, options.file)
        postprocess = None
        if options.postprocess is not None:
            classes = members[0].config.model.classes
            postprocess = load_postprocess(options.postprocess, name, classes)
        ensemble = cls(
            members,
            options.tta or "none",
            averaging,
            postprocess,
            options.batch_size,
            options.workers,
        )
        warn_if_tuned_otherwise(options.postprocess, ensemble)
        warn_if_repeated(ensemble.members, options.file)
        return ensemble

    @classmethod
    def from_runs(
        cls,
        runs: Sequence[Path | str],
        epochs: Sequence[int] = (),
        which: str = "best",
        **settings: Any,
    ) -> Ensemble:
        """The ensemble of `-r RUN ... [-e EPOCH ... | --best | --last]`; `settings` are the
        other fields of EnsembleOptions (tta, averaging, postprocess, device, ...)."""
        paths = tuple(Path(run) for run in runs)
        options = EnsembleOptions(runs=paths, epochs=tuple(epochs), which=which, **settings)
        return cls.from_options(options)

    @classmethod
    def from_file(cls, path: Path | str, **settings: Any) -> Ensemble:
        """The ensemble of an ensemble file; `settings` (tta, averaging, postprocess,
        device, ...) win over the file's as on the command line."""
        return cls.from_options(EnsembleOptions(file=Path(path), **settings))


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: Path | None = None
    checkpoint: Path | None = None
    epoch: Annotated[int, Field(ge=1)] | None = None
    last: bool = False
    weight: Annotated[float, Field(ge=0)] = 1.0
    # this model's own TTA, over the ensemble's (e.g. a slow model without flips)
    tta: Literal["none", "hflip", "vflip", "both"] | None = None
    # this model's own input size [H, W]: images are resized to it and its probabilities
    # back (a model trained at another resolution)
    size: (
        tuple[
            Annotated[int, Field(ge=32, multiple_of=32)],
            Annotated[int, Field(ge=32, multiple_of=32)],
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.run is None) == (self.checkpoint is None):
            raise ValueError("each model needs exactly one of 'run' or 'checkpoint'")
        return self


class EnsembleConfig(BaseModel):
    """The schema of an ensemble file."""

    model_config = ConfigDict(extra="forbid")

    models: Annotated[list[ModelEntry], Field(min_length=1)]
    tta: Literal["none", "hflip", "vflip", "both"] = "none"
    averaging: Literal["mean", "rms", "weighted"] = "mean"
    # Any keys: PostProcess.from_dict checks them, naming a bad one with the valid ones.
    postprocess: Path | dict[Any, Any] | None = None

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


def file_options(options: EnsembleOptions) -> EnsembleOptions:
    """The options with the ensemble file's models as checkpoints (as -r names them), with
    their weights, and the file's TTA, averaging and post-processing where the options
    do not say otherwise."""
    path = options.file
    assert path is not None  # from_options comes here only with a file
    if options.runs:
        raise ConfigError("give either -c ENSEMBLE.yml or -r RUN, not both")
    spec = load_ensemble(path)
    paths = []
    for i, m in enumerate(spec.models):
        try:
            paths.append(entry_checkpoint(m))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: models.{i}: {exc}") from None
    weights = tuple(m.weight for m in spec.models)
    chosen = options.averaging or spec.averaging
    if chosen != "weighted" and any(w != 1.0 for w in weights):
        by = f"--averaging {chosen}" if options.averaging else f"averaging: {chosen}"
        listed = ", ".join(f"{w:g}" for w in weights)
        raise ConfigError(
            f"{path}: {by} ignores the models' weights ({listed}); set averaging: "
            "weighted to use them, or remove the weights"
        )
    return replace(
        options,
        runs=tuple(paths),
        epochs=(),
        weights=weights,
        member_tta=tuple(m.tta for m in spec.models),
        member_size=tuple(m.size for m in spec.models),
        tta=spec.tta if options.tta is None else options.tta,
        averaging=chosen,
        postprocess=options.postprocess or spec.postprocess,
    )


def entry_checkpoint(entry: ModelEntry) -> Path:
    """The checkpoint file of one `models:` entry (which must exist)."""
    if entry.run is not None and not entry.run.exists():
        raise CheckpointError(f"run: {entry.run}: no such run directory")
    if entry.checkpoint is None:
        assert entry.run is not None  # ModelEntry names one of the two
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
    segmenters = [m for m in members if m.task == "segment"]
    if segmenters and sum(m.weight for m in segmenters) <= 0:
        raise ConfigError(f"{where}every segmentation model has weight 0; give one a weight > 0")


def warn_if_repeated(members: list[Member], source: Path | None) -> None:
    """Log one warning for each model that repeats an earlier one: the same checkpoint file
    (by any spelling or link) with the same TTA and input size only counts twice in the
    average. With its own TTA or size it is another view of the images, and fine."""
    seen: dict[tuple[int, int, str | None, tuple[int, int] | None], int] = {}
    for i, m in enumerate(members):
        stat = m.path.stat()
        first = seen.setdefault((stat.st_dev, stat.st_ino, m.tta, m.size), i)
        if first != i:
            # in a file, members are its models in order; on the command line, the -r paths
            name, again = (
                (f"models.{first}", f"models.{i}") if source else (members[first].path, m.path)
            )
            logging.getLogger(__name__).warning(
                "%s%s repeats %s (%s, the same TTA and size): it counts twice in the average; "
                "remove one, or give one model a larger weight with averaging: weighted",
                f"{source}: " if source else "",
                again,
                name,
                m.path.resolve(),
            )
