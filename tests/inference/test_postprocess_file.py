"""A tuned file's record of what it was tuned with, compared with the ensemble at hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sever.config import load_config
from sever.inference import Ensemble
from sever.inference.postprocess import PostProcess
from sever.inference.postprocess_file import default_postprocess, tuning_differences


def member(name: str, task: str = "segment", weight: float = 1.0) -> SimpleNamespace:
    """What tuning_differences reads of a Member; its weights' fingerprint is its name."""
    return SimpleNamespace(
        path=Path(f"/kaggle/input/x/{name}.pth"),
        task=task,
        weight=weight,
        fingerprint=name,
        tta=None,  # no per-model TTA or input size
        size=None,
    )


RECORD = {
    "tta": "hflip",
    "averaging": "weighted",
    "models": [
        {"checkpoint": "saved/a.pth", "weight": 1.0, "task": "segment", "weights_sha256": "a"},
        {"checkpoint": "saved/b.pth", "weight": 2.0, "task": "segment", "weights_sha256": "b"},
        {"checkpoint": "saved/c.pth", "weight": 1.0, "task": "classify", "weights_sha256": "c"},
    ],
}


def test_the_same_ensemble_elsewhere_matches_its_tuned_file() -> None:
    same = [member("a"), member("b", weight=2.0), member("c", "classify")]
    assert tuning_differences(RECORD, Ensemble(same, "hflip", "weighted")) == []


def test_every_difference_is_named() -> None:
    here = [member("a", weight=3.0), member("c", "classify"), member("d")]
    assert tuning_differences(RECORD, Ensemble(here, "none", "weighted")) == [
        "TTA hflip (here none)",
        "1 model(s) not given here (saved/b.pth)",
        "1 model(s) here that it was not tuned with (/kaggle/input/x/d.pth)",
        "other weights for /kaggle/input/x/a.pth",
    ]
    # averaging matters with several segmenters, not with one
    assert tuning_differences(RECORD, Ensemble(here, "hflip", "mean"))[0] == (
        "averaging weighted (here mean)"
    )
    alone = {**RECORD, "models": RECORD["models"][:1]}
    assert tuning_differences(alone, Ensemble([member("a")], "hflip", "mean")) == []


def test_a_models_own_tta_and_size_are_compared() -> None:
    same = [member("a"), member("b", weight=2.0), member("c", "classify")]
    same[0].size = (256, 800)
    same[1].tta = "vflip"
    assert tuning_differences(RECORD, Ensemble(same, "hflip", "weighted")) == [
        "another per-model TTA for /kaggle/input/x/b.pth",
        "another per-model input size for /kaggle/input/x/a.pth",
    ]
    recorded = {**RECORD, "models": [dict(m) for m in RECORD["models"]]}
    recorded["models"][0]["size"] = [256, 800]
    recorded["models"][1]["tta"] = "vflip"
    assert tuning_differences(recorded, Ensemble(same, "hflip", "weighted")) == []


def test_the_one_default_post_processing(tmp_path: Path) -> None:
    exp = tmp_path / "x.yml"
    exp.write_text("name: x\n")
    plain = default_postprocess(load_config(exp))
    assert plain == PostProcess(threshold=0.5, min_pixels=(600, 600, 1000, 2000))
    assert plain.one_class_per_pixel and plain.gate is None and plain.scale_c is None
    two = default_postprocess(load_config(exp, ["model.classes=2"]))
    assert (two.classes, two.min_pixels) == (2, (0, 0))
    given = default_postprocess(load_config(exp, ["trainer.threshold=0.4", "trainer.min_pixels=5"]))
    assert (given.threshold, given.min_pixels) == ((0.4,) * 4, (5,) * 4)
    assert given.one_class_per_pixel
