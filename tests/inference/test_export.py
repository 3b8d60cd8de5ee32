"""sever export: an ensemble as one ONNX graph, its parity with PyTorch proven, and an
export that does not match refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sever.config import load_config
from sever.engine.trainer import train
from sever.inference import Ensemble
from sever.inference import export as exporting
from sever.inference.predict import predict_batch
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow
onnxruntime = pytest.importorskip("onnxruntime")  # sever[export]; make test installs it


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step run with a class head (so the graph has a presence output)."""
    folder = tmp_path_factory.mktemp("export")
    overrides = ["trainer.epochs=1", "trainer.steps_per_epoch=1", "model.class_head.enabled=true"]
    return train(load_config(write_tiny(folder, tiny_data), overrides))


def test_export_proves_parity_and_writes_a_manifest(run: Path, tmp_path: Path, capsys):
    out = tmp_path / "model.onnx"
    args = ["export", "-r", run, "--tta", "hflip", "--out", out, "--workers", 0, "--json"]
    code, printed, err = cli_output(capsys, *args)
    assert code == 0, err
    report = json.loads(printed)
    assert report["images"] == 6 and report["max_difference"] < 1e-4
    assert abs(report["dice_eager"] - report["dice_exported"]) <= 1e-4
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest["classes"] == 4 and manifest["input"]["values"] == "raw grey pixels, 0..255"
    assert manifest["sources"]["tta"] == "hflip" and manifest["parity"]["images"] == 6
    # any width: a strip twice the training width, against PyTorch on the same pixels
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = torch.randint(0, 256, (2, 1, 64, 512)).float()
    probs, presence = session.run(None, {"pixels": pixels.numpy()})
    ensemble = Ensemble.from_runs([run], tta="hflip", workers=0)
    normalize = ensemble.members[0].config.data.normalize
    eager, heads = predict_batch(ensemble, (pixels / 255 - normalize.mean) / normalize.std)
    assert probs.shape == (2, 4, 64, 512) and np.abs(probs - eager).max() < 1e-4
    assert np.abs(presence - heads).max() < 1e-4


def test_an_export_that_does_not_match_is_refused(run: Path, tmp_path: Path, monkeypatch):
    real = exporting.measure

    def off(*args):
        return real(*args) | {"dice_exported": 0.5}

    monkeypatch.setattr(exporting, "measure", off)
    out = tmp_path / "model.onnx"
    with pytest.raises(exporting.ExportError, match=r"model.onnx: the exported model's Dice"):
        exporting.export_onnx(Ensemble.from_runs([run], workers=0), out, images=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither model nor manifest


def test_predict_with_the_exported_model(run: Path, tiny_data: Path, tmp_path: Path, capsys):
    model = tmp_path / "model.onnx"
    assert cli_output(capsys, "export", "-r", run, "--out", model, "--workers", 0)[0] == 0
    images = tiny_data / "test_images"
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.3\nmin_pixels: 0\n")  # a low threshold: masks to compare
    exported, eager = tmp_path / "onnx.csv", tmp_path / "eager.csv"
    common = ["--images", images, "--postprocess", pp, "--workers", 2, "--format", "wide"]
    code, out, err = cli_output(capsys, "predict", "--onnx", model, "--out", exported, *common)
    assert code == 0, err
    assert cli_output(capsys, "predict", "-r", run, "--out", eager, *common)[0] == 0
    code, out, err = cli_output(capsys, "score", exported, eager, "--json")
    assert code == 0, err
    assert json.loads(out)["dice_mean"] > 0.999  # pixels at the threshold may differ
    # its manifest's post-processing is the default
    code, _, err = cli_output(capsys, "predict", "--onnx", model, "--out", tmp_path / "m.csv",
                              "--images", images, "--workers", 0)  # fmt: skip
    assert code == 0, err
    code, _, err = cli_output(capsys, "predict", "--onnx", model, "-r", run, *common[:2],
                              "--out", tmp_path / "x.csv")  # fmt: skip
    assert code == 2 and "--onnx predicts without checkpoints: drop -r/-c" in err
    (tmp_path / "model.json").unlink()
    code, _, err = cli_output(capsys, "predict", "--onnx", model, *common[:2],
                              "--out", tmp_path / "y.csv")  # fmt: skip
    assert code == 1 and "no model.json beside it; export with sever export" in err
