"""A run's validation images, found from anywhere: for `evaluate` and `tune`.

The images are those `split.csv` marks `val`, read from the run's dataset. A run's config
keeps `data.dir` as it was given, relative to the folder `sever train` ran in, so it is
resolved the same way the run resolved it: relative to that folder, which is known from
where the run sits (`trainer.save_dir/<name>/<stamp>` below it). From elsewhere, give
`--data-dir`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import DataLoader

from sever.config import Config
from sever.data.augment import build_transform
from sever.data.dataset import SteelDataset
from sever.data.splits import read_split
from sever.data.tables import read_labels
from sever.engine.runs import run_dir_of
from sever.errors import CheckpointError, DataError
from sever.inference.ensemble import Ensemble
from sever.inference.models import Member
from sever.inference.predict import Probs, predict_batch


def training_folder(run: Path, config: Config) -> Path | None:
    """The folder `sever train` ran in: the one whose `save_dir/<name>` holds the run
    (also a k-fold run, one level deeper). None when save_dir was absolute (any folder
    could have been the working directory) or the run has been moved."""
    save_dir = config.trainer.save_dir
    if save_dir.is_absolute():
        return None
    run = run.resolve()
    for base in run.parents:
        if (base / save_dir / config.name).resolve() in run.parents:
            return base
    return None


def data_dir_of(run: Path, config: Config, given: Path | None = None) -> Path:
    """The run's dataset folder: `given` (--data-dir), else `data.dir` as the run resolved
    it (relative to the folder it trained in), else relative to the working directory.

    Raises:
        DataError: no train.csv where it was looked for.
    """
    if given is not None:
        if not (given / "train.csv").is_file():
            raise DataError(f"--data-dir {given}: no train.csv in this folder")
        return given
    wanted = config.data.dir
    places = [wanted]
    if not wanted.is_absolute():
        home = training_folder(run, config)
        places = [home / wanted] if home is not None else []
        places.append(Path.cwd() / wanted)
    for place in dict.fromkeys(places):
        if (place / "train.csv").is_file():
            return place
    tried = " or ".join(str(p) for p in dict.fromkeys(places))
    raise DataError(
        f"{run}: its data.dir {wanted} has no train.csv (looked in {tried}); give the "
        "dataset folder with --data-dir DIR"
    )


def run_of(member: Member) -> Path:
    """The run directory a member's checkpoint belongs to (its split.csv and data)."""
    try:
        run = run_dir_of(member.path)
    except CheckpointError:
        run = None
    if run is None or not (run / "split.csv").is_file():
        raise CheckpointError(
            f"{member.path}: not inside its run directory (RUN/checkpoints/), whose split.csv "
            "names the validation images; give the run's own checkpoint"
        )
    return run


def validation_set(run: Path, member: Member, data_dir: Path | None = None) -> SteelDataset:
    """The run's validation images (from its split.csv) with their masks, unaugmented."""
    config = member.config
    split = read_split(run / "split.csv")
    ids = split.loc[split["split"] == "val", "ImageId"].tolist()
    data = config.data
    folder = data_dir_of(run, config, data_dir)
    labels = read_labels(
        folder / "train.csv", folder / "train_images", data.image_size, config.model.classes
    )
    missing = sorted(set(ids) - set(labels.images))
    if missing:
        raise DataError(
            f"{run / 'split.csv'}: validation image {missing[0]} is not in {folder / 'train.csv'}"
            f" ({len(missing)} missing); is {folder} the dataset this run trained on?"
        )
    transform = build_transform("none", None, data.normalize, train=False)
    return SteelDataset(
        folder / "train_images", ids, labels.rles(), transform, config.model.classes
    )


def validation_batches(
    ensemble: Ensemble, dataset: SteelDataset
) -> Iterator[tuple[list[str], Probs | None, Probs | None, NDArray[np.uint8]]]:
    """Yield (image ids, probabilities, presence, true masks (N, C, H, W)) for each batch
    of a labelled dataset, in full precision: one pass reads every image once."""
    loader = DataLoader(dataset, ensemble.batch_size, num_workers=ensemble.workers)
    for images, masks, ids in loader:
        yield list(ids), *predict_batch(ensemble, images), masks.numpy()


def group_by_split(
    members: list[Member], need_segmenter: bool = True
) -> list[tuple[list[Member], Path]]:
    """(members, run) groups: members with the same validation images form one ensemble;
    k-fold runs differ, and are scored each on its own fold (out of fold).

    Raises:
        CheckpointError: a group without a segmenter (when `need_segmenter`), or two runs
            whose validation images overlap without being the same.
    """
    groups: dict[frozenset[str], tuple[list[Member], Path]] = {}
    for member in members:
        run = run_of(member)
        split = read_split(run / "split.csv")
        key = frozenset(split.loc[split["split"] == "val", "ImageId"])
        groups.setdefault(key, ([], run))[0].append(member)
    keys = list(groups)
    for group, run in groups.values():
        if need_segmenter and not any(m.task == "segment" for m in group):
            raise CheckpointError(
                f"{run}: no segmentation model validates on this run's images; a classifier "
                "must share its segmenters' split (same seed, data.folds and data.fold)"
            )
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if a & b:
                raise CheckpointError(
                    f"{groups[a][1]} and {groups[b][1]} validate on overlapping but different "
                    "images: neither one ensemble nor out-of-fold k-fold runs"
                )
    return list(groups.values())
