"""Benchmark the training data pipeline of one DataLoader worker: crop first vs crop last.

Generates ~64 synthetic images at the real 256x1600 size into a temporary folder, then
iterates `SteelDataset` in-process (exactly what one DataLoader worker does per item: read
the JPEG, decode the four RLE masks, run the albumentations pipeline, make tensors) with:

- crop first: the `heavy-crop` recipe as trained (crop 256x384, then CLAHE / blur / sharpen
  and flips on the crop, then normalise);
- crop last (baseline): the same transforms in the same run, but the crop moved behind the
  pixel and geometric transforms, so those touch the whole 256x1600 image and its masks;
- crop first with albumentations' own CropNonEmptyMaskIfExists in place of sever's
  NonEmptyCrop (which gives the same crops, faster): what that subclass saves.

Prints samples/s per worker and ms/sample for each, then the per-sample time split (JPEG
read, mask decode, augmentation incl. tensors) measured on a copy of the item's steps that
is checked to give the same output, and what the crop step alone costs. The pipelines
take turns pass by pass and each figure is from the fastest pass. OpenCV and torch are
held to one thread each, as in a worker process, unless --threads says otherwise.

Run from the repo root:

    .venv/bin/python bench/bench_pipeline.py [--images 64] [--passes 5] [--crop 256 384]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from sever.config import NormalizeConfig
from sever.data.augment import build_transform, crop, heavy_crop
from sever.data.dataset import SteelDataset
from sever.data.sampling import ShuffleSampler
from sever.data.synth import generate
from sever.data.tables import read_labels
from sever.fileio import read_gray

HEIGHT, WIDTH = 256, 1600


def crop_last(size: tuple[int, int], normalize: NormalizeConfig) -> A.Compose:
    """heavy-crop with its crop moved after the pixel and geometric transforms."""
    steps = [*heavy_crop(None), *crop(size)]
    norm = A.Normalize(mean=normalize.mean, std=normalize.std, max_pixel_value=255.0)
    return A.Compose([*steps, norm], seed=0)


def upstream_crop(size: tuple[int, int]) -> list[A.BasicTransform]:
    """`crop(size)` with albumentations' CropNonEmptyMaskIfExists (the same crops)."""
    return [
        A.OneOf([A.CropNonEmptyMaskIfExists(*size), A.RandomCrop(*size)], p=1.0),
    ]


def upstream_crop_first(size: tuple[int, int], normalize: NormalizeConfig) -> A.Compose:
    """heavy-crop exactly as trained, but with albumentations' crop class."""
    norm = A.Normalize(mean=normalize.mean, std=normalize.std, max_pixel_value=255.0)
    return A.Compose([*upstream_crop(size), *heavy_crop(None), norm], seed=0)


def timed_item(dataset: SteelDataset, key: tuple[int, int]) -> tuple[tuple, list[float]]:
    """`dataset[key]` step by step: the item and seconds spent reading, decoding, augmenting."""
    index, seed = key
    dataset.transform.set_random_seed(seed)
    image_id = dataset.image_ids[index]
    t0 = time.perf_counter()
    image = read_gray(dataset.images_dir / image_id)
    t1 = time.perf_counter()
    mask = dataset.mask(image_id, *image.shape)
    t2 = time.perf_counter()
    out = dataset.transform(image=image, mask=mask)
    image = torch.from_numpy(np.ascontiguousarray(out["image"]))[None]
    mask = torch.from_numpy(np.ascontiguousarray(out["mask"].transpose(2, 0, 1)))
    t3 = time.perf_counter()
    return (image, mask, image_id), [t1 - t0, t2 - t1, t3 - t2]


def epochs(size: int, passes: int) -> list[list[tuple[int, int]]]:
    """(index, augmentation seed) per epoch, as the training sampler hands them out."""
    sampler = ShuffleSampler(size, seed=0)
    out = []
    for epoch in range(passes):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def measure(
    datasets: dict[str, SteelDataset], passes: list[list[tuple]]
) -> dict[str, tuple[float, np.ndarray]]:
    """Per pipeline: (seconds per sample through dataset[key], [read, decode, augment] s).

    The pipelines take turns pass by pass, so other load on the machine hits both alike,
    and each figure comes from its fastest pass.
    """
    for dataset in datasets.values():
        for key in passes[0][:4]:  # warm-up: first calls set up OpenCV and albumentations
            dataset[key]
    per_sample = {name: [] for name in datasets}
    splits = {name: [] for name in datasets}
    for keys in passes:
        for name, dataset in datasets.items():
            start = time.perf_counter()
            for key in keys:
                dataset[key]
            per_sample[name].append((time.perf_counter() - start) / len(keys))
            splits[name].append(np.mean([timed_item(dataset, key)[1] for key in keys], axis=0))
    return {
        name: (min(per_sample[name]), min(splits[name], key=lambda split: split.sum()))
        for name in datasets
    }


def crop_step(dataset: SteelDataset, keys: list[tuple], steps: list[A.BasicTransform]) -> float:
    """Seconds per sample of the crop step alone, on images and masks already in memory."""
    step = A.Compose(steps, seed=0)
    loaded = {}
    for index, _ in keys:
        image_id = dataset.image_ids[index]
        image = read_gray(dataset.images_dir / image_id)
        loaded[index] = image, dataset.mask(image_id, *image.shape)
    start = time.perf_counter()
    for index, seed in keys:
        step.set_random_seed(seed)
        step(image=loaded[index][0], mask=loaded[index][1])
    return (time.perf_counter() - start) / len(keys)


def check_same(dataset: SteelDataset, key: tuple[int, int]) -> None:
    (image, mask, _), _ = timed_item(dataset, key)
    real_image, real_mask, _ = dataset[key]
    if not (torch.equal(image, real_image) and torch.equal(mask, real_mask)):
        raise SystemExit("timed_item no longer matches SteelDataset.__getitem__; update it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="synthetic 256x1600 images")
    parser.add_argument("--passes", type=int, default=5, help="timed epochs; best is kept")
    parser.add_argument("--crop", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    size = tuple(args.crop)
    normalize = NormalizeConfig()

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        generate(data, n_train=args.images, n_test=0, height=HEIGHT, width=WIDTH, seed=0)
        print(
            f"generated {args.images} images of {HEIGHT}x{WIDTH} in "
            f"{time.perf_counter() - start:.1f} s; crop {size[0]}x{size[1]}, "
            f"{args.passes} passes, {args.threads} thread(s)\n"
        )
        labels = read_labels(data / "train.csv", data / "train_images", (HEIGHT, WIDTH))
        pipelines: dict[str, Callable[[], A.Compose]] = {
            "crop first (heavy-crop)": lambda: build_transform("heavy-crop", size, normalize, True),
            "crop last (baseline)": lambda: crop_last(size, normalize),
            "crop first, upstream crop": lambda: upstream_crop_first(size, normalize),
        }
        passes = epochs(len(labels.images), args.passes)
        datasets = {}
        for name, make in pipelines.items():
            dataset = SteelDataset(data / "train_images", labels.images, labels.rles(), make())
            check_same(dataset, passes[0][0])
            image, mask, _ = dataset[passes[0][0]]
            assert image.shape == (1, *size) and mask.shape == (4, *size), (image.shape, mask.shape)
            datasets[name] = dataset
        results = measure(datasets, passes)
        same = datasets["crop first (heavy-crop)"][passes[0][1]]
        upstream = datasets["crop first, upstream crop"][passes[0][1]]
        if not all(torch.equal(a, b) for a, b in zip(same[:2], upstream[:2], strict=True)):
            raise SystemExit("NonEmptyCrop no longer crops as albumentations does")
        crops = {"NonEmptyCrop": crop(size), "upstream": upstream_crop(size)}
        crop_s = {
            name: min(crop_step(dataset, keys, steps) for keys in passes)
            for name, steps in crops.items()
        }

    header = f"{'pipeline':26} {'samples/s per worker':>21} {'ms/sample':>10}"
    print(header)
    print("-" * len(header))
    for name, (per_sample, _) in results.items():
        print(f"{name:26} {1 / per_sample:21.1f} {per_sample * 1e3:10.2f}")
    first, last, upstream = (per_sample for per_sample, _ in results.values())
    print(f"\ncrop first is {last / first:.1f}x faster per sample than crop last")
    print(f"NonEmptyCrop makes the item {upstream / first:.2f}x faster than the upstream crop\n")

    header = f"{'time split, ms/sample':26} {'read JPEG':>10} {'decode masks':>13} {'augment':>9}"
    print(header)
    print("-" * len(header))
    for name, (_, split) in results.items():
        read, decode, augment = split * 1e3
        print(f"{name:26} {read:10.2f} {decode:13.2f} {augment:9.2f}")
    print(
        "\nthe crop step alone (OneOf non-empty crop / RandomCrop on the full image and mask): "
        f"{crop_s['NonEmptyCrop'] * 1e3:.2f} ms/sample with NonEmptyCrop, "
        f"{crop_s['upstream'] * 1e3:.2f} with albumentations' CropNonEmptyMaskIfExists"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
