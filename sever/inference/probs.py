"""Saved probabilities: `predict --save-probs DIR` keeps what the ensemble predicted, and
`predict --from-probs DIR [--from-probs DIR2 ...]` post-processes (and blends) them into a
submission with no model and no GPU.

A folder holds one compressed file per image, `<ImageId>.npz`: `levels`, the ensemble's
probabilities quantised to 1/255 (uint8, C x H x W, as tune's cache keeps them), and
`presence`, the class presence (C,) when a model gives it, and `winner`, each pixel's most
probable class (H, W) taken before rounding (rounding creates ties, and one class per
pixel must decide as predicting directly does); and `probs.json`: the format, the classes,
the image size, every image id in order, what predicted them (TTA, averaging, each model's
checkpoint and weights fingerprint) and the post-processing predict applied. One file per image lets
folders written with other batch sizes, on other machines, blend image by image. The
folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sever.errors import DataError, OptionError
from sever.fileio import atomic_folder, check_output_folder, writing
from sever.inference.postprocess import PostProcess, average, winners
from sever.inference.search import quantize

MANIFEST = "probs.json"
FORMAT = 2  # 2: `winner` in each file and `postprocess` in the manifest; 1 is still read


@dataclass(frozen=True)
class SavedProbs:
    """A saved-probabilities folder, as its manifest describes it."""

    folder: Path
    classes: int
    shape: tuple[int, int]
    images: list[str]
    presence: bool
    predicted_with: dict[str, Any]
    postprocess: dict[str, Any] | None = None  # what predict applied (format 1: unknown)

    def load(self, image_id: str) -> Saved:
        """One image's probabilities (C, H, W) in [0, 1], presence (C,) or None, and the
        winner (H, W) or None (format 1)."""
        path = self.folder / f"{image_id}.npz"
        try:
            with np.load(path) as saved:
                probs = saved["levels"].astype(np.float32) / 255
                presence = saved["presence"].astype(np.float32) if self.presence else None
                winner = saved["winner"] if "winner" in saved.files else None
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: not readable saved probabilities ({exc})") from None
        if probs.shape != (self.classes, *self.shape):
            raise DataError(f"{path}: shape {probs.shape}, the manifest says {self.shape}")
        return probs, presence, winner


Saved = tuple[NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.integer[Any]] | None]


@contextmanager
def probs_writer(
    folder: Path,
    classes: int,
    predicted_with: dict[str, Any],
    postprocess: PostProcess | None = None,
) -> Iterator[ProbsSink]:
    """A sink for each batch's probabilities; the folder appears, whole, on success (a
    failed write, a full disk, leaves no part of it and names `folder`). `postprocess`: what
    predict applies, recorded so that --from-probs applies the same by default."""
    with atomic_folder(folder) as tmp:
        sink = ProbsSink(tmp, classes, predicted_with, folder, postprocess)
        yield sink
        sink.finish()


class ProbsSink:
    def __init__(
        self,
        folder: Path,
        classes: int,
        predicted_with: dict[str, Any],
        named: Path,
        postprocess: PostProcess | None = None,
    ) -> None:
        self.folder, self.classes, self.predicted_with = folder, classes, predicted_with
        self.postprocess = postprocess
        self.named = named  # the folder as the user named it, for a failed write's message
        self.finished = False
        self.images: list[str] = []
        self.shape: tuple[int, int] | None = None
        self.presence = False

    def add(
        self, ids: Sequence[str], probs: NDArray[np.floating[Any]], presence: Any = None
    ) -> None:
        levels = quantize(probs)
        self.shape = (int(levels.shape[2]), int(levels.shape[3]))  # predict: one size
        self.presence = presence is not None
        winner = winners(probs)
        for i, image_id in enumerate(ids):
            arrays: dict[str, Any] = {"levels": levels[i], "winner": winner[i]}
            if presence is not None:
                arrays["presence"] = np.asarray(presence[i], np.float16)
            with writing(self.named, "saved probabilities"):
                np.savez_compressed(self.folder / f"{image_id}.npz", **arrays)
            self.images.append(str(image_id))

    def finish(self) -> None:
        """Write the manifest (once)."""
        if self.finished:
            return
        manifest = {
            "format": FORMAT,
            "classes": self.classes,
            "shape": list(self.shape or (0, 0)),
            "presence": self.presence,
            "images": self.images,
            "predicted_with": self.predicted_with,
            "postprocess": None if self.postprocess is None else self.postprocess.to_dict(),
        }
        with writing(self.named, "saved probabilities"):
            (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        self.finished = True


def read_saved(folder: Path) -> SavedProbs:
    """A folder `predict --save-probs` wrote, checked.

    Raises:
        DataError: no such folder, no manifest, or a manifest of another format.
    """
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(f"--from-probs {folder}: no such folder")
    if not manifest.is_file():
        raise DataError(
            f"--from-probs {folder}: no {MANIFEST}; not a folder that predict --save-probs wrote"
        )
    try:
        data = json.loads(manifest.read_text())
        found = SavedProbs(
            folder,
            int(data["classes"]),
            (int(data["shape"][0]), int(data["shape"][1])),
            [str(i) for i in data["images"]],
            bool(data["presence"]),
            dict(data["predicted_with"]),
            data.get("postprocess"),
        )
        version = data["format"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"{manifest}: not a saved-probabilities manifest ({exc})") from None
    if version not in (1, FORMAT):
        raise DataError(f"{manifest}: format {version}; this sever reads formats 1 and {FORMAT}")
    return found


def check_blend(saved: list[SavedProbs], postprocess: PostProcess) -> None:
    """Folders blended together must hold the same images, classes and size."""
    first = saved[0]
    for other in saved[1:]:
        if set(other.images) != set(first.images):
            raise DataError(
                f"--from-probs {other.folder}: other images than {first.folder} "
                f"({len(other.images)} against {len(first.images)}); blend predictions of "
                "the same images"
            )
        if (other.classes, other.shape) != (first.classes, first.shape):
            raise DataError(
                f"--from-probs {other.folder}: {other.classes} classes of {other.shape}, "
                f"{first.folder} has {first.classes} of {first.shape}"
            )
    if postprocess.classes != first.classes:
        raise OptionError(
            f"--postprocess: for {postprocess.classes} classes, the saved probabilities have "
            f"{first.classes}"
        )
    if (postprocess.gate is not None or postprocess.scale_c is not None) and not all(
        s.presence for s in saved
    ):
        raise OptionError(
            "the post-processing gates or scales by class presence, but the saved "
            "probabilities have none (no model gave it)"
        )


def blended(
    saved: list[SavedProbs], ids: Sequence[str], averaging: str
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.integer[Any]] | None]:
    """The folders' probabilities (N, C, H, W) of `ids`, averaged; presence (N, C) too; and
    from one folder its saved winners (N, H, W) (a blend's winner comes from the blend)."""
    loaded = [[s.load(i) for i in ids] for s in saved]
    probs = [np.stack([p for p, _, _ in images]) for images in loaded]
    probs_avg = average(probs, averaging) if len(probs) > 1 else probs[0]
    presence = None
    if all(s.presence for s in saved):
        heads = [np.stack([h for _, h, _ in images if h is not None]) for images in loaded]
        presence = np.mean(heads, axis=0).astype(np.float32)
    winners = [w for _, _, w in loaded[0] if w is not None]
    winner = np.stack(winners) if len(saved) == 1 and len(winners) == len(ids) else None
    return probs_avg.astype(np.float32), presence, winner


def check_save_folder(folder: Path) -> None:
    check_output_folder(folder, "--save-probs")
    if folder.exists() and any(folder.iterdir()):
        raise OptionError(f"--save-probs {folder}: already exists and is not empty")
