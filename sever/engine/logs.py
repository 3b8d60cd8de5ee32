"""Where a run's numbers go: metrics.csv (one row per epoch) and TensorBoard."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch.utils.tensorboard import SummaryWriter

from sever.fileio import atomic_path


class MetricsLog:
    """metrics.csv with a fixed header, rewritten atomically after every epoch.

    On resume, rows after the resumed epoch (written before a crash, after the last
    checkpoint) are dropped so the file matches an uninterrupted run.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        self.rows: list[dict[str, str]] = []

    def resume(self, epoch: int) -> None:
        if self.path.is_file():
            with self.path.open() as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= epoch]

    def append(self, row: Mapping[str, object]) -> None:
        self.rows.append({c: format_value(row.get(c)) for c in self.columns})
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
