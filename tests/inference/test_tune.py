"""tune's report: the table it prints and the object --json prints, from a hand-built
Tuning (the search itself is tested in test_search.py, tune end to end in test_workflow.py
and test_workflow_classifier.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sever.inference.postprocess import PostProcess
from sever.inference.search import Tuning
from sever.inference.tune import TuneReport


def scores(mean: float, *per_class: float) -> dict[str, float]:
    return {"dice_mean": mean} | {f"dice_{c}": v for c, v in enumerate(per_class, 1)}


TUNED = PostProcess(threshold=[0.3, 0.4, 0.5, 0.6], min_pixels=[0, 100, 200, 300])
BEFORE, AFTER = scores(0.5, 0.4, 0.5, 0.5, 0.6), scores(0.75, 0.7, 0.8, 0.75, 0.75)


def test_without_presence() -> None:
    report = TuneReport(Tuning(TUNED, BEFORE, AFTER, scores(0.625)), 10, 1, Path("pp.yml"))
    assert report.lines() == [
        "             before    after  threshold  min_pixels  gate",
        " dice_mean   0.5000   0.7500",
        "    dice_1   0.4000   0.7000      0.300           0  0.00",
        "    dice_2   0.5000   0.8000      0.400         100  0.00",
        "    dice_3   0.5000   0.7500      0.500         200  0.00",
        "    dice_4   0.6000   0.7500      0.600         300  0.00",
        "held out (tuned on the other half of the images, scored on each in turn): "
        "dice_mean 0.6250; 'after' is fitted to these images",
        "wrote pp.yml",
    ]
    assert json.loads(json.dumps(report.to_dict())) == {
        "before": BEFORE,
        "after": AFTER,
        "threshold": [0.3, 0.4, 0.5, 0.6],
        "min_pixels": [0, 100, 200, 300],
        "gate": None,
        "scale_c": None,
        "held_out": {"dice_mean": 0.625},
        "images": 10,
        "folds": 1,
        "out": "pp.yml",
    }


def test_with_presence_kept() -> None:
    gated = PostProcess(threshold=0.5, min_pixels=0, gate=[0.5, 0.0, 0.0, 0.3], scale_c=2.0)
    tuning = Tuning(
        gated,
        BEFORE,
        AFTER,
        scores(0.7),
        without_presence=scores(0.72),
        held_out_without_presence=scores(0.6),
        presence="kept",
        presence_note="gates and scaling improve the held-out estimate",
    )
    report = TuneReport(tuning, 20, 2, Path("pp.yml"))
    lines = report.lines()
    assert lines[2] == "    dice_1   0.4000   0.7000      0.500           0  0.50"
    assert lines[6:] == [
        "held out (tuned on the other folds, scored on each in turn): dice_mean 0.7000; "
        "'after' is fitted to these images",
        "without presence (no gate, no scaling): dice_mean 0.7200, held out 0.6000; scale_c 2.0",
        "presence kept: gates and scaling improve the held-out estimate",
        "wrote pp.yml",
    ]
    found = report.to_dict()
    assert list(found) == [
        "before",
        "after",
        "threshold",
        "min_pixels",
        "gate",
        "scale_c",
        "held_out",
        "without_presence",
        "held_out_without_presence",
        "presence",
        "presence_note",
        "images",
        "folds",
        "out",
    ]
    assert (found["gate"], found["scale_c"]) == ([0.5, 0.0, 0.0, 0.3], 2.0)


def test_a_dropped_gate_is_not_reported() -> None:
    tuning = Tuning(TUNED, BEFORE, AFTER, scores(0.4), scores(0.7), scores(0.6), "dropped", "x")
    found = TuneReport(tuning, 7, 1, Path("pp.yml")).to_dict()
    assert found["gate"] is None and found["presence"] == "dropped"
