"""The experiment schema: YAML files + `-o key=value` overrides -> one validated `Config`.

`load_config` is the only way in. It merges the files (each may `extends:` a base file),
applies the overrides, and validates everything that can be checked before the first
batch. Any problem is a `ConfigError` whose one-line message names the file (or the
override), the dotted key, what was found and what was expected.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sever import components
from sever.config_errors import describe_error
from sever.errors import ConfigError
from sever.yamlio import read_yaml as read_yaml_file

Size = tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments re-validate, and
    a mapping given for a nested section fills in that section's default key by key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _onto_defaults(cls, data: object) -> object:
        """`optimizer.encoder: {lr: 1e-3}` keeps the encoder group's default weight decay
        (3e-5), not GroupConfig's own 0: a nested default is merged into, never replaced."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, info in cls.model_fields.items():
            default, given = info.default, data.get(name)
            if isinstance(default, BaseModel) and isinstance(given, dict):
                # only what the default sets itself: the rest is its type's own default,
                # and left unset it still reads as not given (e.g. a classifier's monitor)
                merged[name] = onto(default.model_dump(exclude_unset=True), given)
        return merged


def onto(default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` merged key by key onto `default`, nested mappings likewise."""
    out = dict(default)
    for key, value in given.items():
        base = out.get(key)
        out[key] = (
            onto(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
        )
    return out


def multiple_of_32(size: Size | None) -> Size | None:
    """Reject model input sizes that an encoder with 5 poolings cannot take."""
    if size is None:
        return None
    for side in size:
        if side % 32:
            low, high = side // 32 * 32, (side // 32 + 1) * 32
            nearest = f"{low} or {high}" if low else f"{high}"
            raise ValueError(f"{side} is not a multiple of 32 (nearest valid: {nearest})")
    return size


def per_class_value(value: object, whole: bool, low: str) -> object:
    """A per-class setting's value before its type is checked: a list passes on; one
    number (for every class) must itself be valid, with a message that says both forms.

    Args:
        low: '>= 0' or '> 0', the bound each value must meet.
    """
    if value is None or isinstance(value, list | tuple):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number:
        assert isinstance(value, int | float)
        valid = (value >= 0 if low == ">= 0" else value > 0) and (not whole or value == int(value))
        if valid:
            return int(value) if whole else value
    raise ValueError(
        f"expected a {'whole number' if whole else 'number'} {low} for every class, or a list "
        f"of them (one per class), got {value!r}"
    )


# Names are checked in a second pass of validate(): architectures and encoders are SMP's and
# timm's (seconds to import), so a typo, an unknown key or a wrong type is reported from the
# first, in under a second. Recipe, sampler, optimiser and scheduler names are sever's own,
# listed in sever.components without the libraries that build them.
NAMES_CHECKED = "names"


def names_checked(info: ValidationInfo) -> bool:
    """False in validate()'s first pass, which checks keys, types and values only."""
    return bool((info.context or {}).get(NAMES_CHECKED, True))


def architecture_known(name: str) -> str:
    from sever.model.catalogue import ARCHITECTURES  # SMP: see NAMES_CHECKED

    return ARCHITECTURES.check(name)


def encoder_known(name: str) -> str:
    from sever.model.catalogue import check_encoder  # SMP and timm: see NAMES_CHECKED

    return check_encoder(name)


def registered(check: Callable[[str], str], name: str, info: ValidationInfo) -> str:
    """`check(name)` (the name, else ValueError) in the pass that checks names, else `name`."""
    return check(name) if names_checked(info) else name


class NormalizeConfig(Section):
    """Grey-level normalisation; the defaults are the Severstal training set's statistics."""

    mean: float = 0.3439
    std: Annotated[float, Field(gt=0)] = 0.0383


class PseudoConfig(Section):
    """Pseudo-labelled images mixed into every training batch (see README, Training).

    `csv` holds their labels (either format; long: defect rows only); the pseudo set is
    the CSV's ImageIds plus, if it exists, the ids listed one per line in the sibling file
    `<csv stem>-images.txt` (the defect-free ones, which have no row).
    """

    csv: Path
    images: Path
    fraction: Annotated[float, Field(gt=0, lt=1)] = 0.125
    sample_rate: Annotated[float, Field(gt=0, le=1)] = 0.6

    @field_validator("csv")
    @classmethod
    def _csv(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @field_validator("images")
    @classmethod
    def _images(cls, path: Path) -> Path:
        if not path.is_dir():
            raise ValueError(f"folder not found: {path}")
        return path


class CropStage(Section):
    """From `from_epoch` on, each training batch is cropped to one of `sizes` (drawn per
    batch, seeded by (seed, epoch)): several sizes within an epoch, a progressive
    schedule across epochs, or both."""

    from_epoch: Annotated[int, Field(ge=1)]
    sizes: Annotated[list[Size], Field(min_length=1)]

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[Size]) -> list[Size]:
        for size in sizes:
            multiple_of_32(size)
        return sizes


class DataConfig(Section):
    dir: Path = Path("data/synthetic")
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    folds: Annotated[int, Field(ge=2)] | None = None
    fold: Annotated[int, Field(ge=0)] | None = None
    image_size: Size = (256, 1600)
    crop: Size | None = (256, 384)
    crops: list[CropStage] = []  # crop sizes by epoch; `crop` before the first stage
    augment: str = "heavy-crop"
    defect_crop: Annotated[float, Field(ge=0, le=1)] = 0.5  # share of crops around a defect
    normalize: NormalizeConfig = NormalizeConfig()
    sampler: str = "random"
    balance_share: Annotated[float, Field(gt=0, lt=1)] = 0.5
    workers: Annotated[int, Field(ge=0)] = 2
    check: bool = True
    pseudo: PseudoConfig | None = None

    @field_validator("crop", "image_size")
    @classmethod
    def _sizes(cls, size: Size | None) -> Size | None:
        return multiple_of_32(size)

    @field_validator("augment")
    @classmethod
    def _augment(cls, name: str, info: ValidationInfo) -> str:
        return registered(components.RECIPES.check, name, info)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, name: str, info: ValidationInfo) -> str:
        return registered(components.SAMPLERS.check, name, info)

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        height, width = self.image_size
        if self.crop and (self.crop[0] > height or self.crop[1] > width):
            raise ValueError(
                f"data.crop {list(self.crop)} is larger than data.image_size "
                f"{list(self.image_size)}"
            )
        for i, stage in enumerate(self.crops):
            for size in stage.sizes:
                if size[0] > height or size[1] > width:
                    raise ValueError(
                        f"data.crops.{i}.sizes: {list(size)} is larger than data.image_size "
                        f"{list(self.image_size)}"
                    )
        starts = [stage.from_epoch for stage in self.crops]
        if starts != sorted(set(starts)):
            raise ValueError(
                f"data.crops: from_epoch must increase from stage to stage, got {starts}"
            )
        return self

    def crop_sizes(self, epoch: int) -> list[Size | None]:
        """The crop sizes training batches take in `epoch` (1-based); [None]: full images."""
        sizes: list[Size | None] = [self.crop]
        for stage in self.crops:
            if stage.from_epoch <= epoch:
                sizes = list(stage.sizes)
        return sizes

    @model_validator(mode="after")
    def _fold(self) -> DataConfig:
        if self.fold is not None and self.folds is None:
            raise ValueError("data.fold is set but data.folds is not; set data.folds (e.g. 5)")
        if self.fold is not None and self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"data.fold {self.fold} is out of range for {self.folds} folds")
        return self


class ClassHeadConfig(Section):
    """A per-class presence head, trained with BCE (pos_weight per class, optional).

    With `task: segment` it is SMP's aux head beside the masks (`enabled`, its loss
    `weight`); with `task: classify` it is the whole model's head on the pooled encoder,
    always on, its BCE the only loss (`enabled` and `weight` do not apply).
    """

    enabled: bool = False
    dropout: Fraction = 0.2
    pooling: Literal["avg", "max"] = "avg"
    weight: Annotated[float, Field(ge=0)] = 0.2
    # one per class, or one number for every class
    pos_weight: list[Annotated[float, Field(gt=0)]] | Annotated[float, Field(gt=0)] | None = None

    @field_validator("pos_weight", mode="before")
    @classmethod
    def _pos_weight(cls, value: object) -> object:
        return per_class_value(value, whole=False, low="> 0")


# A value in model.arch_params: what an SMP constructor takes from YAML.
ArchValue = bool | int | float | str | None | list[int] | list[str]

# Constructor arguments sever sets itself, and from which key.
SEVER_SETS = {
    "encoder_name": "model.encoder",
    "encoder_weights": "model.encoder_weights",
    "in_channels": "model.input_channel",
    "classes": "model.classes",
    "activation": "none: the models give logits",
    "aux_params": "model.class_head",
    "decoder_dropout": "model.dropout",
    "psp_dropout": "model.dropout",
}


class ModelConfig(Section):
    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    input_channel: Literal["r", "g", "b", "sum"] = "sum"
    classes: Annotated[int, Field(ge=1)] = 4
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    class_head: ClassHeadConfig = ClassHeadConfig()
    # Start from another run's weights (its best checkpoint) or a checkpoint's: checked
    # when training starts, so a checkpoint trained this way loads where it is not.
    init_from: Path | None = None
    # More arguments of the SMP architecture's constructor, e.g. FPN's
    # decoder_pyramid_channels or Unet's decoder_attention_type: scse.
    arch_params: dict[str, ArchValue] = {}

    @field_validator("arch")
    @classmethod
    def _arch(cls, name: str, info: ValidationInfo) -> str:
        return registered(architecture_known, name, info)

    @field_validator("arch_params")
    @classmethod
    def _arch_takes(
        cls, params: dict[str, ArchValue], info: ValidationInfo
    ) -> dict[str, ArchValue]:
        for name in params:
            if name in SEVER_SETS:
                raise ValueError(f"'{name}' is set by sever ({SEVER_SETS[name]}); remove it")
        arch = info.data.get("arch")  # absent when the arch itself was refused
        if params and arch and names_checked(info):
            from sever.model.catalogue import check_arch_params  # SMP: see NAMES_CHECKED

            check_arch_params(arch, params, exclude=SEVER_SETS)
        return params

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, name: str, info: ValidationInfo) -> str:
        return registered(encoder_known, name, info)

    @field_validator("encoder_weights")
    @classmethod
    def _weights(cls, value: str | None) -> str | None:
        if value in (None, "imagenet") or Path(value).is_file():
            return value
        raise ValueError(f"expected 'imagenet', null or an existing weights file, got {value!r}")


class LossWeights(Section):
    """Weights of the loss terms (each a name in sever.model.losses.LOSSES); 0 = off."""

    bce: Annotated[float, Field(ge=0)] = 0.6
    dice: Annotated[float, Field(ge=0)] = 0.4
    dice_pooled: Annotated[float, Field(ge=0)] = 0.0
    lovasz: Annotated[float, Field(ge=0)] = 0.0
    focal: Annotated[float, Field(ge=0)] = 0.0

    def weights(self) -> dict[str, float]:
        """Term name -> weight, the terms in use only."""
        return {name: getattr(self, name) for name in LOSS_TERMS if getattr(self, name) > 0}

    @model_validator(mode="after")
    def _any(self) -> LossWeights:
        if not self.weights():
            raise ValueError("expected at least one loss term with a weight above 0")
        return self


LOSS_TERMS = ("bce", "dice", "dice_pooled", "lovasz", "focal")


class LossStage(LossWeights):
    """From `from_epoch` on, these weights replace the ones before (a term not named: 0)."""

    from_epoch: Annotated[int, Field(ge=2)]
    bce: Annotated[float, Field(ge=0)] = 0.0
    dice: Annotated[float, Field(ge=0)] = 0.0


class LossConfig(LossWeights):
    """The loss weights from epoch 1, and `stages` that change them later in training
    (e.g. BCE + Dice, then Lovasz for the last epochs)."""

    stages: list[LossStage] = []

    @model_validator(mode="after")
    def _ordered(self) -> LossConfig:
        starts = [stage.from_epoch for stage in self.stages]
        if starts != sorted(set(starts)):
            raise ValueError(
                f"loss.stages: from_epoch must increase from stage to stage, got {starts}"
            )
        return self

    def at_epoch(self, epoch: int) -> dict[str, float]:
        """The weights in use in `epoch` (1-based)."""
        current: LossWeights = self
        for stage in self.stages:
            if stage.from_epoch <= epoch:
                current = stage
        return current.weights()

    def all_terms(self) -> list[str]:
        """Every term some epoch uses, in LOSS_TERMS order."""
        used = set(self.weights()).union(*(stage.weights() for stage in self.stages))
        return [name for name in LOSS_TERMS if name in used]


class GroupConfig(Section):
    """Learning rate and weight decay of one parameter group."""

    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class OptimizerConfig(Section):
    type: str = "radam"
    encoder: GroupConfig = GroupConfig(lr=7e-5, weight_decay=3e-5)
    decoder: GroupConfig = GroupConfig(lr=3e-3, weight_decay=3e-4)
    momentum: Fraction = 0.9

    @field_validator("type")
    @classmethod
    def _type(cls, name: str, info: ValidationInfo) -> str:
        return registered(components.OPTIMIZERS.check, name, info)


class SchedulerConfig(Section):
    """Learning-rate schedule; epochs may be fractional, the schedule steps per iteration."""

    type: str = "flat-cosine"
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    flat_epochs: Annotated[float, Field(ge=0)] = 30.0
    cosine_epochs: Annotated[float, Field(gt=0)] = 220.0
    # flat-logistic (the original project's schedule): the roll-off's length after flat_epochs
    rolloff_epochs: Annotated[float, Field(gt=0)] = 221.0
    min_lr_ratio: Fraction = 0.0
    plateau_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    plateau_patience: Annotated[int, Field(ge=0)] = 3

    @field_validator("type")
    @classmethod
    def _type(cls, name: str, info: ValidationInfo) -> str:
        return registered(components.SCHEDULERS.check, name, info)


# What a run can monitor: losses, the Dice of the masks (mean, per class c, on pairs with
# a defect), and of presence the mean F1 and per class F1, precision and recall.
MONITOR_FORMS = re.compile(
    r"val_loss|train_loss|val_dice_(mean|positive|\d+)|val_f1_mean|val_(f1|precision|recall)_\d+"
)


def monitorable(classes: int, presence: bool, masks: bool = True) -> list[str]:
    """Every metric a run with `classes` classes computes and can monitor."""
    names = ["val_loss", "train_loss"]
    if masks:
        names += ["val_dice_mean", *(f"val_dice_{c}" for c in range(1, classes + 1))]
        names.append("val_dice_positive")
    if presence:
        names.append("val_f1_mean")
        kinds = ("f1", "precision", "recall")
        names += [f"val_{kind}_{c}" for kind in kinds for c in range(1, classes + 1)]
    return names


class TrainerConfig(Section):
    epochs: Annotated[int, Field(ge=1)] = 250
    batch_size: Annotated[int, Field(ge=1)] = 16
    val_batch_size: Annotated[int, Field(ge=1)] | None = None
    save_dir: Path = Path("saved")
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = False
    accumulate: Annotated[int, Field(ge=1)] = 1
    clip_grad: Annotated[float, Field(gt=0)] | None = None
    ema: Annotated[float, Field(gt=0, lt=1)] | None = None
    compile: bool = False
    sync_bn: bool = False
    cudnn_benchmark: bool = True
    steps_per_epoch: Annotated[int, Field(ge=1)] | None = None
    val_every: Annotated[int, Field(ge=1)] = 1
    monitor: str = "max val_dice_mean"
    early_stop: Annotated[int, Field(ge=1)] | None = None
    save_top_k: Annotated[int, Field(ge=0)] = 3
    save_period: Annotated[int, Field(ge=0)] = 0
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # one per class, or one number for every class; None: 600/600/1000/2000 for 4 classes,
    # else 0 (PostProcess's; the one default post-processing is default_postprocess in
    # sever.inference.postprocess_file)
    min_pixels: list[Annotated[int, Field(ge=0)]] | Annotated[int, Field(ge=0)] | None = None
    tensorboard: bool = True
    log_images: Annotated[int, Field(ge=0)] = 4
    log_every: Annotated[int, Field(ge=1)] = 50

    @field_validator("min_pixels", mode="before")
    @classmethod
    def _min_pixels(cls, value: object) -> object:
        return per_class_value(value, whole=True, low=">= 0")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, value: object) -> object:
        """YAML reads a bare `off` as false: `amp: off` means what it says."""
        return "off" if value is False else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            return value
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}")

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str) -> str:
        mode, _, metric = value.partition(" ")
        if mode not in ("max", "min") or not MONITOR_FORMS.fullmatch(metric):
            raise ValueError(
                f"expected 'max METRIC' or 'min METRIC' with METRIC one of "
                f"{', '.join(monitorable(4, True))} (per class: 1..model.classes), "
                f"got {value!r}"
            )
        return value

    @property
    def monitor_mode(self) -> str:
        return self.monitor.split()[0]

    @property
    def monitor_metric(self) -> str:
        return self.monitor.split()[1]


class Config(Section):
    """One experiment: everything `sever train` needs, and all it records in the run."""

    name: str
    seed: int = 42
    # segment: masks (and optionally a presence head); classify: per-class presence only,
    # an encoder with a pooled head, for gating or scaling a segmenter's masks.
    task: Literal["segment", "classify"] = "segment"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(
                f"expected letters, digits, '.', '_' or '-' (it names the run folder "
                f"saved/<name>/), got {name!r}"
            )
        return name

    @model_validator(mode="after")
    def _monitor_fits_task(self) -> Config:
        """A classifier has no Dice: it monitors mean F1 unless told otherwise."""
        trainer = self.trainer
        if self.task == "classify" and "monitor" not in trainer.model_fields_set:
            trainer.monitor = "max val_f1_mean"
        metric = trainer.monitor_metric
        if self.task == "classify" and "dice" in metric:
            raise ValueError(
                f"trainer.monitor: a classifier (task: classify) has no {metric}; "
                "monitor val_f1_mean (the default), val_loss or another val_f1/precision/recall"
            )
        heads = self.task == "classify" or self.model.class_head.enabled
        presence = metric.startswith(("val_f1", "val_precision", "val_recall"))
        if presence and not heads:
            raise ValueError(
                f"trainer.monitor: {metric} needs class presence; set model.class_head.enabled "
                "or task: classify"
            )
        if metric not in monitorable(self.model.classes, heads, self.task == "segment"):
            raise ValueError(
                f"trainer.monitor: this run computes no {metric} (model.classes "
                f"{self.model.classes}); monitor one of "
                f"{', '.join(monitorable(self.model.classes, heads, self.task == 'segment'))}"
            )
        return self

    @model_validator(mode="after")
    def _one_per_class(self) -> Config:
        """Per-class lists hold one value per class of model.classes; one number stands
        for every class and becomes that list."""
        classes = self.model.classes
        for where, section, name in (
            ("model.class_head", self.model.class_head, "pos_weight"),
            ("trainer", self.trainer, "min_pixels"),
        ):
            values, key = getattr(section, name), f"{where}.{name}"
            if isinstance(values, int | float):
                setattr(section, name, [values] * classes)
            elif values is not None and len(values) != classes:
                raise ValueError(
                    f"{key}: expected a list of {classes} values (one per class of "
                    f"model.classes), got {len(values)}"
                )
        return self


# ---------------------------------------------------------------- loading


def load_config(
    paths: list[str | Path] | list[Path] | str | Path, overrides: Sequence[str] = ()
) -> Config:
    """Merge YAML files (later wins) and `key.path=value` overrides into a validated Config.

    Raises:
        ConfigError: one line naming the file or override, the dotted key and the problem.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ConfigError("no config file given (use -c EXPERIMENT.yml)")
    merged: dict[str, Any] = {}
    sources: dict[tuple, str] = {}
    for path in paths:
        for source, layer in read_with_bases(Path(path)):
            deep_merge(merged, layer, sources, source)
    return validate(merged, sources, str(paths[-1]), overrides)


def config_from_dict(data: dict, source: str, overrides: Sequence[str] = ()) -> Config:
    """Validate a config stored as a plain dict (a checkpoint's), with overrides."""
    merged: dict[str, Any] = {}
    sources: dict[tuple, str] = {}
    deep_merge(merged, copy.deepcopy(data), sources, source)
    return validate(merged, sources, source, overrides)


def validate(merged: dict, sources: dict, default: str, overrides: Sequence[str]) -> Config:
    """The merged config validated in two passes: keys, types and values first, then the
    names of components (which imports the libraries that build them; NAMES_CHECKED)."""
    for override in overrides:
        deep_merge(merged, parse_override(override), sources, f"-o {override}")
    try:
        Config.model_validate(copy.deepcopy(merged), context={NAMES_CHECKED: False})
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, sources, default, Config)) from None


def read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The file's `extends:` chain, base first, as (source name, mapping) pairs."""
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(map(str, seen))}")
    layer = read_yaml(path)
    base = layer.pop("extends", None)
    chain = []
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
        chain = read_with_bases(path.parent / base, (*seen, resolved))
    return [*chain, (str(path), layer)]


def read_yaml(path: Path) -> dict:
    data = read_yaml_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """`trainer.epochs=3` -> {'trainer': {'epochs': 3}}; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise ConfigError(f"-o {text}: expected KEY.PATH=VALUE, e.g. -o trainer.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    assert isinstance(value, dict)
    return value


def deep_merge(into: dict, layer: dict, sources: dict, source: str, prefix: tuple = ()) -> None:
    """Merge `layer` into `into` in place, recording which source set each key."""
    for key, value in layer.items():
        loc = (*prefix, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value, sources, source, loc)
        else:
            into[key] = value
            sources.pop(loc, None)  # the latest setting last, for blame in config_errors
            sources[loc] = source


def dump_config(config: Config) -> str:
    """The resolved config as YAML, loadable again by `load_config`."""
    return yaml.safe_dump(config_dict(config), sort_keys=False)


def config_dict(config: Config) -> dict:
    """Plain JSON-compatible dict (paths as strings), as stored in checkpoints."""
    return config.model_dump(mode="json")
