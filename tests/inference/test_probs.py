"""Saved probabilities: the folder format, blending, and a submission from them that equals
the one predicted directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sever.errors import DataError, OptionError
from sever.inference import Ensemble, predict
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.probs import blended, check_blend, probs_writer, read_saved
from tests.inference.test_predict_inputs import member, noise_images  # noqa: F401 (a fixture)

RECORD = {"tta": "none", "averaging": "mean", "models": []}


def saved(folder: Path, probs: np.ndarray, presence: np.ndarray | None = None) -> Path:
    ids = [f"{i}.jpg" for i in range(len(probs))]
    with probs_writer(folder, probs.shape[1], RECORD) as sink:
        sink.add(ids[:2], probs[:2], None if presence is None else presence[:2])
        sink.add(ids[2:], probs[2:], None if presence is None else presence[2:])
    return folder


def test_a_folder_keeps_8_bit_levels_and_its_manifest(tmp_path: Path):
    probs = np.zeros((3, 2, 2, 4), np.float32)
    probs[0, 1, 0, 0] = 0.5  # level rint(127.5) = 128
    probs[2, 0] = 1.0
    folder = saved(tmp_path / "p", probs, np.array([[0.1, 0.9]] * 3))
    found = read_saved(folder)
    assert (found.classes, found.shape, found.presence) == (2, (2, 4), True)
    assert found.images == ["0.jpg", "1.jpg", "2.jpg"] and found.predicted_with == RECORD
    first, presence, winner = found.load("0.jpg")
    assert winner.dtype == np.uint8 and winner.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert first[1, 0, 0] == 128 / 255 and first.sum() == 128 / 255
    assert presence == pytest.approx([0.1, 0.9], abs=1e-3)  # float16
    assert (found.load("2.jpg")[0][0] == 1.0).all()
    assert not list(tmp_path.glob(".p*"))  # the temporary folder is gone


def test_an_interrupted_writer_leaves_no_folder(tmp_path: Path):
    with pytest.raises(KeyboardInterrupt), probs_writer(tmp_path / "p", 2, RECORD) as sink:
        sink.add(["a.jpg"], np.zeros((1, 2, 2, 2)))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_folders_blend_image_by_image(tmp_path: Path):
    a = np.full((3, 1, 1, 2), 0.2, np.float32)
    b = np.full((3, 1, 1, 2), 0.6, np.float32)
    folders = [read_saved(saved(tmp_path / n, p)) for n, p in (("a", a), ("b", b))]
    probs, presence, winner = blended(folders, ["2.jpg", "0.jpg"], "mean")
    assert probs.shape == (2, 1, 1, 2) and presence is None and winner is None
    # levels 51 and 153: (51 + 153) / 2 / 255 = 0.4
    assert probs == pytest.approx(np.full((2, 1, 1, 2), 0.4))
    rms, _, _ = blended(folders, ["1.jpg"], "rms")
    assert rms[0, 0, 0, 0] == pytest.approx(np.sqrt(((51 / 255) ** 2 + (153 / 255) ** 2) / 2))


def test_mismatched_folders_and_settings_are_refused(tmp_path: Path):
    three = read_saved(saved(tmp_path / "three", np.zeros((3, 2, 2, 2))))
    four = read_saved(saved(tmp_path / "four", np.zeros((4, 2, 2, 2))))
    with pytest.raises(DataError, match="four: other images than .*three"):
        check_blend([three, four], PostProcess(classes=2))
    with pytest.raises(OptionError, match="--postprocess: for 4 classes, the saved .* have 2"):
        check_blend([three], PostProcess())
    with pytest.raises(OptionError, match="gates or scales by class presence"):
        check_blend([three], PostProcess(gate=0.5, classes=2))
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="no probs.json; not a folder that predict --save-probs"):
        read_saved(tmp_path / "bare")
    manifest = tmp_path / "three" / "probs.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 9}))
    with pytest.raises(DataError, match="format 9; this sever reads formats 1 and 2"):
        read_saved(tmp_path / "three")


def test_from_saved_probabilities_equals_predicting(member, tmp_path: Path):  # noqa: F811
    folder = noise_images(tmp_path / "images", 5, seed=0)
    # thresholds between 1/255 levels (as tune writes them) are exact on saved levels, and
    # the saved winners decide one class per pixel as the unrounded probabilities did
    levels = [(k + 0.5) / 255 for k in (120, 125, 127, 130)]
    for one_class in (False, True):
        pp = PostProcess(threshold=levels, min_pixels=0, one_class_per_pixel=one_class)
        ensemble = Ensemble([member], postprocess=pp, workers=0)
        direct, probs = tmp_path / f"direct{one_class}.csv", tmp_path / f"probs{one_class}"
        outputs = predict.Outputs(direct, "wide", save_probs=probs)
        predict.predict_folder(ensemble, folder, outputs)
        again = tmp_path / f"again{one_class}.csv"
        report = predict.predict_saved([probs], predict.Outputs(again, "wide"), pp)
        assert again.read_text() == direct.read_text()
        assert report.images == 5 and sum(report.with_defect.values()) > 0
    with pytest.raises(OptionError, match="--save-probs .*: already exists and is not empty"):
        predict.predict_folder(ensemble, folder, predict.Outputs(direct, save_probs=probs))


def test_from_saved_probabilities_applies_what_predict_applied(member, tmp_path: Path):  # noqa: F811
    # No --postprocess on either side: predict applies the model's default (its trainer's
    # threshold and min_pixels, one class per pixel), and --from-probs the same, from the
    # manifest, not a default of its own.
    folder = noise_images(tmp_path / "images", 5, seed=1)
    ensemble = Ensemble([member], workers=0)
    direct, probs = tmp_path / "direct.csv", tmp_path / "probs"
    predict.predict_folder(ensemble, folder, predict.Outputs(direct, "wide", save_probs=probs))
    assert read_saved(probs).postprocess == ensemble.applied_postprocess.to_dict()
    again = tmp_path / "again.csv"
    predict.predict_saved([probs], predict.Outputs(again, "wide"))
    assert again.read_text() == direct.read_text()


def test_saved_winners_break_the_ties_rounding_makes(tmp_path: Path):
    # One pixel where class 1 (0.5012) beats class 0 (0.5008): both round to level 128,
    # where argmax would give class 0. The saved winner keeps class 1, as predicting did.
    probs = np.zeros((1, 2, 1, 2), np.float32)
    probs[0, :, 0, 0] = [0.5008, 0.5012]
    pp = PostProcess(threshold=(127.5 - 1) / 255, min_pixels=0, classes=2)
    direct = postprocess_batch(probs, pp)
    assert direct[0, :, 0, 0].tolist() == [False, True]
    found = read_saved(saved(tmp_path / "p", np.concatenate([probs] * 3)))
    levels, _, winner = blended([found], ["0.jpg"], "mean")
    assert levels[0, 0, 0, 0] == levels[0, 1, 0, 0] == 128 / 255  # a tie after rounding
    assert postprocess_batch(levels, pp)[0, :, 0, 0].tolist() == [True, False]  # argmax's
    np.testing.assert_array_equal(postprocess_batch(levels, pp, winner=winner), direct)


def test_a_blend_of_folders_saved_under_other_post_processings_warns(tmp_path: Path, caplog):
    probs = np.zeros((3, 2, 2, 2), np.float32)
    probs[:, 0, 0, :] = 0.9
    for name, threshold in (("a", 0.5), ("b", 0.3)):
        pp = PostProcess(threshold=threshold, min_pixels=0, classes=2)
        with probs_writer(tmp_path / name, 2, RECORD, pp) as sink:
            sink.add([f"{i}.jpg" for i in range(3)], probs)
    out = predict.Outputs(tmp_path / "sub.csv", "wide")
    with caplog.at_level("WARNING"):
        predict.predict_saved([tmp_path / "a", tmp_path / "b"], out)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and f"--from-probs {tmp_path / 'b'} was saved under" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING"):  # the same post-processing: no warning
        predict.predict_saved(
            [tmp_path / "a", tmp_path / "a"], predict.Outputs(tmp_path / "s2.csv")
        )
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
