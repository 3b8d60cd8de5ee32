"""Registries and the name-only lists config checks against (sever.components)."""

from __future__ import annotations

import pytest

from sever import components
from sever.data.augment import RECIPES
from sever.data.sampling import SAMPLERS
from sever.model.optim import OPTIMIZERS, SCHEDULERS
from sever.registry import Names, Registry


def test_names_refuse_like_their_registry() -> None:
    names = Names("optimizer", ("radam", "adamw", "sgd"))
    assert names.check("sgd") == "sgd"
    with pytest.raises(ValueError) as refused:
        names.check("radm")
    expected = (
        "unknown optimizer 'radm' (did you mean 'radam'?); expected one of: adamw, radam, sgd"
    )
    assert (
        str(refused.value)
        == expected
        == Registry("optimizer", dict.fromkeys(names)).unknown("radm")
    )


@pytest.mark.parametrize("entries", [{"a": 1}, {"a": 1, "b": 2, "c": 3}, {"a": 1, "c": 3}])
def test_a_registry_of_names_needs_every_name_and_no_other(entries: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"kind components .* do not match the names \['a', 'b'\]"):
        Names("kind", ("a", "b")).registry(entries)


def test_a_registry_of_names_keeps_their_kind() -> None:
    registry = Names("kind", ("a", "b")).registry({"b": 2, "a": 1})
    assert (registry.kind, registry["a"], registry["b"]) == ("kind", 1, 2)


@pytest.mark.parametrize(
    ("names", "registry"),
    [
        (components.RECIPES, RECIPES),
        (components.SAMPLERS, SAMPLERS),
        (components.OPTIMIZERS, OPTIMIZERS),
        (components.SCHEDULERS, SCHEDULERS),
    ],
)
def test_config_checks_the_names_that_are_built(names: Names, registry: Registry) -> None:
    assert (list(names), names.kind) == (list(registry), registry.kind)
