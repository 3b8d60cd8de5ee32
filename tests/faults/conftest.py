"""Fault fixtures: a small filesystem that fills up, and folders that cannot be written.

Both are real mounts (tmpfs, and a read-only bind mount), not monkeypatched calls, so the
error reaches sever exactly as a user's full disk or a Kaggle notebook's /kaggle/input
does. Root ignores permission bits (`chmod a-w` stops no one on CI, which runs as root), so
a read-only *mount* is the only honest read-only folder. Mounting needs root (CI and the
developers' machines run as root) and the right to mount (an unprivileged container's root
has none); elsewhere these fixtures skip and say why.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@functools.cache
def _can_mount() -> str | None:
    """None when mounts work here, else why not: tried once (a tiny tmpfs, mounted and
    unmounted), since root in an unprivileged container has no right to mount."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    with tempfile.TemporaryDirectory(prefix="sever-mount-probe-") as folder:
        try:
            _mount("-t", "tmpfs", "-o", "size=4k", "tmpfs", folder)
        except (OSError, subprocess.CalledProcessError) as exc:
            said = getattr(exc, "stderr", None) or str(exc)
            return f"cannot mount a tmpfs here ({said.strip()})"
        _umount(Path(folder))
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """small_disk(KIB) -> a fresh, empty tmpfs folder of KIB KiB; unmounted afterwards."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        _mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target))
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        _umount(target)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `folder` until at most `leave` bytes are free; returns the
    filler file (delete it to free the space again)."""
    filler = folder / ".filler"
    block = b"\0" * 4096
    with open(filler, "wb") as f:
        try:
            while True:
                free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
                if free <= leave:
                    break
                f.write(block if free - leave >= len(block) else block[: free - leave])
                f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """read_only(FOLDER) -> FOLDER bind-mounted read-only at a new path (the original stays
    writable, as /kaggle/input's source is); unmounted afterwards."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        target = tmp_path / f"ro{len(mounted)}-{folder.name}"
        target.mkdir()
        _mount("--bind", str(folder), str(target))
        mounted.append(target)
        _mount("-o", "remount,bind,ro", str(target))
        return target

    yield make
    for target in reversed(mounted):
        _umount(target)
