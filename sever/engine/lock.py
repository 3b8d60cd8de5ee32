"""One process per run: a lock on `RUN/.lock` while a run trains.

`sever train --resume RUN` started twice (or while the run's first process still trains)
would write last.pth, metrics.csv and train.log from two processes at once. The lock is a
POSIX record lock (`fcntl.lockf`): the kernel drops it when its process ends in any way,
kill -9 included, so a crash never leaves a stale lock, and unlike `flock` it is not
shared with the loader workers a process forks (a worker outliving a killed trainer for a
few seconds does not hold the run). The file itself stays, empty of meaning once unlocked.

A file system that cannot lock (some FUSE mounts) gets a warning and no lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from sever.errors import CheckpointError
from sever.fileio import os_reason, probe_writable

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
HELD = (errno.EACCES, errno.EAGAIN)  # what lockf raises for a lock another process holds


class RunLock:
    """The held lock of one run (no handle where the file system cannot lock)."""

    def __init__(self, run: Path, handle: int | None) -> None:
        self.run, self.handle = run, handle

    def announce(self) -> None:
        """Write who holds the lock into the file, for a refused second process to name;
        once the holder will train (a finished run's check writes nothing). The lock works
        without it (a full disk)."""
        if self.handle is None:
            return
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {since}"
        try:
            os.ftruncate(self.handle, 0)
            os.pwrite(self.handle, f"{holder}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing drops the lock
            self.handle = None


def lock_run(run: Path) -> RunLock:
    """Lock `run` for this process (rank 0's business: see distributed.checked_on_main).

    Raises:
        CheckpointError: another process holds the run; the message says which.
    """
    path = run / LOCK_NAME
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot open the run's lock file ({os_reason(exc)})"
        ) from None
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in HELD:
            os.close(handle)
            log.warning(
                "%s: cannot lock it on this file system (%s), so nothing stops a second "
                "sever from training this run at the same time",
                path,
                exc.strerror,
            )
            return RunLock(run, None)
        holder = os.pread(handle, 200, 0).decode(errors="replace").strip()
        os.close(handle)
        raise CheckpointError(
            f"{run}: another sever process is training this run ({holder or 'its pid unknown'}); "
            "wait for it to end or stop it, then resume"
        ) from None
    return RunLock(run, handle)


def lock_resumed(run: Path) -> RunLock:
    """Lock a run to resume, once it is known to take new files (a read-only copy cannot
    resume: said as such, not as a lock file that cannot be opened).

    Raises:
        CheckpointError: the run refuses new files, or another process holds it.
    """
    probe_writable(run, f"--resume {run}", CheckpointError)
    return lock_run(run)
