"""`sever evaluate` keeps what --help and README promise: checkpoint files, any working
directory, classifiers and ensemble files beside the segmenter, one report per set of
options. And a tuned file records what it was tuned with, which predict checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sever.config import load_config
from sever.engine.trainer import train
from sever.inference.evaluate import EvalReport
from sever.inference.models import load_member
from sever.kaggle.staging import strip_to_weights
from tests.support import TINY, cli_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A project folder trained in as users do: `data.dir: data` and `trainer.save_dir:
    saved`, both relative to it; a segmenter and a classifier on the same split."""
    home = tmp_path_factory.mktemp("project")
    (home / "data").symlink_to(tiny_data)
    config = home / "tiny.yml"
    config.write_text(TINY.format(data="data", saved="saved"))
    before = Path.cwd()
    os.chdir(home)
    try:
        # min_pixels 8 (not the full-size 600...): the default keeps some tiny masks
        segmenter = train(
            load_config(config, ["trainer.epochs=2", "data.workers=2", "trainer.min_pixels=8"])
        )
        classifier = train(
            load_config(
                config,
                ["name=cls", "task=classify", "data.crop=null", "trainer.epochs=2"],
            )
        )
    finally:
        os.chdir(before)
    assert not segmenter.is_absolute()  # the run is named as trained: saved/tiny/<stamp>
    return {"home": home, "seg": home / segmenter, "cls": home / classifier}


def last_validation(run: Path) -> pd.Series:
    return pd.read_csv(run / "metrics.csv").iloc[-1]


def evaluate(capsys, *args) -> dict:
    code, out, err = cli_output(capsys, "evaluate", *args, "--json", "--workers", "0")
    assert code == 0, err
    return json.loads(out)


def test_a_checkpoint_file_from_another_folder(project, tmp_path: Path, monkeypatch, capsys):
    # Elsewhere, data.dir "data" is not here: it resolves against the folder the run
    # trained in, found from where the run sits (saved/tiny/<stamp> below it).
    monkeypatch.chdir(tmp_path)
    checkpoint = project["seg"] / "checkpoints" / "last.pth"
    report = evaluate(capsys, "-r", checkpoint)
    assert report["dice_mean"] == pytest.approx(
        last_validation(project["seg"])["val_dice_mean"], abs=1e-6
    )
    assert report["checkpoints"] == [str(checkpoint)]
    assert (project["seg"] / "eval-last.json").is_file()


def test_a_moved_run_takes_data_dir(project, tiny_data: Path, tmp_path: Path, monkeypatch, capsys):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(project["seg"], moved)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_output(capsys, "evaluate", "-r", moved, "--last", "--workers", "0")
    assert code == 1 and out == ""
    assert err.strip() == (
        f"error: {moved}: its data.dir data has no train.csv (looked in {tmp_path / 'data'}); "
        "give the dataset folder with --data-dir DIR"
    )
    report = evaluate(capsys, "-r", moved, "--last", "--data-dir", tiny_data)
    assert report["dice_mean"] == pytest.approx(
        last_validation(project["seg"])["val_dice_mean"], abs=1e-6
    )
    (tmp_path / "data").symlink_to(tiny_data)  # data.dir relative to this folder: found
    report = evaluate(capsys, "-r", moved, "--last")
    assert report["dice_mean"] == pytest.approx(
        last_validation(project["seg"])["val_dice_mean"], abs=1e-6
    )


def test_a_checkpoint_away_from_its_run_is_one_line(project, tmp_path: Path, capsys):
    lone = tmp_path / "model.pth"
    shutil.copy(project["seg"] / "checkpoints" / "last.pth", lone)
    code, _, err = cli_output(capsys, "evaluate", "-r", lone, "--workers", "0")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "not inside its run directory (RUN/checkpoints/), whose split.csv" in err


def gate_everything(folder: Path) -> Path:
    """Post-processing that gates every class at presence 1.0: nothing passes, so every
    mask is empty and the score must be exactly the empty baseline."""
    path = folder / "shut.yml"
    path.write_text(yaml.safe_dump({"threshold": 0.5, "min_pixels": 0, "gate": 1.0}))
    return path


def test_a_classifier_beside_the_segmenter_gates_the_masks(project, tmp_path: Path, capsys):
    shut = gate_everything(tmp_path)
    both = ["-r", project["seg"], "-r", project["cls"], "--last"]
    report = evaluate(capsys, *both, "--postprocess", shut)
    assert report["dice_mean"] == report["empty_baseline"]
    assert report["f1_mean"] == pytest.approx(sum(report[f"f1_{c}"] for c in range(1, 5)) / 4)
    open_ = evaluate(capsys, *both)  # no gate: the trainer's post-processing, as validated
    assert open_["dice_mean"] == pytest.approx(
        last_validation(project["seg"])["val_dice_mean"], abs=1e-6
    )

    code, _, err = cli_output(capsys, "evaluate", "-r", project["seg"], "--postprocess", shut)
    assert code == 1 and "no model gives it" in err  # a gate needs presence


def test_an_ensemble_file_evaluates_its_postprocessing(project, tmp_path: Path, capsys):
    spec = tmp_path / "ensemble.yml"
    models = [
        {"checkpoint": str(project["seg"] / "checkpoints" / "last.pth")},
        {"run": str(project["cls"]), "last": True},
    ]
    spec.write_text(
        yaml.safe_dump({"models": models, "tta": "hflip", "postprocess": {"gate": 1.0}})
    )
    report = evaluate(capsys, "-c", spec)
    assert report["tta"] == "hflip" and report["postprocess"]["gate"] == [1.0] * 4
    assert report["dice_mean"] == report["empty_baseline"]


def test_a_tuned_file_checks_out_outside_tune(project, tmp_path: Path, capsys):
    tuned = tmp_path / "pp.yml"
    models = ["-r", project["seg"], "-r", project["cls"], "--last", "--tta", "hflip"]
    code, out, err = cli_output(capsys, "tune", *models, "--out", tuned, "--json", "--workers", "0")
    assert code == 0, err
    result = json.loads(out)
    report = evaluate(capsys, *models, "--postprocess", tuned)
    assert report["dice_mean"] == pytest.approx(result["after"]["dice_mean"], abs=2e-3)
    # the file says what it was tuned with
    record = yaml.safe_load(tuned.read_text())["tuned_with"]
    assert record["tta"] == "hflip" and record["averaging"] == "mean"
    assert [m["checkpoint"] for m in record["models"]] == [
        str(project["seg"] / "checkpoints" / "last.pth"),
        str(project["cls"] / "checkpoints" / "last.pth"),
    ]
    assert [m["task"] for m in record["models"]] == ["segment", "classify"]


def test_a_second_evaluate_keeps_the_first_report(project, tmp_path: Path, capsys):
    run = project["seg"]
    plain = run / "eval-model_best.json"
    first = evaluate(capsys, "-r", run)
    assert json.loads(plain.read_text()) == first
    loose = tmp_path / "loose.yml"
    loose.write_text("threshold: 0.2\nmin_pixels: 0\n")
    code, out, _ = cli_output(
        capsys, "evaluate", "-r", run, "--postprocess", loose, "--workers", "0"
    )
    assert code == 0
    written = Path(out.strip().splitlines()[-1].removeprefix("wrote "))
    assert written.parent == run and written.name.startswith("eval-model_best-")
    assert json.loads(written.read_text())["postprocess"]["threshold"] == [0.2] * 4
    assert json.loads(plain.read_text()) == first  # the earlier report is untouched
    # the same options again: the same file, and it says so
    code, out, _ = cli_output(
        capsys, "evaluate", "-r", run, "--postprocess", loose, "--workers", "0"
    )
    assert out.strip().endswith(f"wrote {written} (replacing its report of the same options)")
    other = tmp_path / "reports" / "eval.json"
    code, out, _ = cli_output(capsys, "evaluate", "-r", run, "--out", other, "--workers", "0")
    assert code == 0 and json.loads(other.read_text())["dice_mean"] == first["dice_mean"]


def test_predict_warns_when_the_tuned_file_was_tuned_otherwise(
    project, tiny_data: Path, tmp_path: Path, capsys
):
    seg = project["seg"] / "checkpoints" / "last.pth"
    tuned = tmp_path / "pp.yml"
    code, _, err = cli_output(
        capsys, "tune", "-r", seg, "--tta", "hflip", "--out", tuned, "--workers", "0"
    )
    assert code == 0, err
    # the same model as a weights-only copy elsewhere (as staged for Kaggle): the same
    staged = tmp_path / "upload" / "last.pth"
    staged.parent.mkdir()
    torch.save(strip_to_weights(torch.load(seg, weights_only=True)), staged)
    images = ["--images", tiny_data / "test_images", "--out", tmp_path / "s.csv"]
    common = [*images, "--postprocess", tuned, "--workers", "0"]
    code, _, err = cli_output(capsys, "predict", "-r", staged, "--tta", "hflip", *common)
    assert code == 0 and "was tuned for" not in err

    code, _, err = cli_output(capsys, "predict", "-r", staged, *common)
    warning = [line for line in err.splitlines() if "was tuned for" in line]
    assert code == 0 and warning == [
        f"{tuned} was tuned for another ensemble: TTA hflip (here none); its thresholds may "
        "not fit this one (tune it again with these models and options)"
    ]
    other = project["seg"] / "checkpoints" / "checkpoint-epoch1.pth"
    if not other.is_file():
        other = project["cls"] / "checkpoints" / "last.pth"
    code, _, err = cli_output(capsys, "predict", "-r", seg, "-r", other, "--tta", "hflip", *common)
    assert code == 0, err
    assert f"1 model(s) here that it was not tuned with ({other})" in err


def test_a_pseudo_labelled_checkpoint_loads_without_its_training_files(project, tmp_path: Path):
    state = torch.load(project["seg"] / "checkpoints" / "last.pth", weights_only=True)
    state["config"]["data"]["pseudo"] = {"csv": "gone/pseudo.csv", "images": "gone/images"}
    path = tmp_path / "pseudo-trained.pth"
    torch.save(state, path)
    member = load_member(path, torch.device("cpu"))  # predict needs neither file
    assert member.config.data.pseudo is None


def test_runs_of_other_folds_are_scored_out_of_fold(project, tiny_data: Path, tmp_path, capsys):
    # A second "fold": the same model with the split turned round, so its validation
    # images are the first run's training images. Together they cover all 32 images, each
    # scored once, by the run that holds it out: the pooled Dice is the image-weighted
    # mean of the two runs' own scores.
    other = tmp_path / "saved" / "tiny" / "fold1"
    shutil.copytree(project["seg"], other)
    split = pd.read_csv(other / "split.csv")
    split["split"] = split["split"].map({"train": "val", "val": "train"})
    split.to_csv(other / "split.csv", index=False)
    data = ["--data-dir", tiny_data]
    first = evaluate(capsys, "-r", project["seg"], *data)
    second = evaluate(capsys, "-r", other, *data)
    both = evaluate(capsys, "-r", project["seg"], "-r", other, *data)
    assert (both["folds"], both["images"]) == (2, 32) and first["images"] + second["images"] == 32
    pooled = (first["dice_mean"] * first["images"] + second["dice_mean"] * second["images"]) / 32
    assert both["dice_mean"] == pytest.approx(pooled)


def test_an_undefined_precision_or_recall_is_empty() -> None:
    # class 2 never present and never predicted: precision and recall are 0 / 0
    nan = float("nan")
    scores = {"dice_mean": 0.9, "precision_1": 0.5, "recall_1": 1.0}
    scores |= {"precision_2": nan, "recall_2": nan, "f1_2": 1.0}
    report = EvalReport(scores, 10, 1, ["m.pth"], [1.0], None, "none", "mean", path=Path("r"))
    assert report.lines() == [
        "      dice_mean: 0.9000",
        "    precision_1: 0.5000",
        "       recall_1: 1.0000",
        "    precision_2:",
        "       recall_2:",
        "           f1_2: 1.0000",
        "wrote r",
    ]
    found = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # valid JSON
    assert (found["precision_2"], found["recall_2"], found["f1_2"]) == (None, None, 1.0)


def test_one_default_post_processing_in_every_command(
    project, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    # The run's own validation, evaluate, tune's "before" and a predicted submission scored
    # offline all apply the one default (threshold 0.5, the run's min_pixels 8, one class
    # per pixel): the same score. tune counts 1/255 levels, so it may differ in the pixels
    # within half a level of 0.5 (none here, or a few: 1e-3).
    run = project["seg"]
    validation = last_validation(run)["val_dice_mean"]
    report = evaluate(capsys, "-r", run, "--last")
    assert report["dice_mean"] == pytest.approx(validation, abs=1e-6)
    applied = report["postprocess"]
    assert (applied["threshold"], applied["min_pixels"]) == ([0.5] * 4, [8] * 4)
    assert applied["one_class_per_pixel"] and applied["min_component"] == [0] * 4
    code, out, err = cli_output(
        capsys, "tune", "-r", run, "--last", "--json", "--workers", "0", "--out", tmp_path / "t.yml"
    )
    assert code == 0, err
    assert json.loads(out)["before"]["dice_mean"] == pytest.approx(validation, abs=1e-3)
    ids = pd.read_csv(run / "split.csv").query("split == 'val'")["ImageId"].tolist()
    images = tmp_path / "val_images"
    images.mkdir()
    for name in ids:
        (images / name).symlink_to(tiny_data / "train_images" / name)
    truth = pd.read_csv(tiny_data / "train.csv")
    truth = truth[truth["ImageId"].isin(ids)]
    truth.to_csv(tmp_path / "truth.csv", index=False)
    sub = tmp_path / "sub.csv"
    code, _, err = cli_output(
        capsys, "predict", "-r", run, "--last", "--images", images, "--out", sub, "--workers", "0"
    )
    assert code == 0, err
    code, out, err = cli_output(
        capsys, "score", sub, tmp_path / "truth.csv", "--images", images, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["dice_mean"] == pytest.approx(validation, abs=1e-6)
    assert 0 < json.loads(out)["dice_positive"]  # some masks survive: the test means something
