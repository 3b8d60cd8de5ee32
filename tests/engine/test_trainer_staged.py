"""Staged training: a run that starts from another's weights (model.init_from), a loss
that changes during training (loss.stages), and crop sizes by batch and by epoch
(data.crops)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sever.config import load_config
from sever.data.loaders import build_loaders, load_labels
from sever.data.sampling import CropSizes, ShuffleSampler
from sever.data.splits import make_split
from sever.engine.checkpoint import evaluated_weights, load_checkpoint
from sever.engine.distributed import World
from sever.engine.trainer import prepare, train
from sever.errors import ConfigError
from tests.support import cli_output

pytestmark = pytest.mark.slow

ONE_STEP = ["trainer.epochs=1", "trainer.steps_per_epoch=1", "trainer.tensorboard=false"]


@pytest.fixture(scope="module")
def source(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with EMA weights (which init_from takes)."""
    from tests.support import write_tiny

    folder = tmp_path_factory.mktemp("source")
    return train(load_config(write_tiny(folder, tiny_data), [*ONE_STEP, "trainer.ema=0.5"]))


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- model.init_from


def test_init_from_starts_from_exactly_the_given_weights(tiny_config, source: Path) -> None:
    config = tiny_config(f"model.init_from={source}", "trainer.ema=0.9")
    setup = prepare(config, None, World())
    best = source / "checkpoints" / "model_best.pth"
    expected = evaluated_weights(load_checkpoint(best))
    for key, value in setup.parts.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    ema = setup.parts.ema
    assert ema is not None
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    assert setup.init_from == {"checkpoint": str(best), "epoch": 1}


def test_a_run_records_where_it_started(tiny_yaml: Path, source: Path, capsys) -> None:
    args = [a for o in [*ONE_STEP, f"model.init_from={source}"] for a in ("-o", o)]
    code, out, err = cli_output(capsys, "train", "-c", tiny_yaml, *args)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("run: "))
    assert load_config(run / "config.yml").model.init_from == source
    state = load_checkpoint(run / "checkpoints" / "last.pth")
    assert state["init_from"]["checkpoint"] == str(source / "checkpoints" / "model_best.pth")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.encoder=resnet34", "its weights do not fit this model ("),
        ("model.classes=5", "misshapen key"),  # a class the data lacks is allowed
    ],
)
def test_init_from_weights_that_do_not_fit(
    tiny_yaml: Path, source: Path, capsys, override: str, message: str
) -> None:
    args = [a for o in [*ONE_STEP, f"model.init_from={source}", override] for a in ("-o", o)]
    code, out, err = cli_output(capsys, "train", "-c", tiny_yaml, *args)
    assert code == 1 and err.count("\n") == 1 and message in err, err
    assert err.startswith("error: model.init_from: ")
    assert not (tiny_yaml.parent / "saved").exists()


def test_init_from_nothing(tiny_yaml: Path, capsys) -> None:
    nowhere = tiny_yaml.parent / "nowhere"
    args = [a for o in [*ONE_STEP, f"model.init_from={nowhere}"] for a in ("-o", o)]
    code, _, err = cli_output(capsys, "train", "-c", tiny_yaml, *args)
    assert code == 1 and f"model.init_from: {nowhere}: no such run" in err
    assert not (tiny_yaml.parent / "saved").exists()


# ---------------------------------------------------------------- loss.stages


def test_a_loss_switch_changes_the_logged_terms_at_its_epoch(tiny_config, caplog) -> None:
    config = tiny_config(
        "trainer.epochs=3",
        "trainer.steps_per_epoch=1",
        "loss.stages=[{from_epoch: 2, lovasz: 1.0}]",
    )
    run = train(config)
    logged = [(r["epoch"], r["train_bce"], r["train_dice"], r["train_lovasz"]) for r in rows(run)]
    assert [(e, bool(b), bool(d), bool(lv)) for e, b, d, lv in logged] == [
        ("1", True, True, False),
        ("2", False, False, True),
        ("3", False, False, True),
    ]
    for row in rows(run):  # the loss is the weighted sum of the terms of its epoch
        if row["epoch"] == "1":
            expected = 0.6 * float(row["train_bce"]) + 0.4 * float(row["train_dice"])
        else:
            expected = float(row["train_lovasz"])
        assert float(row["train_loss"]) == pytest.approx(expected, rel=1e-4)
    assert any("epoch 2: the loss is now lovasz 1 (loss.stages)" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{from_epoch: 3, lovasz: 1}, {from_epoch: 2, dice: 1}]", "must increase"),
        ("[{from_epoch: 1, lovasz: 1}]", "from_epoch"),
        ("[{from_epoch: 2}]", "expected at least one loss term"),
        ("[{from_epoch: 2, lovasx: 1}]", "unknown key 'loss.stages.0.lovasx'"),
    ],
)
def test_bad_loss_stages(tiny_config, stages: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(f"loss.stages={stages}")


# ---------------------------------------------------------------- data.crops


def test_crop_sizes_follow_the_schedule(tiny_config, tiny_data: Path) -> None:
    config = tiny_config(
        "data.crops=[{from_epoch: 1, sizes: [[64, 64], [64, 128]]}, "
        "{from_epoch: 3, sizes: [[64, 256]]}]",
    )
    labels = load_labels(config)
    split = make_split(labels.class_sets(), 0.2, None, None, config.seed)
    loaders = build_loaders(config, labels, split, False)
    seen: dict[int, list[tuple[int, int]]] = {}
    for epoch in (1, 2, 3, 4):
        loaders.sampler.set_epoch(epoch)
        seen[epoch] = [tuple(images.shape[2:]) for images, masks, _ in loaders.train]
        for images, masks, _ in [next(iter(loaders.train))]:
            assert masks.shape[2:] == images.shape[2:]
    early = seen[1] + seen[2]
    assert set(early) == {(64, 64), (64, 128)}  # both sizes, batch by batch
    assert set(seen[3]) == set(seen[4]) == {(64, 256)}
    assert seen[1] != seen[2]  # drawn anew each epoch


def test_crop_sizes_are_drawn_per_batch_and_resume_in_place() -> None:
    sizes = [(32, 32), (32, 64), (64, 64)]
    inner = ShuffleSampler(40, seed=5)
    crops = CropSizes(inner, 4, lambda epoch: sizes, seed=5)
    crops.set_epoch(7)
    items = list(crops)
    assert len(items) == 40
    for b in range(10):  # one size a batch
        assert len({size for _, _, size in items[4 * b : 4 * b + 4]}) == 1
    assert len({size for _, _, size in items}) == 3
    crops.set_epoch(7, skip=12)  # a run stopped after 3 batches continues the same
    assert list(crops) == items[12:]


def test_each_epochs_crop_sizes_are_described_with_their_batches() -> None:
    sizes = [(32, 32), (32, 64), (64, 64)]
    crops = CropSizes(ShuffleSampler(40, 5), 4, lambda e: sizes if e < 9 else [None], seed=5)
    crops.set_epoch(7)
    drawn = [size for _, _, size in list(crops)[::4]]  # one size a batch
    assert drawn == [(64, 64), (32, 32), *[(32, 64)] * 3, (32, 32), *[(64, 64)] * 4]
    assert crops.describe(10) == "32x32 (2 batches), 32x64 (3 batches), 64x64 (5 batches)"
    assert crops.describe(3) == "32x32 (1 batch), 32x64 (1 batch), 64x64 (1 batch)"
    assert crops.describe(1) == "64x64 (1 batch)"  # only the sizes used
    crops.set_epoch(9)
    assert crops.describe(10) == "full size (10 batches)"


def test_the_log_says_each_epochs_crop_sizes(tiny_yaml: Path, capsys) -> None:
    overrides = [
        "data.crops=[{from_epoch: 1, sizes: [[64, 64], [64, 128]]}, "
        "{from_epoch: 2, sizes: [[64, 256]]}]",
        "trainer.epochs=2",
        "trainer.steps_per_epoch=3",
        "trainer.tensorboard=false",
    ]
    args = [a for o in overrides for a in ("-o", o)]
    code, out, err = cli_output(capsys, "train", "-c", tiny_yaml, *args)
    assert code == 0, err
    log = (Path(out.splitlines()[-1].removeprefix("run: ")) / "train.log").read_text()
    # epoch 1's batches draw 64x128, 64x64, 64x64: default_rng([seed 3, epoch 1, 2])
    assert "epoch 1: crops 64x64 (2 batches), 64x128 (1 batch) (data.crops)" in log
    assert "epoch 2: crops 64x256 (3 batches) (data.crops)" in log
    assert "epoch 2: crops 64x256 (3 batches) (data.crops)" in err  # and on the console


def test_crops_larger_than_the_images(tiny_config) -> None:
    with pytest.raises(ConfigError, match=r"data.crops.0.sizes: \[64, 512\] is larger"):
        tiny_config("data.crops=[{from_epoch: 1, sizes: [[64, 512]]}]")
