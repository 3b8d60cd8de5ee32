"""tune's report: the table it prints and the object --json prints, from a hand-built
Tuning (the search itself is tested in test_search.py, tune end to end in test_workflow.py
and test_workflow_classifier.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sever.inference.bootstrap import Difference, Interval
from sever.inference.postprocess import PostProcess
from sever.inference.search import Rung, Tuning
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
        "    dice_1   0.4000   0.7000      0.300           0     -",
        "    dice_2   0.5000   0.8000      0.400         100     -",
        "    dice_3   0.5000   0.7500      0.500         200     -",
        "    dice_4   0.6000   0.7500      0.600         300     -",
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


def test_the_ladder_intervals_and_gain() -> None:
    gated = PostProcess(threshold=0.5, min_pixels=0, gate=[0.5, 0.0, 0.0, 0.3], scale_c=2.0)
    gain = Difference({"mean": Interval(0.02, 0.005, 0.035)}, {"mean": 0.99})
    worse = Difference({"mean": Interval(-0.01, -0.03, 0.01)}, {"mean": 0.2})
    rungs = (
        Rung("shared", scores(0.6), None, True),
        Rung("per-class", scores(0.59), worse, False),
        Rung("presence", scores(0.7), gain, True),
    )
    intervals = {"before": Interval(0.5, 0.45, 0.55), "after": Interval(0.75, 0.7, 0.8)}
    held = Difference({"mean": Interval(0.2, 0.1, 0.3)}, {"mean": 1.0})
    tuning = Tuning(gated, BEFORE, AFTER, scores(0.7), rungs, intervals, held)
    report = TuneReport(tuning, 20, 2, Path("pp.yml"))
    lines = report.lines()
    assert lines[2:6] == [  # a gate of 0 is no gate
        "    dice_1   0.4000   0.7000      0.500           0  0.50",
        "    dice_2   0.5000   0.8000      0.500           0     -",
        "    dice_3   0.5000   0.7500      0.500           0     -",
        "    dice_4   0.6000   0.7500      0.500           0  0.30",
    ]
    assert lines[6:] == [
        "held out (tuned on the other folds, scored on each in turn): dice_mean 0.7000; "
        "'after' is fitted to these images",
        "95% intervals over the images: before 0.5000 [0.4500, 0.5500], after 0.7500 "
        "[0.7000, 0.8000]",
        "held-out gain over before: +0.2000 [+0.1000, +0.3000] (tuned better)",
        "shared (one threshold and one minimum size for every class): held out 0.6000",
        "per-class (per-class thresholds and minimum sizes): held out 0.5900, gain over shared "
        "-0.0100 [-0.0300, +0.0100]: within noise: kept shared",
        "presence (per-class, with presence gates and the classifier's scaling of sizes): held out "
        "0.7000, gain over shared +0.0200 [+0.0050, +0.0350]: adopted",
        "wrote pp.yml",
    ]
    found = report.to_dict()
    assert found["search"] == "presence"
    assert found["held_out_gain"] == {"value": 0.2, "low": 0.1, "high": 0.3, "p_better": 1.0}
    assert found["intervals"]["after"] == {"value": 0.75, "low": 0.7, "high": 0.8}
    assert [(r["name"], r["adopted"]) for r in found["searches"]] == [
        ("shared", True),
        ("per-class", False),
        ("presence", True),
    ]
    assert found["searches"][1]["gain"]["value"] == -0.01
    assert (found["gate"], found["scale_c"]) == ([0.5, 0.0, 0.0, 0.3], 2.0)
