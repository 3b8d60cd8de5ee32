"""The model card's notebook cells: the best checkpoint staged, and the competition's data
found wherever the notebook attached it."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import yaml

from sever.config import config_dict, load_config
from sever.errors import DataError
from sever.fileio import writing
from sever.inference.ensemble import EnsembleConfig
from sever.inference.models import load_member
from sever.kaggle.card import best_checkpoint, model_card
from sever.kaggle.competition import COMPETITION, find_competition
from sever.kaggle.staging import Staged, StagedCheckpoint, Target, stage_checkpoint
from sever.model.build import build_model


def attach(root: Path, *parts: str) -> Path:
    folder = root.joinpath(*parts, COMPETITION)
    (folder / "test_images").mkdir(parents=True)
    return folder


@pytest.mark.parametrize(
    "where",
    [
        ("competitions",),  # where notebooks attach competitions now
        (),  # where they did
        ("someone",),  # a copy in a dataset
        ("someone", "copy"),
    ],
)
def test_the_competition_is_found_wherever_it_is_attached(tmp_path: Path, where) -> None:
    (tmp_path / "sever-fpn-b5").mkdir()  # another attached dataset
    folder = attach(tmp_path, *where)
    assert find_competition(tmp_path) == folder


def test_the_current_place_comes_first(tmp_path: Path) -> None:
    attach(tmp_path)
    current = attach(tmp_path, "competitions")
    assert find_competition(tmp_path) == current


def test_no_competition_is_one_line(tmp_path: Path) -> None:
    (tmp_path / COMPETITION).mkdir()  # attached but without test_images
    with pytest.raises(DataError) as caught:
        find_competition(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: no {COMPETITION} folder with test_images (looked for "
        f"{tmp_path}/competitions/{COMPETITION}, {tmp_path}/{COMPETITION} and deeper); attach "
        "the competition's data to the notebook"
    )


def checkpoint(name: str, epoch: int, **metrics: float) -> StagedCheckpoint:
    return StagedCheckpoint(name, Path(name), epoch, metrics, epoch, 1000, 1000)


def staged(tmp_path: Path, checkpoints: list[StagedCheckpoint], monitor: str) -> Staged:
    run = tmp_path / "saved" / "fpn" / "1122-101500"
    run.mkdir(parents=True, exist_ok=True)
    target = Target("dataset", "me", "sever-fpn-1122-101500", "sever fpn 1122-101500")
    config = {"model": {"arch": "FPN"}, "data": {}, "trainer": {"monitor": monitor}}
    return Staged(tmp_path / "upload", run, target, config, {}, checkpoints, [], ["sever.whl"])


@pytest.mark.parametrize(
    "monitor, chosen",
    [
        ("max val_dice_mean", "checkpoint-epoch10.pth"),  # listed second, the best Dice
        ("min val_loss", "checkpoint-epoch20.pth"),
        ("max val_f1_mean", "checkpoint-epoch20.pth"),  # nobody has it: the first
    ],
)
def test_the_cells_name_the_best_checkpoint_staged(tmp_path: Path, monitor, chosen) -> None:
    chosen_ones = [
        checkpoint("checkpoint-epoch20.pth", 20, val_dice_mean=0.90, val_loss=0.10),
        checkpoint("checkpoint-epoch10.pth", 10, val_dice_mean=0.92, val_loss=0.12),
        checkpoint("last.pth", 25, val_dice_mean=0.89, val_loss=0.11),
    ]
    folder = staged(tmp_path, chosen_ones, monitor)
    assert best_checkpoint(folder).name == chosen
    card = model_card(folder, ["sever.whl"])
    assert f"!sever predict -r /kaggle/input/sever-fpn-1122-101500/{chosen} --tta hflip" in card
    assert f'    [Path("/kaggle/input/sever-fpn-1122-101500/{chosen}")],' in card


def test_the_python_cell_takes_the_tuned_post_processing(tmp_path: Path) -> None:
    folder = staged(tmp_path, [checkpoint("model_best.pth", 3)], "max val_dice_mean")
    assert "postprocess=" not in model_card(folder, ["sever.whl"])
    (folder.run / "postprocess-tuned.yml").write_text("threshold: 0.4\n")
    card = model_card(folder, ["sever.whl"])
    tuned = "/kaggle/input/sever-fpn-1122-101500/postprocess-tuned.yml"
    assert f"    --postprocess {tuned} \\" in card
    assert f'    postprocess=Path("{tuned}"),' in card


def test_model_best_is_the_best_when_staged(tmp_path: Path) -> None:
    chosen = [
        checkpoint("checkpoint-epoch10.pth", 10, val_dice_mean=0.95),
        checkpoint("model_best.pth", 10, val_dice_mean=0.95),
    ]
    assert best_checkpoint(staged(tmp_path, chosen, "max val_dice_mean")).name == "model_best.pth"


def test_the_cells_find_the_competition_instead_of_naming_a_path(tmp_path: Path) -> None:
    folder = staged(tmp_path, [checkpoint("model_best.pth", 3)], "max val_dice_mean")
    card = model_card(folder, ["model_best.pth", "sever.whl"])
    assert "from sever.kaggle.competition import find_competition" in card
    assert "COMPETITION = find_competition()" in card
    assert "--images {COMPETITION}/test_images --out submission.csv" in card
    assert 'predict_folder(ensemble, COMPETITION / "test_images"' in card
    assert "/kaggle/input/severstal-steel-defect-detection" not in card
    # the find cell comes after the install and before the predict cell
    assert card.index("pip install") < card.index("find_competition()") < card.index("!sever")


TUNED_RECORD = """threshold: 0.4
format: 2
tuned_with:
  tta: none
  averaging: weighted
  models:
  - checkpoint: saved/fpn/1122-101500/checkpoints/model_best.pth
    weight: 1.0
    task: segment
    weights_sha256: aaaaaaaaaaaaaaaa
  - checkpoint: saved/unet/1121-090000/checkpoints/last.pth
    weight: 0.5
    task: segment
    weights_sha256: bbbbbbbbbbbbbbbb
    tta: vflip
    size: [256, 800]
"""


def test_the_cells_predict_as_the_staged_post_processing_was_tuned(tmp_path: Path) -> None:
    # Tuned without TTA, weighted, with two models of which one is staged (matched by its
    # weights): the cells must not say --tta hflip, and must name the staged copy.
    ours = checkpoint("model_best.pth", 3)
    ours.fingerprint = "aaaaaaaaaaaaaaaa"
    other = checkpoint("checkpoint-epoch2.pth", 2)
    other.fingerprint = "cccccccccccccccc"
    folder = staged(tmp_path, [other, ours], "max val_dice_mean")
    (folder.run / "postprocess-tuned.yml").write_text(TUNED_RECORD)
    card = model_card(folder, ["sever.whl"])
    here = "/kaggle/input/sever-fpn-1122-101500"
    assert "--tta hflip" not in card and 'tta="hflip"' not in card
    expected = "\n".join(
        [
            "%%writefile ensemble.yml",
            "models:",
            f"  - checkpoint: {here}/model_best.pth",
            "    weight: 1",
            "  - checkpoint: saved/unet/1121-090000/checkpoints/last.pth",
            "    weight: 0.5",
            "    tta: vflip",
            "    size: [256, 800]",
            "tta: none",
            "averaging: weighted",
            f"postprocess: {here}/postprocess-tuned.yml",
        ]
    )
    assert expected in card
    assert "1 of them are not in this upload (saved/unet/1121-090000/checkpoints/last.pth)" in card
    assert "!sever predict -c ensemble.yml --images {COMPETITION}/test_images" in card
    assert 'Ensemble.from_file("ensemble.yml", batch_size=8)' in card
    # the written file is an ensemble file sever reads as such
    block = expected.split("\n", 1)[1].replace(f"{here}/", f"{tmp_path}/")
    written = EnsembleConfig.model_validate(yaml.safe_load(block))
    assert written.models[1].size == (256, 800) and written.models[1].tta == "vflip"
    assert (written.tta, written.averaging, written.models[1].weight) == ("none", "weighted", 0.5)


def test_a_staged_copy_has_the_fingerprint_tune_records(tmp_path: Path, tiny_yaml: Path) -> None:
    # tune records Member.fingerprint of the weights as loaded; staging computes the same
    # from the file, for a full checkpoint and a weights-only copy, with EMA weights too.
    config = load_config(tiny_yaml, ["model.encoder=mobilenet_v2"])
    model = build_model(config.model, config.task)
    ema = {
        f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    for name, extra in (("plain", {}), ("ema", {"ema": ema | {"n_averaged": torch.tensor(3)}})):
        path = tmp_path / f"{name}.pth"
        state = {
            "format": 1,
            "epoch": 1,
            "model": model.state_dict(),
            "config": config_dict(config),
        }
        torch.save(state | extra, path)
        loaded = load_member(path, torch.device("cpu")).fingerprint
        for weights_only in (False, True):
            out = tmp_path / f"{name}-{weights_only}"
            out.mkdir()
            write = functools.partial(writing, out, "staged folder")
            item, _ = stage_checkpoint(path, out, weights_only, tmp_path, write)
            assert item.fingerprint == loaded
    assert load_member(tmp_path / "plain.pth", torch.device("cpu")).fingerprint != loaded
