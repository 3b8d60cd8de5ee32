"""evaluate, predict and tune end to end on a tiny trained run, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sever.cli import main
from sever.config import load_config
from sever.engine.trainer import train
from sever.inference import tune as tune_module
from sever.inference.models import load_member
from sever.inference.postprocess import PostProcess
from sever.inference.predict import TTA, member_probs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch run with two kept checkpoints and a class head."""
    from conftest import TINY

    folder = tmp_path_factory.mktemp("run")
    path = folder / "tiny.yml"
    path.write_text(TINY.format(data=tiny_data, saved=folder / "saved"))
    config = load_config(
        path, ["trainer.epochs=2", "trainer.save_top_k=2", "model.class_head.enabled=true"]
    )
    return train(config)


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as done:
        return done.code or 0
    return 0


def test_evaluate_reproduces_the_trainer_validation(run: Path, capsys) -> None:
    assert cli("evaluate", "-r", str(run), "--last", "--json", "--workers", "0") == 0
    report = json.loads(capsys.readouterr().out)
    for key in [
        "dice_mean",
        "dice_1",
        "dice_4",
        "dice_positive",
        "empty_baseline",
        "precision_1",
        "recall_3",
    ]:
        assert key in report
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    assert report["dice_mean"] == pytest.approx(last["val_dice_mean"], abs=1e-6)
    assert report["empty_baseline"] == pytest.approx(last["val_empty_baseline"])
    saved = json.loads((run / "eval-last.json").read_text())
    assert saved["dice_mean"] == report["dice_mean"]


def test_tta_views_are_flipped_back(run: Path) -> None:
    member = load_member(run / "checkpoints" / "last.pth", torch.device("cpu"))
    image = torch.randn(1, 1, 64, 256)
    plain, _ = member_probs(member, image, TTA["none"], None)
    mirrored, _ = member_probs(member, image.flip(-1), TTA["none"], None)
    both, _ = member_probs(member, image, TTA["hflip"], None)
    torch.testing.assert_close(both, (plain + mirrored.flip(-1)) / 2)


def test_predict_two_checkpoints_writes_a_scorable_submission(
    run: Path, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "submission.csv"
    code = cli(
        "predict",
        "-r",
        str(run),
        "-e",
        "1",
        "-e",
        "2",
        "--tta",
        "hflip",
        "--averaging",
        "rms",
        "--images",
        str(tiny_data / "test_images"),
        "--out",
        str(out),
        "--workers",
        "0",
        "--overlays",
        str(tmp_path / "png"),
    )
    assert code == 0
    frame = pd.read_csv(out, keep_default_na=False)
    template = pd.read_csv(tiny_data / "sample_submission.csv")
    # the template is the later long format: the submission follows its columns
    assert list(frame.columns) == list(template.columns)
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    wide = tmp_path / "wide.csv"
    assert (
        cli(
            "predict",
            "-r",
            str(run),
            "--images",
            str(tiny_data / "train_images"),
            "--out",
            str(wide),
            "--format",
            "wide",
            "--workers",
            "0",
        )
        == 0
    )
    assert len(pd.read_csv(wide)) == 4 * 32
    capsys.readouterr()
    assert (
        cli(
            "score",
            str(wide),
            str(tiny_data / "train.csv"),
            "--images",
            str(tiny_data / "train_images"),
            "--json",
        )
        == 0
    )
    assert 0 <= json.loads(capsys.readouterr().out)["dice_mean"] <= 1


def test_tune_improves_or_keeps_and_writes_yaml(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pp.yml"
    assert cli("tune", "-r", str(run), "--last", "--out", str(out), "--json", "--workers", "0") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["after"]["dice_mean"] >= result["before"]["dice_mean"]
    tuned = PostProcess.from_dict(yaml.safe_load(out.read_text()))
    assert list(tuned.threshold) == result["threshold"]
    # the tuned file is accepted by evaluate, and its score matches tune's (1/255 grid)
    assert (
        cli(
            "evaluate",
            "-r",
            str(run),
            "--last",
            "--postprocess",
            str(out),
            "--json",
            "--workers",
            "0",
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["dice_mean"] == pytest.approx(result["after"]["dice_mean"], abs=0.02)
    # a second tune reads the cached probabilities instead of predicting again
    assert list((run / "cache").glob("probs-*/complete"))


def test_pair_stats_match_direct_counting() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (2, 4, 8, 8), dtype=np.uint8)
    truth = rng.random((2, 4, 8, 8)) > 0.7
    stats = tune_module.pair_stats(levels, truth, one_class_per_pixel=False)
    for k in (0, 100, 200, 255):
        assert (stats.above[..., k] == (levels > k).sum((2, 3))).all()
        assert (stats.hits[..., k] == ((levels > k) & truth).sum((2, 3))).all()
    winners = tune_module.pair_stats(levels, truth, one_class_per_pixel=True)
    kept = levels == levels.max(axis=1, keepdims=True)
    assert (winners.above[..., 50] <= stats.above[..., 50]).all()
    assert winners.above[..., 0].sum() <= (kept & (levels > 0)).sum()


def test_score_of_stats_matches_hand_computation() -> None:
    # one image, one class: 10 predicted pixels above 0.5, 6 of them true, 8 true in all
    levels = np.zeros((1, 1, 4, 5), np.uint8)
    levels.flat[:10] = 200
    truth = np.zeros((1, 1, 4, 5), bool)
    truth.flat[4:12] = True
    stats = tune_module.pair_stats(levels, truth, False)
    scores = tune_module.score(stats, [0.5], [0])
    assert scores["dice_1"] == pytest.approx(2 * 6 / (10 + 8))
    assert tune_module.score(stats, [0.5], [11])["dice_1"] == 0.0  # emptied: 10 < 11
    assert tune_module.score(stats, [0.9], [0])["dice_1"] == 0.0  # nothing above 0.9
