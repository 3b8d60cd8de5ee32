"""Inference: one `Ensemble`, one call per command, a typed report back.

    from sever.inference import Ensemble, predict_folder

    ensemble = Ensemble.from_runs(["saved/demo/1122-101500"], tta="hflip")
    report = predict_folder(ensemble, Path("test_images"), Path("submission.csv"))
    print(*report.lines(), sep="\\n")

Every command reads the same way: options -> `EnsembleOptions` -> `Ensemble.from_options`
-> `predict_folder`, `evaluate_runs`, `tune_runs`, `pseudo_label` or `compare_ensembles`
-> a report with
`lines()` and `to_dict()`. The pure cores (`postprocess`, `search`) need none of this.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Comparison",
    "Ensemble",
    "EnsembleOptions",
    "EvalReport",
    "Outputs",
    "PostProcess",
    "PredictReport",
    "PseudoReport",
    "TuneReport",
    "compare_ensembles",
    "evaluate_runs",
    "load_postprocess",
    "predict_folder",
    "predict_saved",
    "pseudo_label",
    "score_submission",
    "tune_runs",
    "write_submission",
]

# The module of each public name, imported on first use: `import sever.inference.postprocess`
# (pure numpy, 0.4 s) must not pay for torch and segmentation-models-pytorch (7 to 12 s
# measured on the 2-core dev machine), nor must `sever score`, which reads CSVs only.
_HOME = {
    "Comparison": "compare",
    "Ensemble": "ensemble",
    "EnsembleOptions": "ensemble",
    "EvalReport": "evaluate",
    "Outputs": "predict",
    "PostProcess": "postprocess",
    "PredictReport": "predict",
    "PseudoReport": "pseudo",
    "TuneReport": "tune",
    "compare_ensembles": "compare",
    "evaluate_runs": "evaluate",
    "load_postprocess": "postprocess_file",
    "predict_folder": "predict",
    "predict_saved": "predict",
    "pseudo_label": "pseudo",
    "score_submission": "submission",
    "tune_runs": "tune",
    "write_submission": "submission",
}

if TYPE_CHECKING:
    from sever.inference.compare import Comparison, compare_ensembles
    from sever.inference.ensemble import Ensemble, EnsembleOptions
    from sever.inference.evaluate import EvalReport, evaluate_runs
    from sever.inference.postprocess import PostProcess
    from sever.inference.postprocess_file import load_postprocess
    from sever.inference.predict import Outputs, PredictReport, predict_folder, predict_saved
    from sever.inference.pseudo import PseudoReport, pseudo_label
    from sever.inference.submission import score_submission, write_submission
    from sever.inference.tune import TuneReport, tune_runs


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sever.inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sever.inference.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
