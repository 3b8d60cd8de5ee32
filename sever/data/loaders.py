"""From a config and a split to the training and validation DataLoaders."""

from __future__ import annotations

import bisect
import signal
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from sever.config import Config, PseudoConfig
from sever.data.augment import TransformsBySize, build_transform
from sever.data.checks import check_dataset
from sever.data.dataset import SteelDataset
from sever.data.sampling import (
    SAMPLERS,
    CropSizes,
    EpochOrder,
    EpochSampler,
    PseudoBatchSampler,
    ShardSampler,
)
from sever.data.tables import Labels, read_labels
from sever.errors import DataError


@dataclass
class Loaders:
    """The loaders, the training loader's epoch sampler (`set_epoch` every epoch), and
    how many images each side has."""

    train: DataLoader
    val: DataLoader
    sampler: EpochOrder
    train_images: int
    val_images: int


def load_labels(config: Config) -> Labels:
    """Read and check the training data that `config.data` points to.

    Runs the fast part of check-data first and refuses a broken dataset.
    """
    data = config.data
    if not data.dir.is_dir():
        raise DataError(f"{data.dir}: data folder not found (data.dir)")
    if data.check:
        report = check_dataset(data.dir, full=False, classes=config.model.classes)
        if report.problems:
            more = f" and {len(report.problems) - 1} more" if report.problems[1:] else ""
            raise DataError(
                f"{report.problems[0]} ({more.strip() or 'one problem'}; run sever check-data "
                f"{data.dir}, or set data.check: false to train anyway)"
            )
        found = report.summary.get("image size")
        wanted = f"{data.image_size[0]}x{data.image_size[1]}"
        if found != wanted:
            raise DataError(
                f"{data.dir}/train_images: images are {found} but data.image_size is {wanted}; "
                f"set data.image_size to the images' size"
            )
    images = data.dir / "train_images"
    return read_labels(data.dir / "train.csv", images, data.image_size, config.model.classes)


def build_loaders(
    config: Config, labels: Labels, split: pd.DataFrame, cuda: bool, rank: int = 0, world: int = 1
) -> Loaders:
    """Training loader (augmented crops, epoch-seeded sampler) and validation loader (full
    size); under DDP each of `world` processes gets its shard of both."""
    data, trainer = config.data, config.trainer
    rles = labels.rles()
    train_ids = split.loc[split["split"] == "train", "ImageId"].tolist()
    val_ids = split.loc[split["split"] == "val", "ImageId"].tolist()
    if len(train_ids) < trainer.batch_size:
        raise DataError(
            f"trainer.batch_size {trainer.batch_size} is larger than the {len(train_ids)} "
            "training images; lower it"
        )
    images = data.dir / "train_images"
    train_set = SteelDataset(
        images,
        train_ids,
        rles,
        build_transform(
            data.augment, data.crop, data.normalize, True, defect_crop=data.defect_crop
        ),
        config.model.classes,
        TransformsBySize(data.augment, data.normalize, data.defect_crop) if data.crops else None,
    )
    val_set = SteelDataset(
        images,
        val_ids,
        rles,
        build_transform("none", None, data.normalize, False),
        config.model.classes,
    )
    class_sets = split.set_index("ImageId").loc[train_ids, "classes"]
    sampler: EpochSampler | PseudoBatchSampler | CropSizes
    sampler = SAMPLERS[data.sampler](class_sets, data.balance_share, config.seed)
    training: Dataset = train_set
    if data.pseudo is not None:
        pseudo = data.pseudo
        pseudo_set = pseudo_dataset(
            config, pseudo, train_set.transform, {*labels.images, *split["ImageId"]}
        )
        try:
            sampler = PseudoBatchSampler(
                sampler,
                len(pseudo_set),
                trainer.batch_size,
                pseudo.fraction,
                pseudo.sample_rate,
                config.seed,
            )
        except ValueError as exc:
            raise DataError(f"{pseudo.csv}: {exc}") from None
        training = SeededConcat([train_set, pseudo_set])
    if data.crops:
        sampler = CropSizes(sampler, trainer.batch_size, data.crop_sizes, config.seed)
    sampler.shard(rank, world)
    # a flat sampler even with pseudo-labels: PseudoBatchSampler lays its items out batch
    # after batch for this batch size
    train = loader(config, training, trainer.batch_size, sampler, cuda, drop_last=True)
    val_sampler = ShardSampler(len(val_set), rank, world) if world > 1 else None
    val_batch = trainer.val_batch_size or trainer.batch_size
    val = loader(config, val_set, val_batch, val_sampler, cuda, drop_last=False)
    n_train = len(train_set) + (len(pseudo_set) if data.pseudo is not None else 0)
    return Loaders(train, val, sampler, n_train, len(val_set))


def loader(
    config: Config,
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler | None,
    cuda: bool,
    drop_last: bool,
) -> DataLoader:
    """A DataLoader with `data.workers` persistent workers that ignore Ctrl-C, drawing
    their seeds from its own generator (see own_generator)."""
    workers = config.data.workers
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        drop_last=drop_last,
        generator=own_generator(config.seed),
        worker_init_fn=ignore_ctrl_c,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def ignore_ctrl_c(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops the run at a safe step
    (sever.engine.interrupt): a terminal sends SIGINT to the whole process group, and a
    worker killed by it would break the batch the main process waits for. SIGTERM stays
    fatal: it is how multiprocessing ends workers at exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def own_generator(seed: int) -> torch.Generator:
    """A loader's own RNG. Creating a loader's iterator draws the workers' base seed from
    its generator, and from torch's global RNG when it has none. With persistent workers
    that draw happens once per process: at epoch 1 in a fresh run, at the first resumed
    epoch in a resumed one, so it would shift the global RNG (dropout) of that epoch
    against the uninterrupted run. The items' augmentation seeds come from the samplers."""
    return torch.Generator().manual_seed(seed)


def pseudo_ids(csv: Path, listed: list[str]) -> list[str]:
    """The pseudo set: the CSV's ImageIds plus those in `<csv stem>-images.txt` if it
    exists (defect-free pseudo images have no row in a long CSV)."""
    ids = set(listed)
    list_file = csv.with_name(f"{csv.stem}-images.txt")
    if list_file.is_file():
        ids |= {line.strip() for line in list_file.read_text().splitlines() if line.strip()}
    return sorted(ids)


def pseudo_dataset(
    config: Config, pseudo: PseudoConfig, transform: A.Compose, labelled_ids: set[str]
) -> SteelDataset:
    """The pseudo-labelled images of `pseudo` (config.data.pseudo), augmented like
    training images.

    Raises:
        DataError: an image is missing, or is also a training/validation image.
    """
    labels = read_labels(pseudo.csv, None, config.data.image_size, config.model.classes)
    ids = pseudo_ids(pseudo.csv, labels.images)
    for image_id in ids:
        if image_id in labelled_ids:
            raise DataError(
                f"{pseudo.csv}: pseudo-labelled image {image_id} is also in the training "
                f"data ({config.data.dir}); pseudo images must be unlabelled ones"
            )
        if not (pseudo.images / image_id).is_file():
            raise DataError(
                f"{pseudo.images}/{image_id}: pseudo-labelled image not found (data.pseudo.images)"
            )
    return SteelDataset(pseudo.images, ids, labels.rles(), transform, config.model.classes)


class SeededConcat(ConcatDataset):
    """ConcatDataset whose items may be (index, augmentation seed[, crop size]), as
    samplers give."""

    def __getitem__(self, key: int | tuple):
        index, *rest = key if isinstance(key, tuple) else (key,)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][(local, *rest) if rest else local]
