"""The fault fixtures themselves: the small disk fills, the read-only mount refuses writes."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import fill


def test_small_disk_fills(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(64)
    fill(disk)
    with pytest.raises(OSError) as e:
        (disk / "x").write_bytes(b"1" * 8192)
    assert e.value.errno == errno.ENOSPC


def test_read_only_mount_refuses_root(read_only: Callable[[Path], Path], tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("x")
    mounted = read_only(source)
    assert (mounted / "a").read_text() == "x"
    with pytest.raises(OSError) as e:
        (mounted / "b").write_text("y")
    assert e.value.errno == errno.EROFS
    (source / "b").write_text("y")  # the source stays writable


def test_root_without_the_right_to_mount_skips_and_says_why(monkeypatch) -> None:
    from tests.faults import conftest

    def refused(*args: str) -> None:
        raise subprocess.CalledProcessError(32, "mount", stderr="mount: permission denied\n")

    monkeypatch.setattr(conftest.os, "geteuid", lambda: 0)
    monkeypatch.setattr(conftest, "_mount", refused)
    conftest._can_mount.cache_clear()
    try:
        assert conftest._can_mount() == "cannot mount a tmpfs here (mount: permission denied)"
    finally:
        conftest._can_mount.cache_clear()
