"""Where `sever predict`'s probabilities come from: checkpoints (an `Ensemble`), a model
`sever export` wrote, or probabilities `--save-probs` kept; and the options each source
cannot take. One request in, one `PredictReport` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sever.errors import UsageError
from sever.inference.ensemble import Ensemble, EnsembleOptions
from sever.inference.export import predict_exported
from sever.inference.predict import Outputs, PredictReport, predict_folder, predict_saved
from sever.inference.tiles import Tiling


@dataclass(frozen=True)
class PredictRequest:
    """What to predict, from what, and where to write it.

    Attributes:
        spec: the models (-r/-e/-c), TTA, averaging, post-processing, device and loading;
            with `exported` or `from_probs`, only its post-processing, averaging and loading.
        images_dir: the images (with `from_probs`: only for their sample_submission.csv).
        exported: a model `sever export` wrote (.onnx or .pt2), instead of checkpoints.
        from_probs: folders of saved probabilities, blended with the spec's averaging.
    """

    spec: EnsembleOptions
    images_dir: Path | None
    outputs: Outputs
    tiling: Tiling = Tiling()
    exported: Path | None = None
    from_probs: tuple[Path, ...] = ()


def predict_images(request: PredictRequest) -> PredictReport:
    """Predict from the source `request` names, after refusing the options it cannot take.

    Raises:
        UsageError: two sources, checkpoint options for a source without checkpoints, or
            options a source ignores (--device and --averaging for an export; outputs and
            tiling for saved probabilities); no --images where images are predicted.
    """
    spec, outputs, tiling = request.spec, request.outputs, request.tiling
    exported, from_probs = request.exported, request.from_probs
    if from_probs and exported is not None:
        raise UsageError("give --from-probs or --exported, not both")
    if (from_probs or exported) and (spec.runs or spec.file or spec.tta is not None):
        raise UsageError(
            f"{'--from-probs' if from_probs else '--exported'} predicts without checkpoints: drop "
            "-r/-c and --tta (the views are in the saved probabilities or the export)"
        )
    if exported is not None and spec.device != "auto":
        raise UsageError(
            "--exported: the model runs where its runtime puts it (onnxruntime: CUDA when "
            "it has it; .pt2: the CPU); drop --device"
        )
    if exported is not None and spec.averaging:
        raise UsageError("--exported: the export averages its models inside; drop --averaging")
    if from_probs:
        if outputs.overlays or outputs.save_probs or tiling.tile or tiling.overlap is not None:
            raise UsageError("--from-probs: drop --overlays, --save-probs, --tile and --overlap")
        averaging = spec.averaging or "mean"
        return predict_saved(from_probs, outputs, spec.postprocess, averaging, request.images_dir)
    if request.images_dir is None:
        raise UsageError("give --images DIR (or --from-probs DIR)")
    if exported is not None:
        loading = (spec.batch_size, spec.workers)
        return predict_exported(
            exported, request.images_dir, outputs, spec.postprocess, loading, tiling
        )
    return predict_folder(Ensemble.from_options(spec), request.images_dir, outputs, tiling)
