"""A standalone classifier (task: classify) trained, evaluated, and used to gate masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sever.config import load_config
from sever.engine.checkpoint import load_checkpoint
from sever.engine.trainer import train
from sever.inference import Ensemble
from sever.inference.models import load_member
from sever.inference.predict import TTA, image_loader, member_probs, predict_batches
from tests.support import cli, write_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A segmenter without a class head and a classifier, on the same validation split."""
    folder = tmp_path_factory.mktemp("runs")
    path = write_tiny(folder, tiny_data)
    segmenter = train(load_config(path, ["trainer.epochs=2"]))
    classifier = train(
        load_config(
            path,
            [
                "name=cls",
                "task=classify",
                "data.crop=null",
                "trainer.epochs=3",
                "trainer.save_top_k=3",
                "model.class_head.pos_weight=[2, 2, 1, 2]",
            ],
        )
    )
    return segmenter, classifier


def test_classifier_logs_presence_scores_and_keeps_its_best_f1(runs) -> None:
    _, classifier = runs
    metrics = pd.read_csv(classifier / "metrics.csv")
    assert "val_dice_mean" not in metrics.columns
    for column in ["train_cls", "val_cls", "val_f1_mean", "val_precision_1", "val_recall_4"]:
        assert column in metrics.columns
    per_class = metrics[[f"val_f1_{c}" for c in range(1, 5)]].mean(axis=1)
    np.testing.assert_allclose(metrics["val_f1_mean"], per_class, atol=1e-5)
    best = load_checkpoint(classifier / "checkpoints" / "model_best.pth")
    assert best["epoch"] == int(metrics.loc[metrics["val_f1_mean"].idxmax(), "epoch"])


def test_evaluate_a_classifier_reproduces_its_validation(runs, capsys) -> None:
    _, classifier = runs
    assert cli("evaluate", "-r", str(classifier), "--last", "--json", "--workers", "0") == 0
    report = json.loads(capsys.readouterr().out)
    last = pd.read_csv(classifier / "metrics.csv").iloc[-1]
    assert "dice_mean" not in report
    assert report["f1_mean"] == pytest.approx(last["val_f1_mean"], abs=1e-6)
    assert report["f1_2"] == pytest.approx(last["val_f1_2"], abs=1e-6)


def test_presence_comes_from_the_classifier_and_masks_from_the_segmenter(
    runs, tiny_data: Path
) -> None:
    cpu = torch.device("cpu")
    segmenter = load_member(runs[0] / "checkpoints" / "last.pth", cpu)
    classifier = load_member(runs[1] / "checkpoints" / "last.pth", cpu)
    assert classifier.has_class_head and not segmenter.has_class_head
    ensemble = Ensemble([segmenter, classifier], tta="hflip", batch_size=4, workers=0)
    loader = image_loader(tiny_data / "test_images", ensemble)
    ((ids, probs, presence),) = predict_batches(ensemble, loader)
    images, _ = next(iter(loader))
    masks, none = member_probs(segmenter, images, TTA["hflip"], None)
    none_either, heads = member_probs(classifier, images, TTA["hflip"], None)
    assert none is None and none_either is None
    np.testing.assert_allclose(probs, masks.numpy(), rtol=1e-6)
    np.testing.assert_allclose(presence, heads.numpy(), rtol=1e-6)
    assert len(ids) == 4


def predict(runs: list[Path], tiny_data: Path, out: Path, postprocess: dict) -> int:
    pp = out.with_suffix(".yml")
    pp.write_text(yaml.safe_dump(postprocess))
    args = [a for run in runs for a in ("-r", str(run))]
    return cli(
        "predict",
        *args,
        "--last",
        "--images",
        str(tiny_data / "train_images"),
        "--out",
        str(out),
        "--postprocess",
        str(pp),
        "--format",
        "wide",
        "--workers",
        "0",
    )


def test_a_classifier_gate_empties_the_absent_classes(runs, tiny_data: Path, tmp_path) -> None:
    loose = {"threshold": [0.01] * 4, "min_pixels": [0] * 4}
    assert predict(list(runs), tiny_data, tmp_path / "open.csv", loose) == 0
    assert predict(list(runs), tiny_data, tmp_path / "shut.csv", loose | {"gate": [1.0] * 4}) == 0
    opened = pd.read_csv(tmp_path / "open.csv", keep_default_na=False)
    shut = pd.read_csv(tmp_path / "shut.csv", keep_default_na=False)
    assert (opened["EncodedPixels"] != "").sum() > 0  # a threshold of 0.01 finds something
    assert (shut["EncodedPixels"] != "").sum() == 0  # no presence reaches 1.0


def test_a_classifier_alone_cannot_predict_masks(runs, tiny_data: Path, tmp_path, capsys) -> None:
    assert predict([runs[1]], tiny_data, tmp_path / "s.csv", {}) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: every model given is a classifier") and "\n" not in err
    assert not (tmp_path / "s.csv").exists()


def test_a_gate_needs_some_presence(runs, tiny_data: Path, tmp_path, capsys) -> None:
    assert predict([runs[0]], tiny_data, tmp_path / "s.csv", {"gate": [0.5] * 4}) == 1
    assert "no model gives it" in capsys.readouterr().err


def test_tune_with_a_classifier_searches_gates(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pp.yml"
    args = ["tune", "-r", str(runs[0]), "-r", str(runs[1]), "--last", "--out", str(out)]
    assert cli(*args, "--json", "--workers", "0") == 0
    result = json.loads(capsys.readouterr().out)
    # with presence known, the ladder has its third rung
    assert [r["name"] for r in result["searches"]] == ["shared", "per-class", "presence"]
    assert result["after"]["dice_mean"] >= result["before"]["dice_mean"]
    written = yaml.safe_load(out.read_text())
    assert written.get("gate") == result["gate"]
    if result["search"] != "presence":
        assert result["gate"] is None and result["scale_c"] is None
    # forced, the presence search widens the per-class one: never worse on these images
    forced = tmp_path / "forced.yml"
    assert cli(*args[:-1], str(forced), "--search", "presence", "--json", "--workers", "0") == 0
    presence = json.loads(capsys.readouterr().out)
    assert cli(*args[:-1], str(forced), "--search", "per-class", "--json", "--workers", "0") == 0
    alone = json.loads(capsys.readouterr().out)
    assert presence["after"]["dice_mean"] >= alone["after"]["dice_mean"] - 1e-12
    assert cli(*args, "--workers", "0") == 0  # the table, from the cache
    printed = capsys.readouterr().out
    rung = "presence (per-class, with presence gates and the classifier's scaling of sizes)"
    assert rung in printed
    assert "held out" in printed


def test_tune_refuses_a_classifier_from_another_split(runs, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    split = pd.read_csv(other / "split.csv")
    split["split"] = split["split"].map({"train": "val", "val": "train"})
    split.to_csv(other / "split.csv", index=False)
    assert cli("tune", "-r", str(runs[0]), "-r", str(other), "--last", "--workers", "0") == 1
    err = capsys.readouterr().err
    assert "no segmentation model validates on this run's images" in err


def test_pseudo_labels_take_presence_from_the_classifier(runs, tiny_data: Path, tmp_path) -> None:
    out = tmp_path / "pseudo.csv"
    args = ["pseudo-label", "-r", str(runs[0]), "-r", str(runs[1]), "--last"]
    assert cli(*args, "--images", str(tiny_data / "test_images"), "--out", str(out)) == 0
    summary = json.loads((tmp_path / "pseudo-summary.json").read_text())
    assert summary["presence"] == "classifiers and class heads"
    assert summary["images_seen"] == 4
