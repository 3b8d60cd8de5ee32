"""A tuned file's record of what it was tuned with, compared with the ensemble at hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sever.inference import Ensemble
from sever.inference.postprocess_file import tuning_differences


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
