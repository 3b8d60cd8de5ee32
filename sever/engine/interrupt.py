"""Stopping a run cleanly: Ctrl-C (SIGINT) or SIGTERM ask the loop to stop at the next
optimiser step, where the whole state is consistent, and the trainer saves it mid-epoch.

A second Ctrl-C stops at once (KeyboardInterrupt), keeping the last completed epoch. A
`kill -9` cannot be caught: the last completed epoch's checkpoint is what remains.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType

import torch

from sever.engine.distributed import World, all_max

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class EpochStart:
    """Where an epoch (re)starts: 0 batches done, or a mid-epoch stop's batches and sums."""

    batches: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)


class StopEpoch(Exception):  # noqa: N818 (control flow, not an error)
    """Raised by the loops at a consistent point after a stop request; carries the
    epoch's progress so far."""

    def __init__(self, done: EpochStart) -> None:
        super().__init__("stop requested")
        self.done = done


class StopRequest:
    """Catches SIGINT and SIGTERM while training (a context manager).

    The first signal only sets `signum`; the loops look at `requested()` between steps. A
    second SIGINT raises KeyboardInterrupt at once. Outside the main thread (a notebook's
    worker thread, say) signals cannot be caught and the defaults stay.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in STOP_SIGNALS:
            if sig in self.previous:
                signal.signal(sig, self.previous.pop(sig))  # type: ignore[arg-type]
        # SIGCHLD stays at its default once a SIGTERM has killed the workers: torch's
        # handler would only raise about them again, anywhere, even at exit.

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if signum == signal.SIGTERM and signal.SIGCHLD not in self.previous:
            # A scheduler (Slurm) signals every process: the loader's workers die of it.
            # torch's SIGCHLD handler would then raise wherever the main thread is, even
            # mid-step; without it a dead worker surfaces in the next batch fetch, which
            # the loop takes as the stop it is (steps.until_stopped).
            self.previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        announce(
            f"{signal.Signals(signum).name}: stopping after this step to save the run "
            "(Ctrl-C again to stop at once)"
        )

    def requested(self, world: World, device: torch.device, synced: bool = True) -> bool:
        """True once a stop was asked for. Under DDP every process must stop at the same
        step, so the flag is agreed on over `device` (`synced`, a collective every process
        makes at the same point); unsynced checks return False there."""
        if not world.distributed:
            return self.signum is not None
        if not synced:
            return False
        mine = torch.tensor(self.signum or 0, device=device)
        self.signum = int(all_max(mine, world).item()) or None
        return self.signum is not None


def announce(line: str) -> None:
    """Print from inside a signal handler: one raw write to stderr. Logging there could
    re-enter a stream the interrupted code was flushing ("reentrant call")."""
    try:
        os.write(2, f"\n{line}\n".encode())
    except OSError:  # stderr closed: the final "stopped by" line is logged anyway
        pass
