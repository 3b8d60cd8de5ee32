"""Training samplers by name.

Each draws its epoch's order from (seed, epoch) alone and hands every item its own
augmentation seed, so a resumed run sees exactly the batches and augmentations an
uninterrupted run would have seen, whatever the number of (persistent) workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

from sever.registry import Registry

RARE_CLASSES = ("1", "2", "4")


class EpochSampler(Sampler[tuple[int, int]]):
    """Base: an epoch-seeded order of (index, augmentation seed); call `set_epoch` first."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.rank, self.world = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world: int) -> None:
        """Under DDP: every process draws the same epoch order and takes every world-th
        item from position `rank`, the order padded (by repeating its start) to a multiple
        of the world size, as torch's DistributedSampler does."""
        self.rank, self.world = rank, world

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def __len__(self) -> int:
        return -(-self.size // self.world)

    def order(self, rng: np.random.Generator) -> np.ndarray:
        """This epoch's dataset indices."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = self.rng()
        indices = self.order(rng)
        seeds = rng.integers(2**31, size=len(indices))
        if self.world > 1:
            padded = len(self) * self.world
            indices, seeds = np.resize(indices, padded), np.resize(seeds, padded)
            indices, seeds = indices[self.rank :: self.world], seeds[self.rank :: self.world]
        return iter(zip(indices.tolist(), seeds.tolist(), strict=True))


class ShuffleSampler(EpochSampler):
    """Every image once per epoch, in a new random order."""

    def order(self, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.size)


class ClassBalancedSampler(EpochSampler):
    """Oversample images holding a rare class (1, 2 or 4) up to `share` of each epoch.

    An epoch still has as many draws as there are images: round(share x N) from the
    rare images (with replacement where there are fewer), the rest from the others.
    If the rare images already make up `share` or more, this is a plain shuffle.
    """

    def __init__(self, is_rare: np.ndarray, share: float, seed: int) -> None:
        super().__init__(len(is_rare), seed)
        self.rare = np.flatnonzero(is_rare)
        self.common = np.flatnonzero(~is_rare)
        self.share = share

    def order(self, rng: np.random.Generator) -> np.ndarray:
        n_rare = round(self.share * self.size)
        if len(self.rare) == 0 or len(self.common) == 0 or len(self.rare) >= n_rare:
            return rng.permutation(self.size)
        rare = rng.choice(self.rare, n_rare, replace=n_rare > len(self.rare))
        common = rng.choice(self.common, self.size - n_rare, replace=False)
        return rng.permutation(np.concatenate([rare, common]))


def shuffle(class_sets: pd.Series, share: float, seed: int) -> EpochSampler:
    return ShuffleSampler(len(class_sets), seed)


def class_balanced(class_sets: pd.Series, share: float, seed: int) -> EpochSampler:
    is_rare = class_sets.map(lambda s: any(c in s.split(",") for c in RARE_CLASSES))
    return ClassBalancedSampler(is_rare.to_numpy(bool), share, seed)


SAMPLERS: Registry[Callable[[pd.Series, float, int], EpochSampler]] = Registry(
    "sampler", {"random": shuffle, "class-balanced": class_balanced}
)


class ShardSampler(Sampler[int]):
    """Validation under DDP: process `rank` takes items rank, rank + world, ... (no padding,
    so every image is scored exactly once over all processes)."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
