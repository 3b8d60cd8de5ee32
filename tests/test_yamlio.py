"""YAML files read strictly: duplicate keys refused, every problem one line with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sever.errors import ConfigError
from sever.yamlio import read_yaml


def read(tmp_path: Path, text: str) -> object:
    path = tmp_path / "x.yml"
    path.write_text(text)
    return read_yaml(path, "config file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a' (first on line 1); keep one"),
        ("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4: duplicate key 'b' (first on line 2)"),
        ("a: {b: 1, b: 2}\n", "line 1: duplicate key 'b' (first on line 1)"),
        ("- {a: 1, a: 2}\n", "duplicate key 'a'"),
        ("1: x\n1: y\n", "duplicate key '1'"),
        ("a: [1, 2\n", "line 2: not valid YAML"),
    ],
)
def test_problems_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'x.yml'}: ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    text = "data:\n  workers: 1\ntrainer:\n  workers: 2\nlist:\n  - {a: 1}\n  - {a: 2}\n"
    assert read(tmp_path, text) == {
        "data": {"workers": 1},
        "trainer": {"workers": 2},
        "list": [{"a": 1}, {"a": 2}],
    }


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    text = "base: &b {lr: 1, wd: 2}\ngroup:\n  <<: *b\n  lr: 3\n"
    assert read(tmp_path, text)["group"] == {"lr": 3, "wd": 2}


def test_missing_folder_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.yml: config file not found"):
        read_yaml(tmp_path / "nowhere.yml", "config file")
    with pytest.raises(ConfigError, match="is a folder; expected a config file"):
        read_yaml(tmp_path, "config file")
    (tmp_path / "b.yml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        read_yaml(tmp_path / "b.yml", "config file")
