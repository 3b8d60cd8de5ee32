"""The Ensemble: an ensemble file and the command line's -r turn into the same thing, and
the command line's --tta/--averaging/--postprocess win over the file's."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from sever.config import config_dict, load_config
from sever.errors import ConfigError
from sever.inference import Ensemble, EnsembleOptions, PostProcess
from sever.inference.ensemble import check_weights
from sever.model.build import build_model
from tests.support import cli_output, write_tiny


@pytest.fixture(scope="module")
def checkpoints(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained checkpoints as the trainer writes them: two segmenters and a classifier."""
    folder = tmp_path_factory.mktemp("ensemble")
    tiny = write_tiny(folder, tiny_data)
    paths = {}
    for name, overrides in {"a": [], "b": ["seed=4"], "cls": ["task=classify"]}.items():
        config = load_config(tiny, ["model.encoder=mobilenet_v2", *overrides])
        state = {
            "format": 1,
            "epoch": 1,
            "model": build_model(config.model, config.task).state_dict(),
            "config": config_dict(config),
        }
        paths[name] = folder / f"{name}.pth"
        torch.save(state, paths[name])
    return paths


def ensemble_file(folder: Path, checkpoints: dict[str, Path], **extra) -> Path:
    spec = {
        "models": [
            {"checkpoint": str(checkpoints["a"]), "weight": 1.0},
            {"checkpoint": str(checkpoints["b"]), "weight": 3.0},
        ],
        "tta": "vflip",
        "averaging": "weighted",
        "postprocess": {"threshold": 0.4},
    }
    path = folder / "ensemble.yml"
    path.write_text(yaml.safe_dump(spec | extra))
    return path


def described(ensemble: Ensemble) -> tuple:
    members = [(m.path, m.weight, m.task) for m in ensemble.members]
    return members, ensemble.tta, ensemble.averaging, ensemble.postprocess


def test_a_file_and_its_runs_are_the_same_ensemble(checkpoints, tmp_path: Path) -> None:
    from_file = Ensemble.from_file(ensemble_file(tmp_path, checkpoints), workers=0)
    from_runs = Ensemble.from_runs(
        [checkpoints["a"], checkpoints["b"]],
        weights=(1.0, 3.0),
        tta="vflip",
        averaging="weighted",
        postprocess={"threshold": 0.4},
        workers=0,
    )
    assert described(from_file) == described(from_runs)
    assert described(from_file) == (
        [(checkpoints["a"], 1.0, "segment"), (checkpoints["b"], 3.0, "segment")],
        "vflip",
        "weighted",
        PostProcess(threshold=0.4),
    )
    assert (from_file.batch_size, from_file.workers) == (4, 0)
    with pytest.raises(ConfigError, match="weights: 1 given for 2 checkpoints"):
        Ensemble.from_runs([checkpoints["a"], checkpoints["b"]], weights=(1.0,))
    assert from_file.device == torch.device("cpu")


def test_the_command_line_wins_over_the_file(checkpoints, tmp_path: Path) -> None:
    path = ensemble_file(tmp_path, checkpoints)
    pp = tmp_path / "pp.yml"
    pp.write_text("threshold: 0.7\n")
    given = Ensemble.from_options(
        EnsembleOptions(file=path, tta="hflip", postprocess=pp, batch_size=2, device="cpu")
    )
    assert (given.tta, given.averaging, given.batch_size) == ("hflip", "weighted", 2)
    assert given.postprocess == PostProcess(threshold=0.7)
    # --tta none given wins too; not given (None) keeps the file's
    assert Ensemble.from_file(path, tta="none").tta == "none"
    assert Ensemble.from_file(path).tta == "vflip"
    with pytest.raises(ConfigError, match="--averaging mean ignores the models' weights"):
        Ensemble.from_file(path, averaging="mean")


def test_without_post_processing_each_command_takes_its_default(checkpoints) -> None:
    plain = Ensemble.from_runs([checkpoints["a"]])
    assert described(plain) == ([(checkpoints["a"], 1.0, "segment")], "none", "mean", None)


@pytest.mark.parametrize(
    "options, message",
    [
        (EnsembleOptions(), "give -r RUN (repeatable) or -c ENSEMBLE.yml"),
        (
            EnsembleOptions(file=Path("e.yml"), runs=(Path("r"),)),
            "give either -c ENSEMBLE.yml or -r RUN, not both",
        ),
    ],
)
def test_one_source_of_models(options: EnsembleOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Ensemble.from_options(options)


def member(task: str, weight: float) -> SimpleNamespace:
    return SimpleNamespace(path=Path(f"{task}-{weight}.pth"), task=task, weight=weight)


def test_weights_that_would_be_ignored_are_refused() -> None:
    with pytest.raises(ConfigError, match="e.yml: classify-0.5.pth is a classifier: its weight"):
        check_weights([member("segment", 1.0), member("classify", 0.5)], "weighted", "e.yml")
    with pytest.raises(ConfigError, match="every segmentation model has weight 0"):
        check_weights([member("segment", 0.0), member("classify", 1.0)], "weighted", None)
    check_weights([member("segment", 0.0), member("segment", 2.0)], "weighted", None)
    check_weights([member("segment", 0.0)], "mean", None)  # mean: weights are refused earlier
    # Classifiers alone have no segmenter to weigh: predict says so (check_members), not
    # that every segmentation model has weight 0.
    check_weights([member("classify", 1.0)], "weighted", None)


def test_a_model_may_have_its_own_tta(checkpoints, tmp_path: Path) -> None:
    from sever.inference.postprocess_file import tuned_with, tuning_differences
    from sever.inference.predict import TTA, member_probs, predict_batch

    models = [
        {"checkpoint": str(checkpoints["a"]), "tta": "hflip"},
        {"checkpoint": str(checkpoints["b"])},
    ]
    path = ensemble_file(tmp_path, checkpoints, models=models, averaging="mean")
    ensemble = Ensemble.from_file(path, workers=0)
    assert [m.tta for m in ensemble.members] == ["hflip", None] and ensemble.tta == "vflip"
    images = torch.randn(2, 1, 64, 128)
    probs, _ = predict_batch(ensemble, images)
    a, b = ensemble.members
    own, _ = member_probs(a, images, TTA["hflip"], None)
    shared, _ = member_probs(b, images, TTA["vflip"], None)
    torch.testing.assert_close(torch.from_numpy(probs), (own + shared) / 2)
    # a tuned file records it, and predicting with another per-model TTA is told
    record = tuned_with(ensemble)
    assert record["models"][0]["tta"] == "hflip" and "tta" not in record["models"][1]
    a.tta = None
    assert tuning_differences(record, ensemble) == [f"another per-model TTA for {a.path}"]


def test_a_model_may_have_its_own_input_size(checkpoints, tmp_path: Path) -> None:
    import torch.nn.functional as F

    from sever.inference.predict import predict_batch

    models = [{"checkpoint": str(checkpoints["a"]), "size": [32, 64]}]
    path = ensemble_file(tmp_path, checkpoints, models=models, averaging="mean", tta="none")
    ensemble = Ensemble.from_file(path, workers=0)
    assert ensemble.members[0].size == (32, 64)
    images = torch.randn(2, 1, 64, 128)
    probs, _ = predict_batch(ensemble, images)
    assert probs.shape == (2, 4, 64, 128)
    with torch.no_grad():
        small = F.interpolate(images, size=(32, 64), mode="bilinear", align_corners=False)
        logits = ensemble.members[0].model(small)
        expected = torch.sigmoid(F.interpolate(logits, size=(64, 128), mode="bilinear"))
    torch.testing.assert_close(torch.from_numpy(probs), expected)
    models[0]["size"] = [30, 64]
    with pytest.raises(ConfigError, match=r"models.0.size.0: .*multiple of 32"):
        Ensemble.from_file(ensemble_file(tmp_path, checkpoints, models=models), workers=0)


class Built(Exception):
    """Raised by the spy once the command has built its ensemble: nothing else runs."""


@pytest.fixture
def built(monkeypatch) -> list[Ensemble]:
    """The ensembles the CLI builds, recorded by a spy that then stops the command."""
    seen: list[Ensemble] = []
    real = Ensemble.from_options.__func__  # type: ignore[attr-defined]

    def spy(cls, options: EnsembleOptions) -> Ensemble:
        seen.append(real(cls, options))
        raise Built

    monkeypatch.setattr(Ensemble, "from_options", classmethod(spy))
    return seen


COMMANDS = {
    "predict": "predict --images {images} --out {tmp}/sub.csv",
    "evaluate": "evaluate",
    "pseudo-label": "pseudo-label --images {images} --out {tmp}/p.csv",
    "export": "export --out {tmp}/m.onnx",
    "tune": "tune",
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "given, field, expected",
    [
        ([], "tta", "vflip"),  # not given: the file's
        (["--tta", "none"], "tta", "none"),  # given, even as click's old default
        (["--tta", "both"], "tta", "both"),
        ([], "averaging", "weighted"),
        (["--averaging", "rms"], "averaging", "rms"),
        ([], "postprocess", PostProcess(threshold=0.4)),
        (["--postprocess", "{tmp}/pp.yml"], "postprocess", PostProcess(threshold=0.7)),
    ],
)
def test_every_option_a_file_sets_wins_when_given(
    command, given, field, expected, checkpoints, tiny_data, built, tmp_path, monkeypatch
) -> None:
    from sever.cli import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pp.yml").write_text("threshold: 0.7\n")
    models = [{"checkpoint": str(checkpoints[k])} for k in "ab"]  # weights 1: any averaging
    path = ensemble_file(tmp_path, checkpoints, models=models)  # vflip, weighted, 0.4
    names = {"images": tiny_data / "test_images", "tmp": tmp_path}
    args = [*COMMANDS[command].format(**names).split(), "-c", str(path), "--device", "cpu"]
    with pytest.raises(Built):
        cli.main(args + [a.format(**names) for a in given], standalone_mode=False)
    assert len(built) == 1
    assert getattr(built[0], field) == expected


def test_a_checkpoint_listed_twice_warns(checkpoints, tiny_data: Path, tmp_path: Path, capsys):
    a = checkpoints["a"]
    link = tmp_path / "again.pth"
    link.symlink_to(a)
    models = [
        {"checkpoint": str(a)},
        {"checkpoint": str(checkpoints["b"])},
        {"checkpoint": str(link)},  # models.0 again, by another name
        {"checkpoint": str(a), "tta": "hflip"},  # models.0 with its own views: fine
    ]
    path = ensemble_file(tmp_path, checkpoints, models=models, averaging="mean")
    common = ["--images", tiny_data / "test_images", "--out", tmp_path / "s.csv", "--workers", "0"]
    told = (
        f"({a.resolve()}, the same TTA and size): it counts twice in the average; remove one, "
        "or give one model a larger weight with averaging: weighted"
    )
    code, _, err = cli_output(capsys, "predict", "-c", path, *common)
    assert code == 0, err
    assert [line for line in err.splitlines() if "repeats" in line] == [
        f"{path}: models.2 repeats models.0 {told}"
    ]
    code, _, err = cli_output(capsys, "predict", "-r", a, "-r", link, *common)
    assert code == 0, err
    assert [line for line in err.splitlines() if "repeats" in line] == [
        f"{link} repeats {a} {told}"
    ]
    code, _, err = cli_output(capsys, "predict", "-r", a, "-r", checkpoints["b"], *common)
    assert code == 0 and "repeats" not in err
