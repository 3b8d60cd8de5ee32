"""Datasets, augmentation recipes and epoch samplers on a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from sever.config import NormalizeConfig
from sever.data import rle
from sever.data.augment import RECIPES, NonEmptyCrop, build_transform
from sever.data.dataset import ImageFolderDataset, SteelDataset
from sever.data.sampling import SAMPLERS, ClassBalancedSampler, ShuffleSampler
from sever.data.synth import generate
from sever.data.tables import read_image_ids, read_labels
from sever.fileio import read_gray

H, W = 64, 256
CROP = (H, 128)
NORM = NormalizeConfig()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "data"
    generate(out, n_train=20, n_test=3, height=H, width=W, seed=4)  # 2 multi-class
    return out


@pytest.fixture(scope="module")
def labels(data: Path):
    return read_labels(data / "train.csv", data / "train_images", (H, W))


def steel(data: Path, labels, transform: A.Compose) -> SteelDataset:
    return SteelDataset(data / "train_images", labels.images, labels.rles(), transform)


def normalised(pixels: np.ndarray, norm: NormalizeConfig = NORM) -> np.ndarray:
    return (pixels.astype(np.float64) / 255 - norm.mean) / norm.std


def test_item_without_augmentation_is_the_full_image_and_its_masks(data: Path, labels):
    dataset = steel(data, labels, build_transform("heavy-crop", CROP, NORM, train=False))
    assert len(dataset) == 20
    rles = labels.rles()
    multi = next(i for i, image in enumerate(labels.images) if len(rles.get(image, {})) > 1)
    free = labels.images.index(next(i for i in labels.images if i not in rles))
    for index in (multi, free):
        image, mask, image_id = dataset[index]
        assert image_id == labels.images[index]
        assert image.shape == (1, H, W) and image.dtype == torch.float32
        assert mask.shape == (4, H, W) and mask.dtype == torch.uint8
        pixels = read_gray(data / "train_images" / image_id)
        np.testing.assert_allclose(image[0].numpy(), normalised(pixels), rtol=1e-5, atol=1e-4)
        expected = np.zeros((4, H, W), np.uint8)
        for class_id, encoded in rles.get(image_id, {}).items():
            expected[class_id - 1] = rle.decode(encoded, H, W)
        np.testing.assert_array_equal(mask.numpy(), expected)
    assert dataset[multi][1].flatten(1).any(1).sum() >= 2  # two classes present
    assert not dataset[free][1].any()


def test_heavy_crop_item_shapes(data: Path, labels):
    dataset = steel(data, labels, build_transform("heavy-crop", CROP, NORM, train=True))
    for key in [(0, 1), (5, 2), (11, 3)]:
        image, mask, _ = dataset[key]
        assert image.shape == (1, *CROP) and image.dtype == torch.float32
        assert mask.shape == (4, *CROP) and mask.dtype == torch.uint8
        assert set(mask.unique().tolist()) <= {0, 1}


def test_same_key_same_augmentation(data: Path, labels):
    dataset = steel(data, labels, build_transform("heavy-crop", CROP, NORM, train=True))
    image, mask, _ = dataset[(3, 1234)]
    dataset[(7, 99)]  # other items in between must not matter
    again, again_mask, _ = dataset[(3, 1234)]
    assert torch.equal(image, again) and torch.equal(mask, again_mask)
    # a fresh pipeline (another worker) gives the same item for the same key
    other = steel(data, labels, build_transform("heavy-crop", CROP, NORM, train=True, seed=5))
    assert torch.equal(other[(3, 1234)][0], image)
    different = [not torch.equal(dataset[(3, seed)][0], image) for seed in (1, 2, 3)]
    assert all(different)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("size", [CROP, None])
def test_every_recipe_builds_and_runs(data: Path, labels, recipe: str, size):
    transform = build_transform(recipe, size, NORM, train=True)
    assert isinstance(transform.transforms[-1], A.Normalize)
    dataset = steel(data, labels, transform)
    for key in [(0, 0), (1, 1), (2, 2)]:
        image, mask, _ = dataset[key]
        out = size or (H, W)
        assert image.shape == (1, *out) and mask.shape == (4, *out)


def test_unknown_recipe_lists_the_names():
    with pytest.raises(KeyError, match="unknown augmentation recipe 'heavy'.*heavy-crop, light"):
        build_transform("heavy", CROP, NORM, train=True)


def test_validation_transform_is_normalize_only():
    norm = NormalizeConfig(mean=0.5, std=0.25)
    transform = build_transform("heavy-crop", CROP, norm, train=False)
    assert [type(t) for t in transform.transforms] == [A.Normalize]
    pixels = np.array([[0, 51, 102, 255]] * 3, np.uint8)  # (3, 4): not the crop size
    out = transform(image=pixels)["image"]
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [-2.0, -1.2, -0.4, 2.0], atol=1e-6)
    np.testing.assert_allclose(out, normalised(pixels, norm), atol=1e-6)


def test_image_folder_dataset(data: Path):
    ids = read_image_ids(data / "sample_submission.csv")
    dataset = ImageFolderDataset(
        data / "test_images", ids, build_transform("none", None, NORM, train=False)
    )
    assert len(dataset) == 3
    image, image_id = dataset[2]
    assert image_id == ids[2]
    assert image.shape == (1, H, W) and image.dtype == torch.float32
    pixels = read_gray(data / "test_images" / image_id)
    np.testing.assert_allclose(image[0].numpy(), normalised(pixels), rtol=1e-5, atol=1e-4)


def test_loader_batches_with_a_sampler(data: Path, labels):
    dataset = steel(data, labels, build_transform("heavy-crop", CROP, NORM, train=True))
    loader = DataLoader(dataset, batch_size=8, sampler=ShuffleSampler(len(dataset), seed=0))
    images, masks, ids = next(iter(loader))
    assert images.shape == (8, 1, *CROP) and masks.shape == (8, 4, *CROP) and len(ids) == 8


# ---------------------------------------------------------------- samplers


def epoch(sampler, number: int) -> list[tuple[int, int]]:
    sampler.set_epoch(number)
    return list(sampler)


def test_shuffle_sampler():
    sampler = ShuffleSampler(50, seed=3)
    first = epoch(sampler, 0)
    assert len(sampler) == 50 and len(first) == 50
    indices = [i for i, _ in first]
    assert sorted(indices) == list(range(50)) and indices != list(range(50))
    assert all(isinstance(s, int) and 0 <= s < 2**31 for _, s in first)
    assert len({s for _, s in first}) > 45  # per-item augmentation seeds, nearly all distinct
    second = epoch(sampler, 1)
    assert sorted(i for i, _ in second) == list(range(50))
    assert [i for i, _ in second] != indices
    # the order depends on (seed, epoch) alone: a resumed run sees the same epoch
    assert epoch(ShuffleSampler(50, seed=3), 1) == second
    assert epoch(sampler, 0) == first
    assert epoch(ShuffleSampler(50, seed=4), 0) != first


def test_class_balanced_sampler_oversamples_rare_images():
    is_rare = np.zeros(100, bool)
    is_rare[[3, 17, 29, 40, 41, 55, 60, 72, 88, 99]] = True
    sampler = ClassBalancedSampler(is_rare, share=0.5, seed=0)
    for number in range(3):
        draws = [i for i, _ in epoch(sampler, number)]
        assert len(draws) == len(sampler) == 100
        assert sum(is_rare[i] for i in draws) == 50
        common = [i for i in draws if not is_rare[i]]
        assert len(set(common)) == 50  # common images without replacement
    assert epoch(sampler, 2) == epoch(ClassBalancedSampler(is_rare, 0.5, seed=0), 2)


def test_class_balanced_sampler_is_a_shuffle_when_rare_images_suffice():
    is_rare = np.arange(100) % 10 < 6  # 60 % rare already
    draws = [i for i, _ in epoch(ClassBalancedSampler(is_rare, share=0.5, seed=0), 0)]
    assert sorted(draws) == list(range(100))


def test_sampler_registry():
    sets = pd.Series({"a": "", "b": "3", "c": "1,3", "d": "2", "e": "4", "f": "3"})
    sampler = SAMPLERS["class-balanced"](sets, 0.5, 0)
    assert isinstance(sampler, ClassBalancedSampler)
    assert sampler.rare.tolist() == [2, 3, 4] and sampler.common.tolist() == [0, 1, 5]
    assert isinstance(SAMPLERS["random"](sets, 0.5, 0), ShuffleSampler)
    with pytest.raises(KeyError, match="unknown sampler 'balanced'.*class-balanced, random"):
        SAMPLERS["balanced"]


def blob_mask(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """A (H, W, C) uint8 mask with 0-3 random rectangles per channel (often none)."""
    mask = np.zeros((height, width, channels), np.uint8)
    for c in range(channels):
        for _ in range(rng.integers(0, 4) * (rng.random() < 0.6)):
            y, x = rng.integers(0, height), rng.integers(0, width)
            mask[y : y + rng.integers(1, 20), x : x + rng.integers(1, 60), c] = 1
    return mask


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_non_empty_crop_is_albumentations_crop_to_the_pixel(channels: int) -> None:
    rng = np.random.default_rng(channels)
    for trial in range(150):
        mask = blob_mask(rng, 64, 256, channels)
        image = rng.integers(0, 255, (64, 256), dtype=np.uint8)
        ours = A.Compose([NonEmptyCrop(32, 96)], seed=trial)(image=image, mask=mask)
        upstream = A.Compose([A.CropNonEmptyMaskIfExists(32, 96)], seed=trial)(
            image=image, mask=mask
        )
        assert np.array_equal(ours["image"], upstream["image"]), trial
        assert np.array_equal(ours["mask"], upstream["mask"]), trial
        if mask.any():
            assert ours["mask"].any(), trial  # centred on a defect pixel


def test_non_empty_crop_falls_back_for_other_masks() -> None:
    mask = np.zeros((64, 256, 3), np.uint8)  # 3 channels cannot be packed
    mask[10, 200, 1] = 1
    ours = A.Compose([NonEmptyCrop(32, 96)], seed=5)(image=np.zeros((64, 256), np.uint8), mask=mask)
    assert ours["mask"].any()


def test_rare_classes_are_the_ones_under_half_the_commonest() -> None:
    from sever.data.sampling import rare_classes

    # the competition's training images: class 1 in 897, 2 in 247, 3 in 5150, 4 in 801
    sets = pd.Series(["1"] * 897 + ["2"] * 247 + ["3"] * 5150 + ["4"] * 801 + [""] * 5900)
    assert rare_classes(sets) == {"1", "2", "4"}
    # six classes: 5 (40 images) is not rare beside 6 (50), 3 (30) is not either
    six = pd.Series(["5"] * 40 + ["6,3"] * 30 + ["6"] * 20 + ["1"] * 10 + [""] * 5)
    assert rare_classes(six) == {"1"}
    assert rare_classes(pd.Series(["", ""])) == set()


def share_of_crops_on_the_defect(defect_crop: float, trials: int = 400) -> float:
    """A 4x4 defect at the right end of a 64x1024 image, cropped 64x96 by the light recipe:
    a crop anywhere holds it with probability 24/929 (x_min in 905..928 of 0..928)."""
    image = np.zeros((64, 1024), np.uint8)
    mask = np.zeros((64, 1024, 4), np.uint8)
    mask[30:34, 1000:1004, 2] = 1
    hits = 0
    for seed in range(trials):
        transform = build_transform("light", (64, 96), NORM, True, seed, defect_crop)
        hits += bool(transform(image=image, mask=mask)["mask"].any())
    return hits / trials


def test_defect_crop_sets_the_share_of_crops_around_a_defect() -> None:
    anywhere = 24 / 929
    assert share_of_crops_on_the_defect(1.0) == 1.0
    assert share_of_crops_on_the_defect(0.0) <= anywhere + 0.03
    # expected 0.5 + 0.5 x 24/929 = 0.513 and 0.25 + 0.75 x 24/929 = 0.269 (binomial sd 0.025)
    assert abs(share_of_crops_on_the_defect(0.5) - 0.513) < 0.08
    assert abs(share_of_crops_on_the_defect(0.25) - 0.269) < 0.08


def test_half_the_crops_around_a_defect_is_the_original_projects_crop() -> None:
    """The default (0.5) crops exactly as before the share was a setting, seed for seed."""
    image = np.arange(64 * 1024, dtype=np.uint32).reshape(64, 1024).astype(np.uint8)
    mask = blob_mask(np.random.default_rng(0), 64, 1024, 4)
    for seed in range(40):
        old = A.Compose(
            [A.OneOf([NonEmptyCrop(64, 96), A.RandomCrop(64, 96)], p=1.0), A.HorizontalFlip()],
            seed=seed,
        )(image=image, mask=mask)
        new = build_transform("light", (64, 96), NORM, True, seed, 0.5)
        out = new(image=image, mask=mask)
        assert np.array_equal(old["mask"], out["mask"]), seed
