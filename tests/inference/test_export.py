"""sever export: an ensemble as one ONNX graph, its parity with PyTorch proven, and an
export that does not match refused with nothing written."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sever.config import load_config
from sever.data import rle
from sever.engine.trainer import train
from sever.fileio import read_gray
from sever.inference import Ensemble, runtimes
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
    manifest = json.loads((tmp_path / "model.onnx.json").read_text())
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
        exporting.export_model(Ensemble.from_runs([run], workers=0), out, images=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither model nor manifest


def test_a_read_error_of_the_parity_check_is_no_write_failure(
    run: Path, tmp_path: Path, monkeypatch
):
    def unreadable(path: Path, runtime: str):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "libonnxruntime.so")

    monkeypatch.setattr(runtimes, "load", unreadable)
    out = tmp_path / "model.onnx"
    with pytest.raises(FileNotFoundError) as e:  # not "cannot write the export"
        exporting.export_model(Ensemble.from_runs([run], workers=0), out, images=2)
    assert e.value.filename == "libonnxruntime.so"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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
    assert code == 2 and "--exported predicts without checkpoints: drop -r/-c" in err
    (tmp_path / "model.onnx.json").unlink()
    code, _, err = cli_output(capsys, "predict", "--onnx", model, *common[:2],
                              "--out", tmp_path / "y.csv")  # fmt: skip
    assert code == 1 and "no model.onnx.json beside it; export with sever export" in err


def test_exports_of_one_name_keep_their_own_manifests(
    run: Path, tiny_data: Path, tmp_path: Path, capsys, caplog
):
    caplog.set_level(logging.WARNING)
    models = [tmp_path / "model.onnx", tmp_path / "model.pt2"]
    for model in models:
        args = ["export", "-r", run, "--out", model, "--check-images", 2, "--workers", 0]
        code, out, err = cli_output(capsys, *args)
        assert code == 0, err
        assert out.splitlines()[-1] == f"wrote {model} and {model}.json"
    names = ["model.onnx", "model.onnx.json", "model.pt2", "model.pt2.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # torch.export warns of a file name that does not end in .pt2 (its temporary's did)
    assert [r.getMessage() for r in caplog.records if ".pt2" in r.getMessage()] == []
    common = ["--images", tiny_data / "test_images", "--workers", 0]
    for model in models:
        code, _, err = cli_output(capsys, "predict", "--exported", model, "--out",
                                  tmp_path / f"{model.suffix[1:]}.csv", *common)  # fmt: skip
        assert code == 0, err
    # an earlier sever's manifest (<stem>.json) serves the export of its own runtime only
    (tmp_path / "model.onnx.json").unlink()
    (tmp_path / "model.pt2.json").rename(tmp_path / "model.json")
    code, _, err = cli_output(capsys, "predict", "--exported", models[1], "--out",
                              tmp_path / "old.csv", *common)  # fmt: skip
    assert code == 0, err
    code, _, err = cli_output(capsys, "predict", "--exported", models[0], "--out",
                              tmp_path / "other.csv", *common)  # fmt: skip
    assert code == 1 and err == (
        f"error: --exported {models[0]}: model.json beside it is the manifest of a "
        "torch.export export, not of this .onnx file; export it again with sever export\n"
    )


def test_a_pt2_export_proves_parity_and_predicts_strips(
    run: Path, tiny_data: Path, tmp_path: Path, capsys, monkeypatch
):
    model = tmp_path / "model.pt2"
    args = ["export", "-r", run, "--tta", "hflip", "--out", model, "--workers", 0, "--json"]
    code, printed, err = cli_output(capsys, *args)
    assert code == 0, err
    report = json.loads(printed)
    assert report["runtime"] == "torch.export" and report["max_difference"] < 1e-4
    assert abs(report["dice_eager"] - report["dice_exported"]) <= 1e-4
    manifest = json.loads((tmp_path / "model.pt2.json").read_text())
    assert manifest["runtime"] == "torch.export" and "onnx" not in manifest["versions"]
    # PyTorch alone runs it, at any batch and width: a strip twice the training width
    program = torch.export.load(str(model)).module()
    pixels = torch.randint(0, 256, (3, 1, 64, 512)).float()
    with torch.no_grad():
        probs, presence = program(pixels)
    ensemble = Ensemble.from_runs([run], tta="hflip", workers=0)
    normalize = ensemble.members[0].config.data.normalize
    eager, heads = predict_batch(ensemble, (pixels / 255 - normalize.mean) / normalize.std)
    assert np.abs(probs.numpy() - eager).max() < 1e-4
    assert np.abs(presence.numpy() - heads).max() < 1e-4
    # predict --exported: the folder's images and a strip 4x the training width, in tiles
    images = tmp_path / "images"
    images.mkdir()
    frames = sorted((tiny_data / "test_images").iterdir())
    for path in frames:
        (images / path.name).write_bytes(path.read_bytes())
    cv2.imwrite(str(images / "strip.png"), np.concatenate([read_gray(p) for p in frames], 1))
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.3\nmin_pixels: 0\n")
    common = ["--images", images, "--postprocess", pp, "--format", "wide", "--tile", "64x256"]
    exported, direct = tmp_path / "pt2.csv", tmp_path / "eager.csv"
    seen: list[tuple[int, ...]] = []
    real = runtimes.load

    def spy(path, runtime):
        run = real(path, runtime)
        return lambda pixels: seen.append(pixels.shape) or run(pixels)

    monkeypatch.setattr(runtimes, "load", spy)
    code, _, err = cli_output(capsys, "predict", "--exported", model, "--out", exported, *common)
    assert code == 0, err
    assert max(s[-1] for s in seen) == 256  # the strip went in tiles of 64x256
    args = ["predict", "-r", run, "--tta", "hflip", "--out", direct, *common]
    assert cli_output(capsys, *args)[0] == 0
    a, b = masks_of(exported, images), masks_of(direct, images)
    assert a.keys() == b.keys() and len(a) == 5 * 4
    assert a["strip.png_1"].shape == (64, 1024)
    for key, mask in a.items():  # pixels at the threshold may differ
        assert (mask == b[key]).mean() > 0.999, key


def masks_of(submission: Path, images: Path) -> dict[str, np.ndarray]:
    """A wide submission's masks at each image's own size."""
    masks = {}
    for line in submission.read_text().splitlines()[1:]:
        key, encoded = line.split(",")
        shape = read_gray(images / key.rsplit("_", 1)[0]).shape
        masks[key] = rle.decode(encoded, *shape)
    return masks


@pytest.mark.skipif(shutil.which("c++") is None, reason="AOTInductor needs a C++ compiler")
def test_an_aot_package_compiled_for_this_machine(
    run: Path, tiny_data: Path, tmp_path: Path, capsys
):
    model = tmp_path / "model.pt2"
    args = ["export", "-r", run, "--aot", "--out", model, "--check-images", 2, "--workers", 0]
    code, printed, err = cli_output(capsys, *args, "--json")
    assert code == 0, err
    report = json.loads(printed)
    assert report["runtime"] == "aoti" and report["max_difference"] < 1e-4
    images = tiny_data / "test_images"
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.3\nmin_pixels: 0\n")
    common = ["--images", images, "--postprocess", pp, "--format", "wide"]
    exported, direct = tmp_path / "aoti.csv", tmp_path / "eager.csv"
    code, _, err = cli_output(capsys, "predict", "--exported", model, "--out", exported, *common)
    assert code == 0, err
    assert cli_output(capsys, "predict", "-r", run, "--out", direct, *common)[0] == 0
    code, out, err = cli_output(capsys, "score", exported, direct, "--json")
    assert code == 0, err
    assert json.loads(out)["dice_mean"] > 0.999
