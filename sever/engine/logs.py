"""Where a run's numbers go: metrics.csv (one row per epoch) and TensorBoard."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch.utils.tensorboard import SummaryWriter

from sever.fileio import atomic_path, writing

log = logging.getLogger(__name__)


class MetricsLog:
    """metrics.csv with a fixed header, rewritten atomically after every epoch.

    Every checkpoint carries the rows so far (its `history`), so the file can always be
    rebuilt to match the checkpoint a run resumes from: rows after it (written before a
    crash) are dropped, and rows that are missing (a deleted file, a write that failed after
    its checkpoint) come back.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        self.rows: list[dict[str, str]] = []

    def resume(self, epoch: int, history: list[dict[str, str]] | None) -> None:
        """Continue after `epoch`, from the resumed checkpoint's `history` (None: a
        checkpoint of an older sever, which kept none: the file is all there is)."""
        on_disk = self.read(epoch)
        if history is None:
            self.rows = on_disk or []
            if on_disk is None and epoch:
                log.warning(
                    "%s: missing, and the checkpoint (from an older sever) keeps no history to "
                    "rebuild it from: it restarts at epoch %d without the rows of epochs 1-%d",
                    self.path,
                    epoch + 1,
                    epoch,
                )
            return
        self.rows = [dict(row) for row in history if int(row["epoch"]) <= epoch]
        if on_disk != self.rows and (on_disk is not None or self.rows):
            with writing(self.path, "metrics", "; resume again once it can be written"):
                self.write()
            log.info(
                "%s: %s from the checkpoint's history (%d epochs)",
                self.path,
                "rebuilt" if on_disk is None else "brought back in line",
                len(self.rows),
            )

    def read(self, epoch: int) -> list[dict[str, str]] | None:
        """The file's rows up to `epoch`; None when there is no file."""
        if not self.path.is_file():
            return None
        with self.path.open(newline="") as handle:
            return [r for r in csv.DictReader(handle) if int(r["epoch"]) <= epoch]

    def line(self, values: Mapping[str, object]) -> dict[str, str]:
        """An epoch's values as the file writes them (its checkpoint's history keeps them)."""
        return {c: format_value(values.get(c)) for c in self.columns}

    def append(self, line: dict[str, str], then: str = "") -> None:
        """Add a `line()` and rewrite the file.

        Raises:
            WriteError: the file cannot be written (a full disk); `then` ends its message.
        """
        self.rows.append(line)
        with writing(self.path, "metrics", then):
            self.write()

    def write(self) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)


def format_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class Board:
    """A thin TensorBoard writer that does nothing when disabled.

    Args:
        folder: the run directory (events sit beside config.yml and metrics.csv).
        enabled: trainer.tensorboard.
        purge_step: on resume, the global step to continue from; later events of the
            interrupted run are purged so the curves do not double back.
    """

    def __init__(self, folder: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = None
        if enabled:
            self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer:
            for key, value in values.items():
                if value is not None and not math.isnan(value):
                    self.writer.add_scalar(f"{prefix}{key}", value, step)

    def image(self, tag: str, image: NDArray[np.uint8], step: int) -> None:
        """`image`: (H, W, 3) uint8 RGB."""
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def hparams(self, params: Mapping[str, object], metrics: dict[str, float]) -> None:
        if self.writer:
            clean = {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in params.items()
            }
            self.writer.add_hparams(clean, metrics, run_name=".")

    def close(self) -> None:
        if self.writer:
            self.writer.close()
