"""Torch datasets over the competition's folders: labelled (train/val) and unlabelled (test)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from sever.data import rle
from sever.fileio import read_gray


class SteelDataset(Dataset):
    """Images with their four-class masks.

    Each item is `(image, mask, image_id)`: image (1, H, W) float32 after `transform`,
    mask (C, H, W) uint8 in {0, 1}, the ImageId string.

    Args:
        images_dir: the folder holding the images.
        image_ids: which images, in order.
        rles: ImageId -> {ClassId: rle}; images without an entry are defect-free.
        transform: albumentations pipeline taking image (H, W) and mask (H, W, C).
        classes: number of classes C (ClassIds 1..C).
        by_size: the pipeline for a crop size, for items that name one (data.crops).
    """

    def __init__(
        self,
        images_dir: Path,
        image_ids: Sequence[str],
        rles: dict[str, dict[int, str]],
        transform: A.Compose,
        classes: int = 4,
        by_size: Callable[[tuple[int, int] | None], A.Compose] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.image_ids = list(image_ids)
        self.rles = rles
        self.transform = transform
        self.classes = classes
        self.by_size = by_size

    def __len__(self) -> int:
        return len(self.image_ids)

    def mask(self, image_id: str, height: int, width: int) -> np.ndarray:
        """(H, W, C) uint8 mask, channels last as albumentations expects."""
        mask = np.zeros((height, width, self.classes), np.uint8)
        for class_id, encoded in self.rles.get(image_id, {}).items():
            mask[:, :, class_id - 1] = rle.decode(encoded, height, width)
        return mask

    def __getitem__(self, key: int | tuple) -> tuple[torch.Tensor, torch.Tensor, str]:
        """`key` is an index, (index, augmentation seed) from an epoch sampler, or (index,
        seed, crop size) where batches take several crop sizes."""
        index, seed, *size = key if isinstance(key, tuple) else (key, None)
        transform = self.transform
        if size and self.by_size is not None:
            transform = self.by_size(size[0])
        if seed is not None:
            transform.set_random_seed(seed)
        image_id = self.image_ids[index]
        gray = read_gray(self.images_dir / image_id)
        out = transform(image=gray, mask=self.mask(image_id, *gray.shape))
        image = torch.from_numpy(np.ascontiguousarray(out["image"]))[None]
        mask = torch.from_numpy(np.ascontiguousarray(out["mask"].transpose(2, 0, 1)))
        return image, mask, image_id


class ImageFolderDataset(Dataset):
    """Unlabelled images for prediction: items are `(image (1, H, W) float32, image_id)`."""

    def __init__(self, images_dir: Path, image_ids: Sequence[str], transform: A.Compose) -> None:
        self.images_dir = Path(images_dir)
        self.image_ids = list(image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image_id = self.image_ids[index]
        image = self.transform(image=read_gray(self.images_dir / image_id))["image"]
        return torch.from_numpy(np.ascontiguousarray(image))[None], image_id
