"""Strips of any length: an image larger than the models' tile is predicted tile by tile.

Tiles overlap by `overlap` pixels along each tiled axis. Each tile's probabilities are
weighted by a smooth window (1 in the middle, a raised-cosine ramp over the overlap at both
ends, never 0) and the weighted sums are divided by the summed weights, so one tile hands
over to the next without a seam, and a pixel that one tile alone covers keeps that tile's
probability exactly. Tile starts are multiples of 32 (the usual encoder stride, so
neighbouring tiles see the same pixel grid) except the last, which ends at the image's end
(and except when tiles are closer than 32 pixels apart: then any start).

Memory is bounded by the tile batch, not the image: tiles go through the models a batch at
a time, in order along the strip, and only the columns a later tile still covers are kept
in float32 (one tile's width); finished columns are stored as float16. Tiles run along
the longer side (a tall image is cut as its transpose). A strip costs its grey pixels (1
byte per pixel), its probabilities (2 bytes per class and pixel) and what post-processing
makes from them (a byte per class and pixel for the masks, and 4 per pixel for the
connected components' labels of one class at a time).

Post-processing then sees the strip as one image: `min_pixels` counts a class over the
whole strip, the class presence (for `gate` and `scale_c`) is the most any tile gives, and
thresholds are compared in float16 (a pixel within 2**-11 of a threshold, or two classes
that close under `one_class_per_pixel`, may fall the other way than in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sever.errors import DataError, OptionError

# A batch of grey tiles (N, h, w) uint8 -> their probabilities (N, C, h, w) and presence
# (N, C) or None.
TileModel = Callable[[NDArray[np.uint8]], tuple[NDArray[np.float32], NDArray[np.float32] | None]]

ALIGN = 32  # tile starts are multiples of this (but the last)


@dataclass(frozen=True)
class Tiling:
    """How images larger than a tile are cut: tiles of `tile` (H, W) (None: the size the
    models were trained at), `overlap` pixels shared by neighbouring tiles along each tiled
    axis (None: a quarter of the tile on that axis), `batch` tiles through the models at a
    time (None: the prediction batch size). `resolved` fills in the Nones."""

    tile: tuple[int, int] | None = None
    overlap: int | None = None
    batch: int | None = None

    def resolved(self, trained: tuple[int, int], batch: int) -> Tiling:
        """This tiling with the models' trained size and the batch size where unset."""
        return replace(self, tile=self.tile or trained, batch=self.batch or batch)

    @property
    def size(self) -> tuple[int, int]:
        assert self.tile is not None, "Tiling.resolved first"
        return self.tile

    def needed(self, shape: tuple[int, int]) -> bool:
        """Whether an image of `shape` (H, W) is larger than one tile."""
        return shape[0] > self.size[0] or shape[1] > self.size[1]

    def tile_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The tiles of an image of `shape`: the tile, or the image's side where shorter."""
        return min(shape[0], self.size[0]), min(shape[1], self.size[1])

    def places(self, shape: tuple[int, int]) -> list[tuple[int, int]]:
        """Every tile's top-left (y, x), column by column along the width."""
        th, tw = self.tile_shape(shape)
        ys = starts(shape[0], th, self.axis_overlap(th))
        xs = starts(shape[1], tw, self.axis_overlap(tw))
        return [(y, x) for x in xs for y in ys]

    def axis_overlap(self, side: int) -> int:
        """The overlap along an axis cut in tiles of `side` (check_tiles has refused an
        --overlap of a side or more on an axis that is cut)."""
        return side // 4 if self.overlap is None else min(self.overlap, side - 1)


def starts(length: int, tile: int, overlap: int, align: int = ALIGN) -> list[int]:
    """Tile starts along an axis of `length`: 0 first, `length - tile` last, as few as keep
    neighbours overlapping by at least `overlap`, all but the last a multiple of `align`.

    >>> starts(1000, 400, 100)
    [0, 192, 384, 600]
    """
    last = length - tile
    if last <= 0:
        return [0]
    step = tile - overlap  # the widest gap allowed between neighbouring starts
    if step < align:
        align = 1
    count = math.ceil(last / step) + 1
    while True:
        spread = {int(i * last / (count - 1)) // align * align for i in range(count - 1)}
        found = sorted(spread | {last})
        if max(np.diff(found)) <= step:
            return found
        count += 1  # flooring to `align` widened a gap: one more tile


def window(side: int, overlap: int) -> NDArray[np.float32]:
    """1 in the middle, a raised-cosine ramp over `overlap` pixels at each end (above 0)."""
    weights = np.ones(side, np.float32)
    ramp_length = min(overlap, side // 2)
    if ramp_length:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_length) + 0.5) / ramp_length)
        weights[:ramp_length] = ramp
        weights[side - ramp_length :] = np.minimum(weights[side - ramp_length :], ramp[::-1])
    return weights


class Blender:
    """A strip's blended probabilities, built from tiles that arrive in order along the
    width: float32 sums for the columns a later tile may still cover (one tile's width),
    float16 for the finished ones."""

    def __init__(
        self,
        classes: int,
        shape: tuple[int, int],
        tile: tuple[int, int],
        overlaps: tuple[int, int],
    ) -> None:
        height, width = shape
        th, tw = tile
        wy = window(th, overlaps[0]) if height > th else np.ones(th, np.float32)
        wx = window(tw, overlaps[1]) if width > tw else np.ones(tw, np.float32)
        self.weight = np.outer(wy, wx)
        self.probs = np.empty((classes, height, width), np.float16)
        self.sums = np.zeros((classes, height, tw), np.float32)
        self.weights = np.zeros((height, tw), np.float32)
        self.start = 0  # the first unfinished column, where the sums begin

    def add(self, y: int, x: int, probs: NDArray[np.float32]) -> None:
        """One tile's probabilities (C, th, tw) at (y, x); x never decreases."""
        if x > self.start:
            self.finish(x)
        th, tw = self.weight.shape
        columns = slice(x - self.start, x - self.start + tw)
        self.sums[:, y : y + th, columns] += probs * self.weight
        self.weights[y : y + th, columns] += self.weight

    def finish(self, upto: int) -> None:
        """Columns before `upto` are final: divide them out and shift the sums left."""
        n = upto - self.start
        self.probs[:, :, self.start : upto] = self.sums[:, :, :n] / self.weights[:, :n]
        self.sums[:, :, :-n] = self.sums[:, :, n:].copy()
        self.weights[:, :-n] = self.weights[:, n:].copy()
        self.sums[:, :, -n:] = 0
        self.weights[:, -n:] = 0
        self.start = upto

    def result(self) -> NDArray[np.float16]:
        self.finish(self.probs.shape[2])
        return self.probs


def predict_tiled(
    image: NDArray[np.uint8], model: TileModel, tiling: Tiling, classes: int
) -> tuple[NDArray[np.float16], NDArray[np.float32] | None]:
    """A large image's probabilities (C, H, W) float16 and presence (C,) (the most any
    tile gives a class; None when the models give none), tile batch by tile batch.

    Tiles stream along the longer side: an image taller than wide is cut as its transpose
    (each tile turned back before the models see it), so the float32 sums span one tile
    across the shorter side whichever way the strip runs."""
    if image.shape[0] > image.shape[1]:
        turned = Tiling(tiling.tile and tiling.size[::-1], tiling.overlap, tiling.batch)
        probs, presence = predict_tiled(
            np.ascontiguousarray(image.T), transposed(model), turned, classes
        )
        return np.ascontiguousarray(probs.transpose(0, 2, 1)), presence
    shape = (int(image.shape[0]), int(image.shape[1]))
    th, tw = tiling.tile_shape(shape)
    overlaps = (tiling.axis_overlap(th), tiling.axis_overlap(tw))
    blender = Blender(classes, shape, (th, tw), overlaps)
    places = tiling.places(shape)
    presence = None
    step = tiling.batch or 1
    for first in range(0, len(places), step):
        batch = places[first : first + step]
        tiles = np.stack([image[y : y + th, x : x + tw] for y, x in batch])
        found_probs, found = model(tiles)
        for (y, x), tile_probs in zip(batch, found_probs, strict=True):
            blender.add(y, x, tile_probs)
        if found is not None:
            most = found.max(axis=0)
            presence = most if presence is None else np.maximum(presence, most)
    return blender.result(), presence


def transposed(model: TileModel) -> TileModel:
    """`model` for transposed tiles: each turned back on the way in, and its
    probabilities turned on the way out."""

    def predict(tiles: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        probs, presence = model(np.ascontiguousarray(tiles.transpose(0, 2, 1)))
        return probs.transpose(0, 1, 3, 2), presence

    return predict


def check_tiles(path: str, shape: tuple[int, int], tiling: Tiling, stride: int) -> None:
    """Refuse an image whose tiles the models cannot take: a tile side (the image's own
    where it is shorter than the tile) that is not a multiple of `stride`, or an --overlap
    of a tile's side or more along an axis that is cut."""
    for side, used in zip(shape, tiling.tile_shape(shape), strict=True):
        if used < side and tiling.overlap is not None and tiling.overlap >= used:
            raise OptionError(
                f"--overlap {tiling.overlap}: expected 0 to {used - 1} pixels for tiles of "
                f"{tiling.size[0]}x{tiling.size[1]}"
            )
        if used % stride == 0:
            continue
        if used < side:
            raise OptionError(
                f"--tile {tiling.size[0]}x{tiling.size[1]}: {used} is not a multiple of "
                f"{stride}, which the models need; give a tile of multiples of {stride}"
            )
        raise DataError(
            f"{path}: {shape[0]}x{shape[1]} is tiled by {tiling.size[0]}x{tiling.size[1]}, "
            f"but its side of {side} is shorter than the tile and not a multiple of {stride}, "
            f"which the models need; pad the image to {-(-side // stride) * stride} on that side"
        )
