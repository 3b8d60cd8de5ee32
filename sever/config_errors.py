"""Turn a pydantic ValidationError into the one line a user reads.

`experiments/x.yml: optimizer.encoder.lr: expected a number, got 'fast'`
`experiments/x.yml: unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)`
"""

from __future__ import annotations

import difflib
import re
import typing

from pydantic import BaseModel, ValidationError

EXPECTED = {
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "path_type": "expected a path",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "missing": "missing required key",
}


def describe_error(
    exc: ValidationError, sources: dict[tuple, str], default: str, root: type[BaseModel]
) -> str:
    """One line for the first error (and a count of the others).

    Args:
        root: the model validated (its fields give the close-match suggestions).
    """
    errors = merge_missing_items([dict(e) for e in exc.errors()])
    first = errors[0]
    # pydantic names the member of a union it tried (`lax-or-strict[...]`): not a key
    loc = tuple(str(part) for part in first["loc"] if not re.search(r"[\[\]()]", str(part)))
    text = explain(first, loc, root)
    source = source_of(loc, sources, default, text)
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if errors[1:] else ""
    return f"{source}: {text}{more}"


def merge_missing_items(errors: list[dict]) -> list[dict]:
    """A list too short for a fixed-length tuple gives one 'missing' error per absent item
    (`pos_weight.2`, `pos_weight.3`): make them one error about the list."""
    merged: list[dict] = []
    for error in errors:
        loc = error["loc"]
        if error["type"] == "missing" and loc and isinstance(loc[-1], int):
            error = {**error, "type": "too_few_items", "loc": loc[:-1]}
            if any(e["type"] == "too_few_items" and e["loc"] == loc[:-1] for e in merged):
                continue
        merged.append(error)
    return merged


def explain(error: dict, loc: tuple[str, ...], root: type[BaseModel]) -> str:
    dotted = ".".join(loc)
    kind = error["type"]
    if kind == "too_few_items":
        got = f", got {error['input']!r}" if isinstance(error.get("input"), list) else ""
        return f"{dotted}: expected a list of {tuple_length(loc, root) or 'more'} values{got}"
    if kind == "extra_forbidden":
        return f"unknown key '{dotted}'{suggest(loc, root)}"
    if kind == "value_error":
        detail = str(error["ctx"]["error"])
        own = not loc or detail.startswith((dotted + " ", dotted + "."))
        return detail if own else f"{dotted}: {detail}"
    got = "" if kind == "missing" else f", got {error['input']!r}"
    if kind == "literal_error":
        return f"{dotted}: expected one of {error['ctx']['expected']}{got}"
    if kind in ("too_short", "too_long") and "tuple" in error["msg"].lower() + kind:
        return f"{dotted}: expected a list of {error['ctx'].get('max_length', '?')} values{got}"
    if kind == "too_short":
        least = error["ctx"].get("min_length", 1)
        return f"{dotted}: expected at least {least} item{'s' * (least > 1)}{got}"
    if kind in EXPECTED:
        return f"{dotted}: {EXPECTED[kind]}{got}"
    message = error["msg"].replace("Input should be", "expected a value").replace("String", "name")
    return f"{dotted}: {message[0].lower()}{message[1:]}{got}"


def source_of(
    loc: tuple[str, ...], sources: dict[tuple, str], default: str, message: str = ""
) -> str:
    """The file or override that set the key at `loc` (or the nearest key that did).

    An error about a whole section (`data: crop larger than image_size`) goes to whoever
    set last one of the keys its message names, else whoever set a key in it last;
    `sources` lists the keys in the order they were last set.
    """
    below = [(key, src) for key, src in sources.items() if key[: len(loc)] == loc != key]
    named = [src for key, src in below if re.search(rf"\b{re.escape('.'.join(key))}\b", message)]
    if named:
        return named[-1]
    for end in range(len(loc), 0, -1):
        if loc[:end] in sources:
            return sources[loc[:end]]
    return below[-1][1] if below else default


def suggest(loc: tuple[str, ...], root: type[BaseModel]) -> str:
    """` (did you mean 'trainer.epochs'?)` from the fields of the section holding loc[-1]."""
    section = section_at(root, loc[:-1])
    if section is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(section.model_fields), n=1)
    return f" (did you mean '{'.'.join((*loc[:-1], close[0]))}'?)" if close else ""


def tuple_length(loc: tuple[str, ...], root: type[BaseModel]) -> int | None:
    """How many values the fixed-length tuple field at `loc` takes (None if unknown)."""
    section = section_at(root, loc[:-1])
    field = section.model_fields.get(loc[-1]) if section is not None and loc else None
    if field is None:
        return None
    for annotation in [field.annotation, *typing.get_args(field.annotation)]:
        if typing.get_origin(annotation) is tuple and Ellipsis not in typing.get_args(annotation):
            return len(typing.get_args(annotation))
    return None


def section_at(model: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    """Walk nested config models along `path`, unwrapping Optional and Annotated."""
    for key in path:
        field = model.model_fields.get(key)
        if field is None:
            return None
        inner = next((t for t in flatten(field.annotation) if is_model(t)), None)
        if inner is None:
            return None
        model = inner
    return model


def flatten(annotation: object) -> list:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for arg in args for t in flatten(arg)]


def is_model(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
