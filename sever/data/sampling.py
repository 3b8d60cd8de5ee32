"""Training samplers by name.

Each draws its epoch's order from (seed, epoch) alone and hands every item its own
augmentation seed, so a resumed run sees exactly the batches and augmentations an
uninterrupted run would have seen, whatever the number of (persistent) workers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Protocol

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

from sever import components
from sever.registry import Registry


class EpochOrder(Protocol):
    """What the trainer asks of a training sampler: draw `epoch`'s order, and `skip` the
    first items of this process's share (batches a stopped run already trained)."""

    def set_epoch(self, epoch: int, skip: int = 0) -> None: ...

    def shard(self, rank: int, world: int) -> None: ...


class EpochSampler(Sampler[tuple[int, int]]):
    """Base: an epoch-seeded order of (index, augmentation seed); call `set_epoch` first."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.rank, self.world = 0, 1

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Draw `epoch`'s order; `skip` its first items (this process's), which a run
        stopped mid-epoch has already trained on."""
        self.epoch, self.skip = epoch, skip

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
        return islice(zip(indices.tolist(), seeds.tolist(), strict=True), self.skip, None)


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


def rare_classes(class_sets: pd.Series) -> set[str]:
    """The classes present in fewer than half as many images as the commonest class: 1,
    2 and 4 in the competition's data (7%, 2% and 6% of the images, against 41% for 3)."""
    counts = pd.Series([c for s in class_sets if s for c in s.split(",")]).value_counts()
    return {str(c) for c, n in counts.items() if n < counts.max() / 2} if len(counts) else set()


def class_balanced(class_sets: pd.Series, share: float, seed: int) -> EpochSampler:
    rare = rare_classes(class_sets)
    is_rare = class_sets.map(lambda s: any(c in rare for c in s.split(",")))
    return ClassBalancedSampler(is_rare.to_numpy(bool), share, seed)


SAMPLERS: Registry[Callable[[pd.Series, float, int], EpochSampler]] = components.SAMPLERS.registry(
    {"random": shuffle, "class-balanced": class_balanced}
)


def pseudo_per_batch(fraction: float, batch_size: int) -> int:
    """Pseudo-labelled samples in every batch: round(fraction x batch size), at least 1
    when fraction > 0."""
    k = round(fraction * batch_size)
    return max(k, 1) if fraction > 0 else 0


class PseudoBatchSampler(Sampler[tuple[int, int]]):
    """Every batch: `batch_size - k` labelled items, then k pseudo-labelled ones.

    Items are (index, augmentation seed) over ConcatDataset([labelled, pseudo]): pseudo
    indices are offset by `n_labelled`. The sampler is flat (its items laid out batch after
    batch), so a DataLoader with `batch_size` and `drop_last=True` cuts exactly these
    batches; `batches()` gives them as lists.

    Per epoch, from (seed, epoch) alone:
      - labelled: the order of `labelled` (the configured sampler) for this epoch, cut into
        floor(n_labelled / (batch_size - k)) batches; its tail that fills no batch is
        dropped, as with drop_last.
      - pseudo: round(sample_rate x n_pseudo) images (at least 1) drawn without
        replacement in random order, taken k per batch in that order; if the batches need
        more than were drawn, the drawn images are used again in the same order (cycled),
        and if they need fewer, the rest of the draw is unused. Every slot gets its own
        augmentation seed, so a repeated image is augmented differently.

    Under DDP (`shard`), every process builds the same epoch and takes batches rank,
    rank + world, ..., the batch list padded to a multiple of world by repeating its
    first batches.
    """

    def __init__(
        self,
        labelled: EpochSampler,
        n_pseudo: int,
        batch_size: int,
        fraction: float,
        sample_rate: float,
        seed: int,
    ) -> None:
        self.labelled = labelled
        self.n_labelled = labelled.size
        self.n_pseudo = n_pseudo
        self.batch_size = batch_size
        self.k = pseudo_per_batch(fraction, batch_size)
        if not 0 < self.k < batch_size:
            raise ValueError(
                f"data.pseudo.fraction {fraction} gives {self.k} pseudo-labelled images in a "
                f"batch of {batch_size}; expected between 1 and {batch_size - 1}"
            )
        if n_pseudo < 1:
            raise ValueError("the pseudo-labelled set is empty")
        self.n_batches = self.n_labelled // (batch_size - self.k)
        if self.n_batches < 1:
            raise ValueError(
                f"{self.n_labelled} labelled images fill no batch of {batch_size - self.k}"
            )
        self.n_drawn = max(1, round(sample_rate * n_pseudo))
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.rank, self.world = 0, 1

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """As EpochSampler.set_epoch: `skip` the first items of this process's batches."""
        self.epoch, self.skip = epoch, skip
        self.labelled.set_epoch(epoch)

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def batches_per_shard(self) -> int:
        return -(-self.n_batches // self.world)

    def __len__(self) -> int:
        return self.batches_per_shard() * self.batch_size

    def batches(self) -> list[list[tuple[int, int]]]:
        """This epoch's batches (all of them, before sharding)."""
        n_lab = self.batch_size - self.k
        labelled = list(iter(self.labelled))[: self.n_batches * n_lab]
        # a stream of its own, apart from the labelled sampler's (seed, epoch)
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        drawn = rng.choice(self.n_pseudo, self.n_drawn, replace=False)
        slots = self.n_batches * self.k
        pseudo = np.resize(drawn, slots) + self.n_labelled
        seeds = rng.integers(2**31, size=slots)
        pseudo_items = list(zip(pseudo.tolist(), seeds.tolist(), strict=True))
        return [
            labelled[b * n_lab : (b + 1) * n_lab] + pseudo_items[b * self.k : (b + 1) * self.k]
            for b in range(self.n_batches)
        ]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        batches = self.batches()
        if self.world > 1:
            padded = self.batches_per_shard() * self.world
            batches = [batches[i % len(batches)] for i in range(padded)][self.rank :: self.world]
        return islice((item for batch in batches for item in batch), self.skip, None)


class CropSizes(Sampler[tuple]):
    """The items of a training sampler with the crop size of their batch: (index, seed,
    size). Each run of `batch_size` items (this process's batches, as the DataLoader cuts
    them) shares one size, drawn per batch from the epoch's sizes with (seed, epoch)
    alone, so a resumed run crops as an uninterrupted one; every process draws the same
    sizes for its batches b = 0, 1, ...

    Args:
        inner: the epoch sampler (or PseudoBatchSampler) giving (index, seed).
        sizes_at: epoch -> the sizes its batches may take (DataConfig.crop_sizes).
    """

    def __init__(
        self,
        inner: EpochSampler | PseudoBatchSampler,
        batch_size: int,
        sizes_at: Callable[[int], list],
        seed: int,
    ) -> None:
        self.inner, self.batch_size, self.sizes_at, self.seed = inner, batch_size, sizes_at, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch, skip)

    def shard(self, rank: int, world: int) -> None:
        self.inner.shard(rank, world)

    def __len__(self) -> int:
        return len(self.inner)

    def batch_sizes(self) -> list:
        """The crop size of each of this epoch's batches, in order."""
        sizes = self.sizes_at(self.epoch)
        rng = np.random.default_rng([self.seed, self.epoch, 2])
        batches = -(-len(self.inner) // self.batch_size)
        return [sizes[i] for i in rng.integers(len(sizes), size=batches)]

    def __iter__(self) -> Iterator[tuple]:
        sizes = self.batch_sizes()
        for position, (index, seed) in enumerate(self.inner, start=self.skip):
            yield index, seed, sizes[position // self.batch_size]

    def describe(self, batches: int) -> str:
        """The crop sizes of this epoch's first `batches` batches (those it trains on), in
        the order of its stage, each with its count: `64x64 (3 batches), 64x128 (1 batch)`;
        a size of None (data.crop: null) is `full size`."""
        counts = Counter(self.batch_sizes()[:batches])
        listed = []
        for size in dict.fromkeys(self.sizes_at(self.epoch)):  # a size given twice: once
            if counts[size]:
                shown = "full size" if size is None else f"{size[0]}x{size[1]}"
                listed.append(f"{shown} ({counts[size]} batch{'es' * (counts[size] > 1)})")
        return ", ".join(listed)


class ShardSampler(Sampler[int]):
    """Validation under DDP: process `rank` takes items rank, rank + world, ... (no padding,
    so every image is scored exactly once over all processes)."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
