"""Pseudo-labels in training: batch composition, epoch length, draws, DDP, loaders, config."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sever.data.loaders import build_loaders, load_labels
from sever.data.sampling import PseudoBatchSampler, ShuffleSampler, pseudo_per_batch
from sever.data.splits import make_split
from sever.errors import ConfigError, DataError


def sampler(n_lab=100, n_pseudo=40, batch=8, fraction=0.125, rate=0.6, seed=0):
    return PseudoBatchSampler(ShuffleSampler(n_lab, seed), n_pseudo, batch, fraction, rate, seed)


@pytest.mark.parametrize(
    ("fraction", "batch", "k"), [(0.125, 8, 1), (0.01, 8, 1), (0.25, 16, 4), (0.5, 4, 2)]
)
def test_pseudo_per_batch(fraction, batch, k):
    assert pseudo_per_batch(fraction, batch) == k


def test_composition_and_epoch_length():
    s = sampler()  # k = 1, floor(100 / 7) = 14 batches, round(0.6 x 40) = 24 drawn
    assert (s.k, s.n_batches, s.n_drawn) == (1, 14, 24)
    batches = s.batches()
    assert len(batches) == 14 and len(s) == 14 * 8
    for batch in batches:
        indices = [i for i, _ in batch]
        assert len(batch) == 8
        assert all(i < 100 for i in indices[:7])
        assert all(100 <= i < 140 for i in indices[7:])
    labelled = [i for b in batches for i, _ in b[:7]]
    assert len(set(labelled)) == 98  # a permutation of 100, its last 2 dropped
    pseudo = [i for b in batches for i, _ in b[7:]]
    assert len(set(pseudo)) == 14  # fewer needed than the 24 drawn: no repeats
    assert [item for b in batches for item in b] == list(s)


def test_drawn_pseudo_images_are_cycled():
    # 50 labelled, batch 8, fraction 0.5: k = 4, 12 batches, 48 slots; 0.25 x 40 = 10 drawn
    s = sampler(n_lab=50, batch=8, fraction=0.5, rate=0.25)
    assert (s.k, s.n_batches, s.n_drawn) == (4, 12, 10)
    pseudo = [i for b in s.batches() for i, _ in b[4:]]
    assert pseudo == (pseudo[:10] * 5)[:48]
    assert len(set(pseudo)) == 10
    seeds = [seed for b in s.batches() for _, seed in b[4:]]
    assert len(set(seeds)) == 48  # a repeated image is augmented anew


def test_draw_changes_between_epochs_and_is_reproducible():
    def drawn(epoch, seed=0):
        s = sampler(batch=8, fraction=0.5, seed=seed)  # 25 batches x 4 > 24: all drawn used
        s.set_epoch(epoch)
        return [b for b in s.batches()]

    first = {i for b in drawn(0) for i, _ in b[4:]}
    second = {i for b in drawn(1) for i, _ in b[4:]}
    assert len(first) == len(second) == 24 and first != second
    assert drawn(3) == drawn(3)
    assert drawn(3) != drawn(3, seed=1)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_cover_every_batch(world):
    s = sampler()  # 14 batches
    whole = s.batches()
    per = -(-14 // world)
    got = []
    for rank in range(world):
        s.shard(rank, world)
        items = list(s)
        assert len(items) == len(s) == per * 8
        got += [tuple(items[i : i + 8]) for i in range(0, len(items), 8)]
    counts = Counter(got)
    assert set(counts) == {tuple(b) for b in whole}
    assert sum(counts.values()) == per * world  # padding repeats the first batches
    assert all(counts[tuple(b)] == 1 for b in whole[per * world - 14 :])


def test_fraction_filling_the_batch_is_refused():
    with pytest.raises(ValueError, match="fraction 0.9 gives 2 pseudo-labelled"):
        sampler(batch=2, fraction=0.9)


# ---------------------------------------------------------------- loaders and config


@pytest.fixture
def pseudo_dir(tiny_data: Path, tmp_path: Path) -> Path:
    """The 4 test images, pseudo-labelled: one all-over defect, all listed in the sibling file."""
    folder = tmp_path / "pseudo"
    shutil.copytree(tiny_data / "test_images", folder / "images")
    ids = sorted(p.name for p in (folder / "images").iterdir())
    (folder / "pseudo.csv").write_text(f"ImageId,ClassId,EncodedPixels\n{ids[0]},3,1 16384\n")
    (folder / "pseudo-images.txt").write_text("\n".join(ids) + "\n")
    return folder


def pseudo_overrides(folder: Path, *more: str) -> list[str]:
    return [
        f"data.pseudo.csv={folder / 'pseudo.csv'}",
        f"data.pseudo.images={folder / 'images'}",
        *more,
    ]


def loaders_for(config):
    labels = load_labels(config)
    split = make_split(labels.class_sets(), config.data.val_fraction, None, None, config.seed)
    return build_loaders(config, labels, split, cuda=False), split


def test_loaders_mix_pseudo_into_training_only(tiny_config, pseudo_dir):
    config = tiny_config(*pseudo_overrides(pseudo_dir, "data.pseudo.fraction=0.25"))
    loaders, split = loaders_for(config)
    pseudo_ids = {p.name for p in (pseudo_dir / "images").iterdir()}
    n_train = (split["split"] == "train").sum()
    assert len(loaders.train) == n_train // 3  # batch 4, k = 1
    seen = Counter()
    for _, masks, ids in loaders.train:
        assert len(ids) == 4
        assert ids[3] in pseudo_ids and not set(ids[:3]) & pseudo_ids
        seen[ids[3]] += 1
        if ids[3] == sorted(pseudo_ids)[0]:
            assert masks[3, 2].sum() > 0  # its pseudo-label came through
    assert set(seen) <= pseudo_ids
    val_ids = [i for _, _, ids in loaders.val for i in ids]
    assert not set(val_ids) & pseudo_ids
    assert sorted(val_ids) == sorted(split.loc[split["split"] == "val", "ImageId"])


def test_pseudo_image_in_training_data_is_refused(tiny_config, tiny_data, pseudo_dir):
    train_id = sorted((tiny_data / "train_images").iterdir())[0].name
    shutil.copy(tiny_data / "train_images" / train_id, pseudo_dir / "images" / train_id)
    (pseudo_dir / "pseudo-images.txt").write_text(train_id + "\n")
    config = tiny_config(*pseudo_overrides(pseudo_dir))
    with pytest.raises(DataError, match=f"pseudo-labelled image {train_id} is also in"):
        loaders_for(config)


def test_missing_pseudo_image_is_refused(tiny_config, pseudo_dir):
    (pseudo_dir / "pseudo-images.txt").write_text("nowhere.jpg\n")
    with pytest.raises(DataError, match="nowhere.jpg: pseudo-labelled image not found"):
        loaders_for(tiny_config(*pseudo_overrides(pseudo_dir)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.pseudo.csv=/no/such.csv", "data.pseudo.csv: file not found: /no/such.csv"),
        ("data.pseudo.images=/no/such", "data.pseudo.images: folder not found: /no/such"),
        ("data.pseudo.fraction=1", "data.pseudo.fraction"),
        ("data.pseudo.sample_rate=0", "data.pseudo.sample_rate"),
    ],
)
def test_config_errors(tiny_config, pseudo_dir, override, message):
    with pytest.raises(ConfigError, match=message) as info:
        tiny_config(*pseudo_overrides(pseudo_dir), override)
    assert "\n" not in str(info.value)


def test_missing_images_key(tiny_config, pseudo_dir):
    with pytest.raises(ConfigError, match="data.pseudo.images: missing required key"):
        tiny_config(f"data.pseudo.csv={pseudo_dir / 'pseudo.csv'}")


def test_train_with_pseudo_labels(tiny_config, pseudo_dir):
    from sever.engine.trainer import train

    config = tiny_config(
        *pseudo_overrides(pseudo_dir, "data.pseudo.fraction=0.25"),
        "trainer.epochs=1",
        "trainer.tensorboard=false",
    )
    run = train(config)
    assert (run / "metrics.csv").is_file()
    assert np.isfinite(float((run / "metrics.csv").read_text().splitlines()[1].split(",")[1]))
