"""Strips of any length: tile starts and windows by hand, exact blending with a pointwise
model, agreement with whole-image prediction, and a strip 20x the training width predicted
from the CLI with the models never seeing more than a tile."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever.config import load_config
from sever.data import rle
from sever.engine.trainer import train
from sever.fileio import read_gray
from sever.inference import Ensemble
from sever.inference import predict as predicting
from sever.inference.postprocess import PostProcess, postprocess
from sever.inference.predict import ensemble_tiles
from sever.inference.tiles import Tiling, predict_tiled, starts, window
from tests.support import cli_output, write_tiny


def test_tile_starts_cover_the_axis_with_the_overlap():
    # 1000 px in tiles of 400 sharing >= 100: 3 tiles would need a start at 300, which
    # flooring to a multiple of 32 makes 288 (a gap of 312 > 300): so 4, at 0, 200, 400
    # floored, and the last ending at 1000.
    assert starts(1000, 400, 100) == [0, 192, 384, 600]
    assert starts(400, 400, 100) == [0] and starts(300, 400, 100) == [0]
    assert starts(1700, 1600, 0) == [0, 100]
    for length in (257, 1000, 5120, 100_000):
        found = starts(length, 256, 64)
        assert found[0] == 0 and found[-1] == length - 256
        assert all(s % 32 == 0 for s in found[:-1])
        assert max(np.diff(found)) <= 256 - 64  # every neighbour overlaps >= 64


def test_window_ramps_smoothly_and_never_reaches_zero():
    w = window(8, 3)
    # raised cosine 0.5 - 0.5 cos(pi (i + 0.5) / 3) for i = 0, 1, 2
    ramp = [0.0669873, 0.5, 0.9330127]
    np.testing.assert_allclose(w, [*ramp, 1, 1, *ramp[::-1]], atol=1e-6)
    # neighbours one tile minus the overlap apart cross-fade to exactly 1
    np.testing.assert_allclose(w[-3:] + w[:3], 1.0, atol=1e-6)
    assert (window(5, 0) == 1).all()


def pointwise(tiles):
    """A model whose probability is the pixel itself (each class scaled), presence the
    tile's brightest pixel: tiling must give back exactly the whole-image answer."""
    x = tiles[:, None].astype(np.float32) / 255
    probs = np.concatenate([x, x / 2, x / 4], axis=1)
    return probs, np.repeat(x.max(axis=(1, 2, 3))[:, None], 3, axis=1)


@pytest.mark.parametrize(
    "shape",
    [(100, 1000), (48, 1000), (1000, 48), (1000, 100)],
    ids=["taller-and-wider", "narrower-than-the-tile", "tall", "tall-and-wide"],
)
def test_blending_gives_a_pointwise_model_its_exact_answer(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, shape).astype(np.uint8)
    image[-10, -20] = 255  # the brightest pixel, in the last tiles
    seen = []

    def spy(tiles):
        seen.append(tiles.shape)
        return pointwise(tiles)

    probs, presence = predict_tiled(image, spy, Tiling((64, 192), 40, 3), 3)
    assert probs.shape == (3, *shape) and probs.dtype == np.float16
    expected = image / 255
    for c, scale in enumerate((1, 2, 4)):
        np.testing.assert_allclose(probs[c], expected / scale, atol=2.5e-4)  # float16
    np.testing.assert_allclose(presence, [1, 1, 1])  # the most any tile gives
    # never more than a batch of tiles of at most 64x192 (the image's side where shorter)
    assert all(s[0] <= 3 and s[1] <= 64 and s[2] <= 192 for s in seen)


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe (64x256 images, 64x128 crops), 4 epochs, loader workers 2."""
    folder = tmp_path_factory.mktemp("tiles")
    return train(load_config(write_tiny(folder, tiny_data), ["data.workers=2"]))


@pytest.mark.slow
def test_tiled_and_whole_image_predictions_agree(run: Path, tiny_data: Path):
    """Stated tolerance (README): tiles of three quarters of the image, a third of a tile
    overlapping: mean |probability difference| <= 0.02 per image and >= 95% of the pixel
    decisions at 0.5 the same. Measured on this model: at most 0.011 and 96%."""
    ensemble = Ensemble.from_runs([run], workers=0)
    model = ensemble_tiles(ensemble, None)
    names = sorted((tiny_data / "train_images").iterdir())[:8]
    for path in [*sorted((tiny_data / "test_images").iterdir()), *names]:
        image = read_gray(path)
        whole, _ = model(image[None])
        tiled, _ = predict_tiled(image, model, Tiling((64, 192), 64, 4), 4)
        difference = np.abs(whole[0] - tiled)
        assert difference.mean() <= 0.02, path.name
        assert ((whole[0] > 0.5) == (tiled > 0.5)).mean() >= 0.95, path.name


@pytest.mark.slow
def test_a_strip_twenty_times_the_training_width(
    run: Path, tiny_data: Path, tmp_path: Path, capsys, monkeypatch
):
    pieces = sorted((tiny_data / "train_images").iterdir())[:20]
    strip = np.concatenate([read_gray(p) for p in pieces], axis=1)  # 64 x 5120
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "strip.png"), strip)
    cv2.imwrite(str(images / "frame.png"), read_gray(pieces[0]))  # one of the models' size
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.5\nmin_pixels: 0\n")
    seen: list[tuple[int, ...]] = []
    real = predicting.predict_batch

    def spy(ensemble, images, amp_dtype=None):
        seen.append(tuple(images.shape))
        return real(ensemble, images, amp_dtype)

    monkeypatch.setattr(predicting, "predict_batch", spy)
    out, found = tmp_path / "sub.csv", tmp_path / "defects.jsonl"
    args = ["predict", "-r", run, "--images", images, "--out", out, "--format", "wide"]
    code, printed, err = cli_output(
        capsys, *args, "--postprocess", pp, "--instances", found, "--workers", 2, "--json"
    )
    assert code == 0, err
    assert json.loads(printed)["images"] == 2
    # the models saw tiles of their own size, 4 at a time, never the strip
    assert max(s[-1] for s in seen) == 256 and max(s[0] for s in seen) <= 4
    # the frame, then ceil((5120 - 256) / (256 - 64)) + 1 = 27 tiles in batches of 4
    assert len(seen) == 1 + 7
    rows = {r.split(",")[0]: r.split(",")[1] for r in out.read_text().splitlines()[1:]}
    assert len(rows) == 8  # 2 images x 4 classes
    monkeypatch.setattr(predicting, "predict_batch", real)
    ensemble = Ensemble.from_runs([run], workers=0)
    probs, _ = predict_tiled(strip, ensemble_tiles(ensemble, None), Tiling((64, 256), None, 4), 4)
    masks = postprocess(probs, PostProcess(classes=4, threshold=0.5, min_pixels=0))
    assert masks.any() and masks[:, :, 256:].any()  # the strip's defects, past one frame
    for c in range(4):
        decoded = rle.decode(rows[f"strip.png_{c + 1}"], 64, 5120)
        np.testing.assert_array_equal(decoded, masks[c])
    records = [json.loads(line) for line in found.read_text().splitlines()]
    on_strip = [r for r in records if r["image"] == "strip.png"]
    assert max(r["x0"] for r in on_strip) > 256  # positions along the strip
