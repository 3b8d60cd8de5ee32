"""Which checkpoints a run keeps: last, best, the top k by the monitored metric, and every
`period`-th epoch. Its own state goes into each checkpoint, so a resumed run keeps the same
files and the same best."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sever.engine.checkpoint import link_or_copy, save_checkpoint

INTERRUPTED = "interrupted.pth"  # a run stopped mid-epoch (see sever.engine.resume)


class CheckpointSaver:
    """Writes `checkpoints/last.pth` every epoch and links the kept ones to it.

    Args:
        folder: the run's checkpoints/ folder.
        mode: 'max' or 'min' for the monitored metric.
        top_k: how many epoch checkpoints to keep by the metric (0 = none).
        period: also keep every `period`-th epoch (0 = none).
    """

    def __init__(self, folder: Path, mode: str, top_k: int, period: int) -> None:
        self.folder, self.mode, self.top_k, self.period = folder, mode, top_k, period
        self.kept: list[tuple[float, int]] = []  # (metric, epoch), best first
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.dropped: list[int] = []
        self.improved = False

    def better(self, value: float, than: float | None) -> bool:
        if math.isnan(value):
            return False
        if than is None:
            return True
        return value > than if self.mode == "max" else value < than

    def path(self, epoch: int) -> Path:
        return self.folder / f"checkpoint-epoch{epoch}.pth"

    def record(self, epoch: int, value: float | None) -> bool:
        """Note the epoch's metric (None: not validated); True when it is a new best.

        Call before building the checkpoint, so the checkpoint holds the updated state.
        """
        self.dropped = []
        self.improved = value is not None and self.better(value, self.best)
        if value is not None and not math.isnan(value) and self.top_k:
            self.kept.append((value, epoch))
            self.kept.sort(key=lambda kv: kv[0], reverse=self.mode == "max")
            self.dropped = [e for _, e in self.kept[self.top_k :]]
            self.kept = self.kept[: self.top_k]
        if self.improved:
            self.best, self.best_epoch = value, epoch
        return self.improved

    def write(self, state: dict[str, Any], epoch: int) -> None:
        """Write last.pth, link the epoch file and the best, drop what fell out of the top k
        and a mid-epoch state that this completed epoch supersedes."""
        last = self.folder / "last.pth"
        save_checkpoint(state, last)
        self.link(epoch, self.improved)
        for old in self.dropped:
            if old != epoch and not self.periodic(old):
                self.path(old).unlink(missing_ok=True)
        self.dropped, self.improved = [], False
        (self.folder / INTERRUPTED).unlink(missing_ok=True)

    def link(self, epoch: int, best: bool) -> None:
        last = self.folder / "last.pth"
        if any(e == epoch for _, e in self.kept) or self.periodic(epoch):
            link_or_copy(last, self.path(epoch))
        if best:
            link_or_copy(last, self.folder / "model_best.pth")

    def relink(self, epoch: int) -> None:
        """On resume from last.pth at `epoch`: redo the links that a kill between writing
        last.pth and linking it left out (each should then be last.pth itself)."""
        last = self.folder / "last.pth"
        if epoch == 0 or not last.is_file():
            return
        best = self.best_epoch == epoch and not same_file(last, self.folder / "model_best.pth")
        kept = any(e == epoch for _, e in self.kept) or self.periodic(epoch)
        if best or (kept and not same_file(last, self.path(epoch))):
            self.link(epoch, best)

    def write_interrupted(self, state: dict[str, Any]) -> None:
        """A mid-epoch state, beside the last completed epoch's checkpoints."""
        save_checkpoint(state, self.folder / INTERRUPTED)

    def periodic(self, epoch: int) -> bool:
        return bool(self.period) and epoch % self.period == 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "kept": [list(kv) for kv in self.kept],
            "best": self.best,
            "best_epoch": self.best_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.kept = [(float(v), int(e)) for v, e in state["kept"]]
        self.best, self.best_epoch = state["best"], state["best_epoch"]


def same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (a hard link; a copy where links are impossible counts
    as different, and is copied again)."""
    return a.is_file() and b.is_file() and os.path.samefile(a, b)
