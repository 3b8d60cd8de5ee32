"""Name -> object registries for everything a config can name.

Every component a YAML file picks by name (architecture, loss, optimiser, scheduler,
augmentation recipe, sampler) is looked up in a `Registry`, never with getattr on a
module, so a typo becomes one error that lists the valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict of named components whose failed lookups list the valid names.

    Args:
        kind: what the entries are, for messages ("optimizer", "loss").
        entries: the initial name -> component mapping.
    """

    def __init__(self, kind: str, entries: dict[str, T] | None = None) -> None:
        super().__init__(entries or {})
        self.kind = kind

    def __missing__(self, name: str) -> T:
        raise KeyError(self.unknown(name))

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered."""
        return unknown_name(self.kind, name, self.keys())

    def check(self, name: str) -> str:
        """Return `name` if registered, else raise ValueError with the valid names."""
        if name not in self:
            raise ValueError(self.unknown(name))
        return name


class Names:
    """The names of one kind of component, without the components: what sever.config checks
    a name against before the libraries that build them are imported (sever.components).

    Args:
        kind: what the entries are, for messages ("optimizer", "loss").
        names: the valid names.
    """

    def __init__(self, kind: str, names: Iterable[str]) -> None:
        self.kind, self.names = kind, tuple(names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def check(self, name: str) -> str:
        """Return `name` if it is one of these, else raise ValueError with the valid names."""
        if name not in self.names:
            raise ValueError(unknown_name(self.kind, name, self.names))
        return name

    def registry(self, entries: dict[str, T]) -> Registry[T]:
        """The registry of these names' components: one for every name, and no other, so the
        names config checks and the components built cannot drift apart."""
        if set(entries) != set(self.names) or len(entries) != len(self.names):
            raise ValueError(
                f"{self.kind} components {sorted(entries)} do not match the names "
                f"{sorted(self.names)} (sever.components)"
            )
        return Registry(self.kind, entries)


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """`unknown optimizer 'radm' (did you mean 'radam'?); expected one of: adamw, radam, sgd`."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    listed = ", ".join(valid) if len(valid) <= 30 else ", ".join(valid[:30]) + ", ..."
    return f"unknown {kind} '{name}'{hint}; expected one of: {listed}"
