"""K-fold training: the --folds spec, the parent layout and ensemble.yml, out-of-fold tuning,
and a failing fold that keeps the folds before it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sever.config import load_config
from sever.engine import kfold
from sever.engine.kfold import parse_folds, train_folds, write_ensemble
from sever.errors import ConfigError, DataError
from sever.inference.ensemble import load_ensemble
from tests.support import cli, torchrun_train


@pytest.mark.parametrize(
    "spec, folds, expected",
    [
        ("all", 5, [0, 1, 2, 3, 4]),
        ("0-4", 5, [0, 1, 2, 3, 4]),
        ("1-2", 3, [1, 2]),
        ("3", 5, [3]),
        ("0,2,3", 5, [0, 2, 3]),
        ("3,0", 5, [0, 3]),
        ("0-1,3", 5, [0, 1, 3]),
        (" 0, 2 ", 3, [0, 2]),
        ("2-2", 3, [2]),
    ],
)
def test_parse_folds(spec: str, folds: int, expected: list[int]) -> None:
    assert parse_folds(spec, folds) == expected


@pytest.mark.parametrize(
    "spec, folds, message",
    [
        ("all", None, "--folds all: data.folds is not set; set it in the config or with -o "),
        ("0-4", 3, "--folds 0-4: fold 3 is out of range for data.folds=3 (folds 0-2)"),
        ("5", 5, "--folds 5: fold 5 is out of range for data.folds=5 (folds 0-4)"),
        ("1-999999999999", 5, "--folds 1-999999999999: fold 5 is out of range for data.folds=5"),
        ("3-1", 5, "--folds 3-1: range 3-1 runs backwards"),
        ("0,0", 5, "--folds 0,0: fold 0 is named twice"),
        ("0-2,1", 5, "--folds 0-2,1: fold 1 is named twice"),
        ("", 5, "--folds : expected 'all', a fold (3), a range (0-4) or a list (0,2,3)"),
        ("-1", 5, "--folds -1: expected 'all'"),
        ("1,", 5, "--folds 1,: expected 'all'"),
        ("one", 5, "--folds one: expected 'all'"),
        ("ALL", 5, "--folds ALL: expected 'all'"),
    ],
)
def test_parse_folds_errors(spec: str, folds: int | None, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_folds(spec, folds)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def fake_train(fail_on: int | None = None):
    """Stands in for the trainer: writes a best checkpoint, or fails on one fold."""

    def train(config, resume=None, new_run=None) -> Path:
        run = new_run()
        if config.data.fold == fail_on:
            raise DataError("fold data went missing")
        (run / "checkpoints" / "model_best.pth").write_bytes(b"")
        return run

    return train


def test_a_failing_fold_stops_and_keeps_the_folds_before(
    tiny_yaml: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(kfold, "train", fake_train(fail_on=1))
    code = cli("train", "-c", str(tiny_yaml), "-o", "data.folds=3", "--folds", "all")
    assert code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "error: fold data went missing"
    assert "k-fold stopped in fold 1; completed folds (fold0) stay in" in err
    (parent,) = (tiny_yaml.parent / "saved" / "tiny").iterdir()
    assert sorted(p.name for p in parent.iterdir()) == ["fold0", "fold1"]
    assert (parent / "fold0" / "checkpoints" / "model_best.pth").is_file()
    assert not (parent / "ensemble.yml").exists()


def test_parents_are_never_reused(tiny_config, monkeypatch) -> None:
    monkeypatch.setattr(kfold, "train", fake_train())
    config = tiny_config("data.folds=2")
    first, second = train_folds(config, [1]), train_folds(config, [1])
    assert first != second and first.parent == second.parent == config.trainer.save_dir / "tiny"
    assert first.name.endswith("-kfold") and second.name.endswith("-kfold")
    assert [p.name for p in first.iterdir() if p.is_dir()] == ["fold1"]


def test_folds_out_of_range_or_with_resume_fail_before_any_directory(tiny_yaml: Path, capsys):
    assert cli("train", "-c", str(tiny_yaml), "-o", "data.folds=2", "--folds", "0-2") == 2
    assert capsys.readouterr().err.strip() == (
        "error: --folds 0-2: fold 2 is out of range for data.folds=2 (folds 0-1)"
    )
    assert cli("train", "-c", str(tiny_yaml), "--folds", "all") == 2
    assert "data.folds is not set" in capsys.readouterr().err
    assert cli("train", "--resume", str(tiny_yaml.parent), "--folds", "all") == 2
    assert "resume one fold on its own" in capsys.readouterr().err
    assert not (tiny_yaml.parent / "saved").exists()


@pytest.mark.slow
def test_kfold_under_torchrun(tiny_yaml: Path) -> None:
    overrides = ["data.folds=2", "trainer.epochs=1", "trainer.steps_per_epoch=1"]
    overrides.append("trainer.batch_size=2")
    args = [arg for o in overrides for arg in ("-o", o)]
    done = torchrun_train("-c", tiny_yaml, *args, "--folds", "all")
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = (tiny_yaml.parent / "saved" / "tiny").iterdir()  # one parent for all ranks
    assert sorted(p.name for p in parent.iterdir()) == ["ensemble.yml", "fold0", "fold1"]
    assert load_ensemble(parent / "ensemble.yml").models[1].checkpoint.is_file()


@pytest.mark.slow
def test_kfold_trains_every_fold_and_tunes_out_of_fold(
    tiny_yaml: Path, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    overrides = ["data.folds=2", "trainer.epochs=1", "trainer.steps_per_epoch=1"]
    args = [arg for o in overrides for arg in ("-o", o)]
    assert cli("train", "-c", str(tiny_yaml), *args, "--folds", "all") == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("run: ") and last_line.endswith("-kfold")
    parent = Path(last_line.removeprefix("run: "))
    assert parent.parent == tmp_path / "saved" / "tiny"
    runs = [parent / "fold0", parent / "fold1"]

    # the same seed and fold assignment in every run; fold f validates
    base = load_config(tiny_yaml, overrides)
    splits = []
    for fold, run in enumerate(runs):
        stored = load_config(run / "config.yml")
        assert stored.data.fold == fold and stored.seed == base.seed
        assert stored.model_dump(exclude={"data"}) == base.model_dump(exclude={"data"})
        split = pd.read_csv(run / "split.csv", keep_default_na=False)
        assert set(split.loc[split["split"] == "val", "fold"]) == {fold}
        splits.append(split)
    pd.testing.assert_frame_equal(splits[0].drop(columns="split"), splits[1].drop(columns="split"))
    val = [set(s.loc[s["split"] == "val", "ImageId"]) for s in splits]
    all_images = {p.name for p in (tiny_data / "train_images").iterdir()}
    assert not val[0] & val[1] and val[0] | val[1] == all_images

    ensemble_path = parent / "ensemble.yml"
    text = ensemble_path.read_text()
    assert f"sever tune -r {runs[0]} -r {runs[1]}" in text
    assert f"sever predict -c {ensemble_path}" in text
    spec = load_ensemble(ensemble_path)
    assert [m.checkpoint for m in spec.models] == [
        run / "checkpoints" / "model_best.pth" for run in runs
    ]
    assert all(m.checkpoint.is_file() and m.weight == 1.0 for m in spec.models)
    assert (spec.tta, spec.averaging) == ("none", "mean")

    out = tmp_path / "x.csv"
    images = str(tiny_data / "test_images")
    predict_args = ["--images", images, "--out", str(out), "--workers", "0"]
    assert cli("predict", "-c", str(ensemble_path), *predict_args) == 0
    template = pd.read_csv(tiny_data / "sample_submission.csv")
    submission = pd.read_csv(out)  # the wide format Kaggle scores, every image and class
    assert list(submission.columns) == ["ImageId_ClassId", "EncodedPixels"]
    assert len(submission) == 4 * len(template)

    capsys.readouterr()
    pp = tmp_path / "pp.yml"
    tune_args = ["-r", str(runs[0]), "-r", str(runs[1]), "--workers", "0", "--json"]
    assert cli("tune", *tune_args, "--out", str(pp)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == len(all_images) and result["folds"] == 2
    assert yaml.safe_load(pp.read_text())["threshold"] == result["threshold"]

    # the competition's loop: pseudo-labels from the fold ensemble, then a run using them
    loose = tmp_path / "loose.yml"
    loose.write_text("threshold: 0.5\nmin_pixels: 0\none_class_per_pixel: false\n")
    pseudo = tmp_path / "pseudo" / "pseudo.csv"
    pseudo_args = ["--images", images, "--out", str(pseudo), "--hi", "0.5", "--lo", "0.5"]
    capsys.readouterr()
    assert (
        cli("pseudo-label", "-c", str(ensemble_path), "--postprocess", str(loose), *pseudo_args)
        == 0
    )
    # hi = lo = 0.5 drops only disagreement: presence is the largest pixel probability,
    # and with threshold 0.5 and no minimum size the mask is non-empty exactly when it is
    # above 0.5, so every test image is kept
    summary = json.loads((tmp_path / "pseudo" / "pseudo-summary.json").read_text())
    assert summary["images_seen"] == summary["images_kept"] == 4
    pseudo_overrides = [
        "data.fold=0",
        f"data.pseudo.csv={pseudo}",
        f"data.pseudo.images={images}",
        "data.pseudo.fraction=0.25",
    ]
    args = [arg for o in [*overrides, *pseudo_overrides] for arg in ("-o", o)]
    assert cli("train", "-c", str(tiny_yaml), *args) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run: "))
    assert load_config(run / "config.yml").data.pseudo.csv == pseudo
    assert (run / "checkpoints" / "last.pth").is_file()


def test_a_classifier_ensemble_says_to_use_it_beside_segmenters(tmp_path: Path) -> None:
    runs = [tmp_path / "fold0", tmp_path / "fold1"]
    for run in runs:
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "model_best.pth").write_bytes(b"")
    path = write_ensemble(tmp_path, runs, "classify")
    text = path.read_text()
    assert "list these models in a segmenters' ensemble file" in text
    assert f"-r {runs[0]} -r {runs[1]}" in text and "sever predict -c" not in text
    assert len(load_ensemble(path).models) == 2
