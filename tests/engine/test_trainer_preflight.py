"""`sever train` checks everything it can before the first batch, and a refused run leaves
no run folder behind: one line on stderr naming the file or key, a non-zero exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever.config import load_config
from sever.engine import steps
from tests.support import cli_output


def refused(capsys, tiny_yaml: Path, *overrides: str) -> tuple[int, str]:
    """Run `sever train` on the tiny config; (exit code, stderr). Nothing must be saved."""
    args = [a for o in ("trainer.epochs=1", *overrides) for a in ("-o", o)]
    code, out, err = cli_output(capsys, "train", "-c", tiny_yaml, *args)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tiny_yaml.parent / "saved").exists(), "a refused run left a folder"
    return code, err.strip()


@pytest.fixture
def own_data(tiny_data: Path, tmp_path: Path) -> Path:
    """A copy of the tiny dataset to spoil."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def image_names(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "train_images").iterdir())


def test_a_truncated_image_is_refused_before_training(capsys, tiny_yaml: Path, own_data: Path):
    victim = own_data / "train_images" / image_names(own_data)[5]
    victim.write_bytes(victim.read_bytes()[:-200])
    code, err = refused(capsys, tiny_yaml, f"data.dir={own_data}")
    assert code == 1
    assert err.startswith(f"error: {victim}: truncated JPEG (no end-of-image marker);")
    assert "sever check-data lists all" in err


def test_a_file_that_is_no_image_is_refused(capsys, tiny_yaml: Path, own_data: Path):
    victim = own_data / "train_images" / image_names(own_data)[-1]
    victim.write_text("not an image")
    code, err = refused(capsys, tiny_yaml, f"data.dir={own_data}")
    assert code == 1 and err.startswith(f"error: {victim}: not a readable image;")


def test_an_image_of_another_size_is_named(capsys, tiny_yaml: Path, own_data: Path):
    names = image_names(own_data)
    victim = own_data / "train_images" / names[7]
    cv2.imwrite(str(victim), np.zeros((64, 320, 3), np.uint8))
    code, err = refused(capsys, tiny_yaml, f"data.dir={own_data}")
    assert code == 1
    assert err.startswith(f"error: {victim}: size 64x320, but data.image_size is 64x256;")


def test_two_bad_images_are_counted(capsys, tiny_yaml: Path, own_data: Path):
    names = image_names(own_data)[1:3]  # sorted as the split is: the first is named
    for name in names:
        (own_data / "train_images" / name).write_text("x")
    _, err = refused(capsys, tiny_yaml, f"data.dir={own_data}")
    assert f"{names[0]}: not a readable image (and 1 more);" in err


def test_no_validation_image_names_val_fraction(capsys, tiny_yaml: Path):
    code, err = refused(capsys, tiny_yaml, "data.val_fraction=0.01")
    assert code == 2
    assert err == (
        "error: data.val_fraction 0.01 leaves no validation image; raise it (32 images in all)"
    )


def test_an_empty_fold_names_data_folds(capsys, tiny_yaml: Path, tiny_data: Path):
    from sever.data.splits import assign_folds
    from sever.data.tables import read_labels

    config = load_config(tiny_yaml)
    labels = read_labels(tiny_data / "train.csv", tiny_data / "train_images", (64, 256))
    dealt = set(assign_folds(labels.class_sets().sort_index(), 40, config.seed))
    empty = min(set(range(40)) - dealt)  # 32 images in 40 folds: some folds are empty
    code, err = refused(capsys, tiny_yaml, "data.folds=40", f"data.fold={empty}")
    assert code == 2
    assert err == (
        f"error: data.folds 40 leaves no validation image in fold {empty}; lower it "
        "(32 images in all)"
    )


def test_a_save_dir_that_is_a_file(capsys, tiny_yaml: Path):
    blocker = tiny_yaml.parent / "blocker"
    blocker.write_text("")
    code, err = refused(capsys, tiny_yaml, f"trainer.save_dir={blocker}/runs")
    assert code == 2
    assert err == (
        f"error: trainer.save_dir: {blocker} is a file, not a folder; choose another save_dir"
    )


def test_a_device_that_does_not_exist(capsys, tiny_yaml: Path):
    code, err = refused(capsys, tiny_yaml, "trainer.device=cuda:3")
    assert code == 2 and "trainer.device" in err and "CUDA is not available" in err


def test_an_unreadable_weights_file(capsys, tiny_yaml: Path):
    weights = tiny_yaml.parent / "encoder.pth"
    weights.write_bytes(b"garbage")
    code, err = refused(capsys, tiny_yaml, f"model.encoder_weights={weights}")
    assert code != 0 and str(weights) in err


def test_a_monitor_metric_the_run_does_not_compute(capsys, tiny_yaml: Path):
    code, err = refused(
        capsys, tiny_yaml, "model.class_head.enabled=true", "trainer.monitor=max val_precision_mean"
    )
    assert code == 2 and "trainer.monitor" in err and "val_precision_mean" in err


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.class_head.enabled=true"],
        ["task=classify"],
        ["model.classes=6", "model.class_head.enabled=true"],
    ],
)
def test_every_monitorable_metric_is_computed(tiny_yaml: Path, overrides: list[str]):
    """Each monitor the config accepts is a metrics.csv column of that run, and each
    per-class metric of a class the run has is accepted."""
    from sever.errors import ConfigError

    candidates = ["val_loss", "train_loss", "val_dice_mean", "val_dice_positive", "val_f1_mean"]
    kinds = ("dice", "f1", "precision", "recall")
    candidates += [f"val_{kind}_{c}" for kind in kinds for c in range(1, 8)]
    accepted = []
    for metric in candidates:
        try:
            config = load_config(tiny_yaml, [*overrides, f"trainer.monitor=max {metric}"])
        except ConfigError:
            continue
        accepted.append(metric)
        assert metric in steps.metric_columns(config), (overrides, metric)
    classes = 6 if "model.classes=6" in overrides else 4
    assert f"val_{'f1' if 'task=classify' in overrides else 'dice'}_{classes}" in accepted
    assert not any(m.endswith(f"_{classes + 1}") for m in accepted)
