"""YAML files read strictly: a key given twice is an error, and every problem is one line
naming the file and the line (PyYAML alone keeps the last duplicate silently)."""

from __future__ import annotations

from pathlib import Path

import yaml

from sever.errors import ConfigError


class DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if seen is not None:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f"line {line}: duplicate key '{key}' (first on line {seen})")
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str) -> object:
    """Parse a YAML file (duplicate keys refused).

    Args:
        what: what the file is, for messages ('config file', 'ensemble file').

    Raises:
        ConfigError: missing, a folder, not text, or not valid YAML, naming the line.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a {what} (YAML)")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a {what} (YAML)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader
    except DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} not valid YAML ({problem})") from None
