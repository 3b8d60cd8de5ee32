"""Augmentation recipes by name, built with albumentations 2.

Each recipe crops first (so the expensive pixel transforms touch a 256x384 crop, not the
256x1600 image), then applies its pixel and geometric transforms, then normalises.
Validation and inference use full-size images with normalisation only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402

from sever import components  # noqa: E402
from sever.registry import Registry  # noqa: E402

if TYPE_CHECKING:
    from sever.config import NormalizeConfig, Size


class NonEmptyCrop(A.CropNonEmptyMaskIfExists):
    """albumentations' CropNonEmptyMaskIfExists: the same crop for the same seed, faster.

    Upstream sums the (H, W, C) mask over its channels and lists every defect pixel with
    np.argwhere, 1.8 ms of a 2.9 ms training item at 256x1600. For a uint8 mask of 1, 2, 4
    or 8 channels, this reads each pixel's channels as one integer, so np.flatnonzero finds
    the same pixels in the same order; the random draws are the same calls on the same
    generator, so the crop coordinates are identical. Other masks go the upstream way.
    """

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data.get("mask")
        if mask is None or not self.packable(mask):
            return super().get_params_dependent_on_data(params, data)
        height, width, channels = mask.shape
        packed = mask.view(np.dtype(f"u{channels}")).reshape(-1)
        pixels = np.flatnonzero(packed)
        if len(pixels):
            y, x = divmod(int(pixels[self.py_random.choice(range(len(pixels)))]), width)
            x_min = np.clip(x - self.py_random.randint(0, self.width - 1), 0, width - self.width)
            y_min = np.clip(y - self.py_random.randint(0, self.height - 1), 0, height - self.height)
        else:
            x_min = self.py_random.randint(0, width - self.width)
            y_min = self.py_random.randint(0, height - self.height)
        return {"crop_coords": (x_min, y_min, x_min + self.width, y_min + self.height)}

    def packable(self, mask: object) -> bool:
        return (
            isinstance(mask, np.ndarray)
            and mask.ndim == 3
            and mask.dtype == np.uint8
            and mask.shape[2] in (1, 2, 4, 8)
            and mask.flags.c_contiguous
            and self.ignore_values is None
            and self.ignore_channels is None
            and self.height <= mask.shape[0]
            and self.width <= mask.shape[1]
        )


def crop(size: Size | None, defect_crop: float) -> list[A.BasicTransform]:
    """A crop around a defect pixel (if the image has one) `defect_crop` of the time, else
    anywhere; the original project's crop took each half the time."""
    if size is None:
        return []
    height, width = size
    around = NonEmptyCrop(height, width, p=defect_crop)  # OneOf picks by these p
    return [A.OneOf([around, A.RandomCrop(height, width, p=1 - defect_crop)], p=1.0)]


def no_augment(size: Size | None, defect_crop: float) -> list[A.BasicTransform]:
    return [A.RandomCrop(*size)] if size else []


def light(size: Size | None, defect_crop: float) -> list[A.BasicTransform]:
    return [*crop(size, defect_crop), A.HorizontalFlip(p=0.5)]


def medium(size: Size | None, defect_crop: float) -> list[A.BasicTransform]:
    return [
        *crop(size, defect_crop),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]


def heavy_crop(size: Size | None, defect_crop: float) -> list[A.BasicTransform]:
    """The original project's recipe (its best models were trained with it)."""
    return [
        *crop(size, defect_crop),
        A.OneOf(
            [
                A.CLAHE(p=1.0),
                A.GaussianBlur(blur_limit=(3, 3), p=1.0),
                A.Sharpen(alpha=(0.2, 0.3), p=1.0),
            ],
            p=0.5,
        ),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
    ]


RECIPES: Registry[Callable[[Size | None, float], list]] = components.RECIPES.registry(
    {"none": no_augment, "light": light, "medium": medium, "heavy-crop": heavy_crop}
)


class TransformsBySize:
    """The training pipeline of `recipe` for each crop size a batch may take (data.crops),
    built on first use in each loader worker."""

    def __init__(self, recipe: str, normalize: NormalizeConfig, defect_crop: float) -> None:
        self.recipe, self.normalize, self.defect_crop = recipe, normalize, defect_crop
        self.built: dict[tuple[int, int] | None, A.Compose] = {}

    def __call__(self, size: Size | None) -> A.Compose:
        key = (size[0], size[1]) if size is not None else None
        if key not in self.built:
            self.built[key] = build_transform(
                self.recipe, size, self.normalize, True, defect_crop=self.defect_crop
            )
        return self.built[key]


def build_transform(
    recipe: str,
    size: Size | None,
    normalize: NormalizeConfig,
    train: bool,
    seed: int = 0,
    defect_crop: float = 0.5,
) -> A.Compose:
    """The albumentations pipeline for training (`recipe` at crop `size`, around a defect
    `defect_crop` of the time) or evaluation.

    Images go in as (H, W) uint8 grey, masks as (H, W, C) uint8; the image comes out
    normalised float32.
    """
    steps = RECIPES[recipe](size, defect_crop) if train else []
    norm = A.Normalize(mean=normalize.mean, std=normalize.std, max_pixel_value=255.0)
    return A.Compose([*steps, norm], seed=seed)
