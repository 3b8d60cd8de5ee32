"""Every defect, listed: `predict --instances PATH` writes one record per connected defect
region of the post-processed masks, as JSON lines (PATH) and CSV (PATH with .csv).

A record: the image, the class, the bounding box (x0, y0 inclusive; x1, y1 exclusive, in
pixels), the area, the mean and max probability over the region, and the region itself
as a run-length string over the whole image (the submission's encoding), so the masks can
be rebuilt from the records alone. Regions are 8-connected, as `min_component` counts them.
On a strip, x is the position along it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from numpy.typing import NDArray

from sever.data import rle
from sever.fileio import atomic_path, writing

FIELDS = ("image", "class_id", "x0", "y0", "x1", "y1", "area", "mean_prob", "max_prob", "rle")


@dataclass(frozen=True)
class Instance:
    image: str
    class_id: int
    x0: int
    y0: int
    x1: int
    y1: int
    area: int
    mean_prob: float
    max_prob: float
    rle: str


def find_instances(
    image: str, masks: NDArray[np.bool_], probs: NDArray[np.floating[Any]]
) -> list[Instance]:
    """The connected regions of one image's masks (C, H, W), class by class, each from top
    to bottom then left to right, with the probabilities (C, H, W) over them."""
    found = []
    for c, mask in enumerate(masks):
        if not mask.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            mask.astype(np.uint8), connectivity=8
        )
        height = mask.shape[0]
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            # the region's columns only: a region costs its width, not the whole image
            strip = labels[:, x : x + w] == label
            values = probs[c][:, x : x + w][strip]
            found.append(
                Instance(
                    image,
                    c + 1,
                    x,
                    y,
                    x + w,
                    y + h,
                    area,
                    round(float(values.mean()), 4),
                    round(float(values.max()), 4),
                    rle.encode(strip, offset=x * height),
                )
            )
    return found


class InstanceSink:
    """Writes records to a JSON-lines and a CSV file as they come; a failed write (a full
    disk) names the file as the user gave it (`named`)."""

    def __init__(self, lines: TextIO, table: TextIO, named: Path) -> None:
        self.lines, self.file, self.named = lines, table, named
        self.table = csv.DictWriter(table, fieldnames=FIELDS)
        self.count = 0
        with writing(csv_path(named), "defect records"):
            self.table.writeheader()

    def add(self, instances: list[Instance]) -> None:
        for instance in instances:
            record = asdict(instance)
            with writing(self.named, "defect records"):
                self.lines.write(json.dumps(record) + "\n")
            with writing(csv_path(self.named), "defect records"):
                self.table.writerow(record)
        self.count += len(instances)

    def flush(self) -> None:
        """Everything written out, so that closing the files has nothing left to fail on."""
        for handle, path in ((self.lines, self.named), (self.file, csv_path(self.named))):
            with writing(path, "defect records"):
                handle.flush()

    def discard(self) -> None:
        """Close both files after a failure, whatever their buffers hold: a full disk's
        second refusal, on closing, would replace the error that names the file."""
        for handle in (self.lines, self.file):
            try:
                handle.close()
            except OSError:
                pass


@contextmanager
def instance_writer(path: Path) -> Iterator[InstanceSink]:
    """Both files under temporary names, renamed when the prediction completes."""
    with atomic_path(path) as lines_tmp, atomic_path(csv_path(path)) as table_tmp:
        with lines_tmp.open("w") as lines, table_tmp.open("w", newline="") as table:
            sink = InstanceSink(lines, table, path)
            try:
                yield sink
                sink.flush()
            except BaseException:
                sink.discard()
                raise


def csv_path(path: Path) -> Path:
    return path.with_suffix(".csv")


def read_instances(path: Path) -> list[Instance]:
    """The records of a JSON-lines file `predict --instances` wrote."""
    with path.open() as lines:
        return [Instance(**json.loads(line)) for line in lines if line.strip()]


def rebuilt_masks(
    instances: list[Instance], image: str, classes: int, height: int, width: int
) -> NDArray[np.bool_]:
    """One image's masks (C, H, W) from its records' regions."""
    masks = np.zeros((classes, height, width), bool)
    for instance in instances:
        if instance.image == image:
            masks[instance.class_id - 1] |= rle.decode(instance.rle, height, width) > 0
    return masks
