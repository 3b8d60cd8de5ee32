"""What SMP and timm can build, by name: architectures, encoders, constructor arguments.

sever.config checks a config's `model` against these in validation's second pass
(config.NAMES_CHECKED: importing SMP and timm takes seconds); `build` creates the model.
Nothing here reads a config, so config may import this module without a cycle.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping

import segmentation_models_pytorch as smp
import timm
from pydantic import TypeAdapter, ValidationError
from torch import nn

from sever.registry import Registry, unknown_name

# Every architecture smp itself can create by name, under its class name ("Unet", "FPN").
ARCHITECTURES: Registry[type[nn.Module]] = Registry(
    "architecture", {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
)


def check_encoder(name: str) -> str:
    """Return `name` if SMP can build it (an SMP encoder or `tu-<timm model>`), else raise.

    Raises:
        ValueError: the name is unknown; the message suggests the closest valid name.
    """
    smp_names = smp.encoders.get_encoder_names()
    if name in smp_names or (name.startswith("tu-") and timm.is_model(name[3:])):
        return name
    valid = [*smp_names, *(f"tu-{model}" for model in timm.list_models())]
    raise ValueError(unknown_name("encoder", name, valid) + " (or tu-<any timm model>)")


def check_arch_params(arch: str, params: Mapping[str, object], exclude: Iterable[str] = ()) -> None:
    """Raise ValueError for the first of `params` that `arch`'s constructor does not take
    (SMP hands unknown names to timm encoders, or drops them, without a word) or whose
    value does not fit the constructor's annotation. `exclude`: names sever sets itself."""
    init = ARCHITECTURES[arch].__init__
    hints = typing.get_type_hints(init)
    takes = [
        name
        for name, p in inspect.signature(init).parameters.items()
        if name != "self"
        and name not in exclude
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    for name, value in params.items():
        if name not in takes:
            raise ValueError(unknown_name(f"{arch} argument", name, takes))
        if name in hints:
            try:
                TypeAdapter(hints[name]).validate_python(value, strict=True)
            except ValidationError:
                expected = getattr(hints[name], "__name__", str(hints[name]))
                raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
