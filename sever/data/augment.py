"""Augmentation recipes by name, built with albumentations 2.

Each recipe crops first (so the expensive pixel transforms touch a 256x384 crop, not the
256x1600 image), then applies its pixel and geometric transforms, then normalises.
Validation and inference use full-size images with normalisation only.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

import albumentations as A  # noqa: E402

from sever.config import NormalizeConfig, Size  # noqa: E402
from sever.registry import Registry  # noqa: E402


def crop(size: Size | None) -> list[A.BasicTransform]:
    """The original project's crop: half the time around a defect, else anywhere."""
    if size is None:
        return []
    height, width = size
    return [
        A.OneOf(
            [A.CropNonEmptyMaskIfExists(height, width), A.RandomCrop(height, width)], p=1.0
        )
    ]


def no_augment(size: Size | None) -> list[A.BasicTransform]:
    return [A.RandomCrop(*size)] if size else []


def light(size: Size | None) -> list[A.BasicTransform]:
    return [*crop(size), A.HorizontalFlip(p=0.5)]


def medium(size: Size | None) -> list[A.BasicTransform]:
    return [
        *crop(size),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]


def heavy_crop(size: Size | None) -> list[A.BasicTransform]:
    """The original project's recipe (its best models were trained with it)."""
    return [
        *crop(size),
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


RECIPES: Registry[Callable[[Size | None], list]] = Registry(
    "augmentation recipe",
    {"none": no_augment, "light": light, "medium": medium, "heavy-crop": heavy_crop},
)


def build_transform(
    recipe: str, size: Size | None, normalize: NormalizeConfig, train: bool, seed: int = 0
) -> A.Compose:
    """The albumentations pipeline for training (`recipe` at crop `size`) or evaluation.

    Images go in as (H, W) uint8 grey, masks as (H, W, C) uint8; the image comes out
    normalised float32.
    """
    steps = RECIPES[recipe](size) if train else []
    norm = A.Normalize(mean=normalize.mean, std=normalize.std, max_pixel_value=255.0)
    return A.Compose([*steps, norm], seed=seed)
