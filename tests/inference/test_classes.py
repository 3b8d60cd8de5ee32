"""Any number of classes: post-processing, submissions, scoring, and a 6-class workflow
from the command line (synth, train, evaluate, tune, predict, score)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.submission import score_submission, write_submission
from tests.support import cli_output, write_tiny


def test_one_number_stands_for_every_class():
    pp = PostProcess(threshold=0.3, classes=6)
    assert pp.threshold == (0.3,) * 6
    assert pp.min_pixels == (0,) * 6  # the Severstal sizes are for its 4 classes only
    assert PostProcess().min_pixels == (600, 600, 1000, 2000)


def test_a_file_without_classes_takes_them_from_its_lists_or_the_models():
    assert PostProcess.from_dict({"threshold": [0.5] * 6}).classes == 6
    assert PostProcess.from_dict({"threshold": 0.5}).classes == 4
    with pytest.raises(ValueError, match=r"expected 4 values \(one per class\)"):
        PostProcess.from_dict({"threshold": [0.5] * 6}, classes=4)
    assert PostProcess.from_dict({"threshold": 0.5}, classes=2).threshold == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"expected 2 values \(one per class\)"):
        PostProcess.from_dict({"threshold": [0.5] * 4}, classes=2)
    with pytest.raises(ValueError, match="PostProcess.classes: 4, but the models predict 6"):
        PostProcess.from_dict({"classes": 4}, classes=6)


def test_round_trip_keeps_the_classes():
    pp = PostProcess(threshold=[0.1, 0.2, 0.3], min_pixels=[1, 2, 3], classes=3)
    assert PostProcess.from_dict(pp.to_dict()) == pp
    assert pp.to_dict()["classes"] == 3


def test_probabilities_of_other_classes_are_refused():
    with pytest.raises(ValueError, match="PostProcess is for 4 classes, probs has 6"):
        postprocess_batch(np.zeros((1, 6, 4, 4)), PostProcess())


def test_postprocess_runs_per_class_for_six():
    probs = np.zeros((1, 6, 2, 2))
    probs[0, 5] = 0.7  # class 6 everywhere, above its threshold only
    pp = PostProcess(threshold=[0.5] * 5 + [0.6], min_pixels=0, classes=6)
    masks = postprocess_batch(probs, pp)
    assert masks[0, 5].all() and not masks[0, :5].any()
    raised = PostProcess(threshold=[0.5] * 5 + [0.8], min_pixels=0, classes=6)
    assert not postprocess_batch(probs, raised).any()


def test_a_six_class_submission_has_six_rows_per_image_and_scores_by_hand(tmp_path: Path):
    sub, truth = tmp_path / "sub.csv", tmp_path / "truth.csv"
    write_submission({"a.jpg": {6: "1 4"}}, ["a.jpg", "b.jpg"], sub, "wide", classes=6)
    rows = pd.read_csv(sub, keep_default_na=False)
    assert rows["ImageId_ClassId"].tolist() == [f"{i}.jpg_{c}" for i in "ab" for c in range(1, 7)]
    assert rows.loc[5, "EncodedPixels"] == "1 4"
    # truth: a.jpg class 6 is pixels 1..2 (|Y| = 2, |X∩Y| = 2, |X| = 4): Dice 4/6; the other
    # 11 pairs are empty in both: 1 each. Mean (11 + 2/3) / 12.
    write_submission({"a.jpg": {6: "1 2"}}, ["a.jpg", "b.jpg"], truth, "wide", classes=6)
    scores = score_submission(sub, truth, shape=(4, 4), classes=6)
    assert scores["pairs"] == 12
    assert scores["dice_6"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["dice_mean"] == pytest.approx((11 + 2 / 3) / 12)
    with pytest.raises(ValueError, match=r"ClassId 5 is not in 1..4"):
        write_submission({"a.jpg": {5: "1 2"}}, ["a.jpg"], sub, "wide")


# The tiny config as users would run it for six classes: loader workers, a class head.
SIX = [
    "model.classes=6",
    "data.workers=2",
    "model.class_head.enabled=true",
    "model.class_head.pos_weight=[1,1,1,1,2,2]",
    "trainer.min_pixels=[0,0,0,10,10,10]",
    "trainer.epochs=2",
    "trainer.steps_per_epoch=3",
    "scheduler.cosine_epochs=1",
]


def test_six_classes_from_synth_to_score(tmp_path: Path, capsys):
    def sever(*args: object) -> str:
        code, out, err = cli_output(capsys, *args)
        assert code == 0, err
        return out

    data = tmp_path / "data"
    sever("synth", data, "--n-train", 24, "--n-test", 3, "--height", 64, "--width", 256,
          "--classes", 6, "--seed", 2)  # fmt: skip
    sever("check-data", data, "--classes", 6)
    overrides = [arg for o in SIX for arg in ("-o", o)]
    out = sever("train", "-c", write_tiny(tmp_path, data), *overrides)
    run = Path(out.strip().splitlines()[-1].removeprefix("run: "))
    scores = json.loads(sever("evaluate", "-r", run, "--json").splitlines()[-1])
    assert {f"dice_{c}" for c in range(1, 7)} <= scores.keys()
    sever("tune", "-r", run, "--json")
    tuned = yaml.safe_load((run / "postprocess-tuned.yml").read_text())
    assert tuned["classes"] == 6 and len(tuned["threshold"]) == 6
    sub, test_images = tmp_path / "sub.csv", data / "test_images"
    out = sever("predict", "-r", run, "--images", test_images, "--out", sub,
                "--postprocess", run / "postprocess-tuned.yml")  # fmt: skip
    assert "class 6:" in out
    rows = pd.read_csv(sub, keep_default_na=False)
    assert len(rows) == 3 * 6
    assert {key.rsplit("_", 1)[1] for key in rows["ImageId_ClassId"]} == set("123456")
    scores = json.loads(sever("score", sub, sub, "--classes", 6, "--json"))
    assert scores["dice_mean"] == 1.0 and scores["pairs"] == 18
    # a 4-class post-processing file does not fit 6-class models: one line, before any work
    four = tmp_path / "four.yml"
    four.write_text("threshold: [0.5, 0.5, 0.5, 0.5]\n")
    other = tmp_path / "other.csv"
    code, _, err = cli_output(capsys, "predict", "-r", run, "--images", test_images,
                              "--out", other, "--postprocess", four)  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "expected 6 values (one per class) or one number, got 4" in err
    assert not other.exists()
