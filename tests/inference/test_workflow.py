"""evaluate, predict and tune end to end on a tiny trained run, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from sever.config import load_config
from sever.engine.trainer import train
from sever.inference.models import load_member
from sever.inference.postprocess import PostProcess
from sever.inference.predict import TTA, member_probs
from tests.support import cli, write_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch run with two kept checkpoints and a class head."""
    folder = tmp_path_factory.mktemp("run")
    path = write_tiny(folder, tiny_data)
    config = load_config(
        path, ["trainer.epochs=2", "trainer.save_top_k=2", "model.class_head.enabled=true"]
    )
    return train(config)


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
    # the template is the compact format (ImageId,EncodedPixels,ClassId, one row per image);
    # auto writes the wide format Kaggle scores: every image and class, in its image order
    assert list(template.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert list(frame.columns) == ["ImageId_ClassId", "EncodedPixels"]
    assert list(frame["ImageId_ClassId"]) == [
        f"{image}_{c}" for image in template["ImageId"] for c in (1, 2, 3, 4)
    ]
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
    assert 0 <= result["held_out"]["dice_mean"] <= 1
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
    assert report["dice_mean"] == pytest.approx(result["after"]["dice_mean"], abs=2e-3)
    # a second tune reads the cached probabilities instead of predicting again
    assert list((run / "cache").glob("probs-*/complete"))


def test_ensemble_file_drives_predict(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.4\nmin_pixels: [0, 0, 0, 0]\n")
    spec = tmp_path / "ensemble.yml"
    spec.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"run": str(run), "epoch": 1, "weight": 1.0},
                    {"checkpoint": str(run / "checkpoints" / "last.pth"), "weight": 3.0},
                ],
                "tta": "vflip",
                "averaging": "weighted",
                "postprocess": str(pp),
            }
        )
    )
    out = tmp_path / "sub.csv"
    assert (
        cli(
            "predict",
            "-c",
            str(spec),
            "--images",
            str(tiny_data / "test_images"),
            "--out",
            str(out),
            "--format",
            "wide",
            "--workers",
            "0",
        )
        == 0
    )
    assert len(pd.read_csv(out)) == 4 * 4


@pytest.fixture
def bad_inputs(run: Path, tmp_path: Path) -> dict[str, Path]:
    """Broken inputs for predict: each one a user mistake."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "short.yml").write_text("threshold: [0.5, 0.5]\n")
    (tmp_path / "gate.yml").write_text("gate: 0.5\n")
    headless = tmp_path / "headless.pth"  # the same run without its classification head
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    state["config"]["model"]["class_head"]["enabled"] = False
    state["model"] = {k: v for k, v in state["model"].items() if "classification" not in k}
    torch.save(state, headless)
    return {
        "empty": tmp_path / "empty",
        "broken": tmp_path / "broken",
        "short": tmp_path / "short.yml",
        "gate": tmp_path / "gate.yml",
        "headless": headless,
    }


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing epoch", "no checkpoint for epoch 7; kept epochs: 1, 2"),
        ("short list", "threshold: expected 4 values"),
        ("empty folder", "no images (.jpg, .jpeg, .png) in this folder"),
        ("unreadable image", "not a readable image"),
        ("gate without head", "no model gives it"),
    ],
)
def test_predict_errors_are_one_line(
    run: Path, tiny_data: Path, tmp_path: Path, capsys, bad_inputs: dict, case: str, message: str
) -> None:
    images, model = tiny_data / "test_images", ["-r", str(run)]
    extra: list[str] = []
    if case == "missing epoch":
        extra = ["-e", "7"]
    elif case == "short list":
        extra = ["--postprocess", str(bad_inputs["short"])]
    elif case == "empty folder":
        images = bad_inputs["empty"]
    elif case == "unreadable image":
        images = bad_inputs["broken"]
    else:
        model = ["-r", str(bad_inputs["headless"])]
        extra = ["--postprocess", str(bad_inputs["gate"])]
    out = tmp_path / "s.csv"
    code = cli(
        "predict", *model, *extra, "--images", str(images), "--out", str(out), "--workers", "1"
    )
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_incompatible_checkpoints_are_refused(run: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.pth"
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    state["config"]["data"]["normalize"]["mean"] = 0.5
    torch.save(state, other)
    assert cli("evaluate", "-r", str(run), "-r", str(other)) != 0  # evaluate takes one run
    assert (
        cli(
            "predict",
            "-r",
            str(run),
            "-r",
            str(other),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "s.csv"),
        )
        != 0
    )
    assert "data.normalize differs" in capsys.readouterr().err
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"\x00" * 10)
    assert (
        cli(
            "predict",
            "-r",
            str(damaged),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "s.csv"),
        )
        != 0
    )
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_predict_creates_the_output_folder(run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / "sub.csv"
    assert (
        cli(
            "predict",
            "-r",
            str(run),
            "--images",
            str(tiny_data / "test_images"),
            "--out",
            str(out),
            "--workers",
            "0",
        )
        == 0
    )
    assert out.is_file()


def test_predict_prints_its_counts_or_json(run: Path, tiny_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "sub.csv"
    args = ["predict", "-r", run, "--images", tiny_data / "test_images", "--out", out]
    capsys.readouterr()
    assert cli(*args, "--workers", "0") == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"images: 4, class 1: \d, class 2: \d, class 3: \d, class 4: \d", first)
    assert rest == [f"wrote {out}"]
    counts = {c: int(n) for c, n in re.findall(r"class (\d): (\d)", first)}
    assert cli(*args, "--workers", "0", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"images": 4, "with_defect": counts, "out": str(out), "files": [str(out)]}
    # every file and folder written is listed, the submission first
    more = {"--instances": tmp_path / "d.jsonl", "--save-probs": tmp_path / "probs"}
    more["--overlays"] = tmp_path / "overlays"
    extra = [str(a) for option, path in more.items() for a in (option, path)]
    assert cli(*args, "--workers", "0", *extra) == 0
    written = [out, more["--instances"], tmp_path / "d.csv", *list(more.values())[1:]]
    assert capsys.readouterr().out.splitlines()[1:] == [f"wrote {p}" for p in written]


def test_a_run_with_arch_params_is_evaluated_with_its_own_decoder(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    path = write_tiny(tmp_path, tiny_data)
    decoder = "{decoder_channels: [64, 32, 16, 16, 16], decoder_attention_type: scse}"
    options = ["-o", "trainer.epochs=1", "-o", f"model.arch_params={decoder}"]
    assert cli("train", "-c", path, *options) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run: "))
    member = load_member(run / "checkpoints" / "last.pth", torch.device("cpu"))
    head = [m for m in member.model.segmentation_head.modules() if isinstance(m, nn.Conv2d)]
    assert head[0].in_channels == 16  # the last decoder block's
    assert cli("evaluate", "-r", run, "--last", "--json", "--workers", "0") == 0
    report = json.loads(capsys.readouterr().out)
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    assert report["dice_mean"] == pytest.approx(last["val_dice_mean"], abs=1e-6)
