"""`sever export`: a model or a whole ensemble as one graph (ONNX, torch.export's `.pt2`
or an AOTInductor package, see `sever.inference.runtimes`), with parity proven.

The graph takes raw grey pixels, float32 (N, 1, H, W) in 0..255, with any batch, height
and width the architecture allows; the normalisation, every model's TTA views and input
size, and the ensemble averaging are inside it. It returns the probabilities (N, C, H, W)
and, when a model gives class presence, the presence (N, C). Post-processing stays outside
(the manifest carries it), since thresholds are tuned after export as often as before.

Parity is measured, not assumed: the export is run in its runtime on validation images
and compared with PyTorch eager, both the largest probability difference and the Kaggle
Dice after the same post-processing; an export whose Dice differs by more than 1e-4 is
refused and nothing is written. A manifest beside the model (`<name>.json`: `model.onnx.json`,
`model.pt2.json`, one per export even in one folder) records the
input, the classes, the normalisation, the post-processing, the source checkpoints,
versions and the parity numbers.
"""

from __future__ import annotations

import json
import platform
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.utils.data import DataLoader

from sever import __version__, fileio
from sever.data.dataset import ImageFolderDataset
from sever.errors import DataError, SeverError
from sever.fileio import atomic_path, check_output_file, read_gray
from sever.inference import runtimes
from sever.inference.ensemble import Ensemble
from sever.inference.postprocess import PostProcess, postprocess_batch
from sever.inference.postprocess_file import load_postprocess, tuned_with
from sever.inference.predict import (
    TTA,
    Outputs,
    PredictReport,
    Probs,
    Writing,
    check_members,
    predict_batch,
    size_batches,
    split_strips,
    stride_of,
    trained_size,
)
from sever.inference.submission import check_same_images, read_template
from sever.inference.tiles import TileModel, Tiling, predict_tiled
from sever.inference.validation import group_by_split, validation_set
from sever.model.build import split_outputs
from sever.model.metrics import dice_per_pair
from sever.progress import Tracker

DICE_TOLERANCE = 1e-4


class ExportError(SeverError):
    """An export that does not match PyTorch."""


class Exported(nn.Module):
    """An ensemble as one module: raw pixels in, probabilities (and presence) out."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        member = ensemble.members[0]
        normalize = member.config.data.normalize
        self.mean, self.std = float(normalize.mean), float(normalize.std)
        self.models = nn.ModuleList(m.model for m in ensemble.members)
        self.views = [TTA[m.tta or ensemble.tta] for m in ensemble.members]
        self.sizes = [m.size for m in ensemble.members]
        self.averaging = ensemble.averaging
        weights = [m.weight for m in ensemble.members if m.task == "segment"]
        self.weights = [w / sum(weights) for w in weights] if sum(weights) else weights

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        x = (pixels / 255 - self.mean) / self.std
        height, width = x.shape[-2], x.shape[-1]
        masks, heads = [], []
        for model, views, size in zip(self.models, self.views, self.sizes, strict=True):
            seen = x if size is None else F.interpolate(x, size=size, mode="bilinear")
            probs, presence = [], []
            for view in views:
                logits, classes = split_outputs(model(view(seen)))
                if logits is not None:
                    logits = view(logits)
                    if size is not None:
                        logits = F.interpolate(logits, size=(height, width), mode="bilinear")
                    probs.append(torch.sigmoid(logits))
                if classes is not None:
                    presence.append(torch.sigmoid(classes))
            if probs:
                masks.append(torch.stack(probs).mean(0))
            if presence:
                heads.append(torch.stack(presence).mean(0))
        out = [self.combine(torch.stack(masks))]
        if heads:
            out.append(torch.stack(heads).mean(0))
        return tuple(out)

    def combine(self, members: Tensor) -> Tensor:
        if self.averaging == "rms":
            return members.square().mean(0).sqrt()
        if self.averaging == "weighted":
            weights = torch.tensor(self.weights, dtype=members.dtype).view(-1, 1, 1, 1, 1)
            return (members * weights).sum(0)
        return members.mean(0)


@dataclass(frozen=True)
class ExportReport:
    out: Path
    manifest: Path
    images: int
    max_difference: float
    dice_eager: float
    dice_exported: float
    runtime: str

    def lines(self) -> list[str]:
        return [
            f"parity on {self.images} validation images: largest probability difference "
            f"{self.max_difference:.2e}, Dice {self.dice_eager:.6f} (PyTorch) and "
            f"{self.dice_exported:.6f} ({self.runtime})",
            f"wrote {self.out} and {self.manifest}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "images": self.images,
            "max_difference": self.max_difference,
            "dice_eager": self.dice_eager,
            "dice_exported": self.dice_exported,
            "runtime": self.runtime,
        }


def export_model(
    ensemble: Ensemble,
    out: Path,
    images: int = 16,
    data_dir: Path | None = None,
    aot: bool = False,
) -> ExportReport:
    """Export the ensemble to `out` (.onnx, or .pt2: torch.export, AOTInductor with `aot`),
    prove parity on `images` validation images in that runtime, and write the manifest
    beside it; nothing is written when parity fails.

    Raises:
        ExportError: the exported model's Dice differs from PyTorch's by more than 1e-4.
        OptionError: `out` or its manifest cannot be written, or is not .onnx or .pt2.
    """
    runtime = runtimes.runtime_of(out, aot)
    manifest = manifest_path(out)
    check_output_file(out, "--out")
    check_output_file(manifest, "--out (its manifest)")
    postprocess = ensemble.applied_postprocess
    check_members(ensemble.members, postprocess)
    batches = parity_batches(ensemble, images, data_dir)
    module = Exported(ensemble).eval()
    # torch.export traces sizes symbolically: its sides are multiples of the encoders'
    # stride even for architectures that interpolate other sizes in eager mode (Unet)
    stride = (
        stride_of(ensemble.members)
        if runtime == "onnxruntime"
        else max(getattr(m.model.encoder, "output_stride", 32) for m in ensemble.members)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # the manifest is renamed into place just before the model: a failed write (a full
    # disk) leaves the earlier pair as it was. Only the writes are `writing`'s: an error of
    # the parity check (loading the export, reading images) is not the export's write.
    with atomic_path(out, what="export") as tmp:
        with fileio.writing(out, "export"):
            runtimes.write(runtime, module, batches[0][0], tmp, stride)
        parity = measure(ensemble, runtimes.load(tmp, runtime), batches, postprocess)
        if abs(parity["dice_eager"] - parity["dice_exported"]) > DICE_TOLERANCE:
            raise ExportError(
                f"--out {out}: the exported model's Dice {parity['dice_exported']:.6f} differs "
                f"from PyTorch's {parity['dice_eager']:.6f} by more than {DICE_TOLERANCE}; "
                "not written"
            )
        record = manifest_of(ensemble, postprocess, parity, (runtime, stride))
        with fileio.writing(manifest, "export's manifest"), atomic_path(manifest) as written_to:
            written_to.write_text(json.dumps(record, indent=1) + "\n")
    return ExportReport(out, manifest, **parity, runtime=runtime)


def manifest_path(model: Path) -> Path:
    """The manifest of an export: `model.onnx` -> `model.onnx.json`, so that exports of
    one name in other formats, side by side, each keep their own."""
    return model.with_name(f"{model.name}.json")


def parity_batches(
    ensemble: Ensemble, images: int, data_dir: Path | None
) -> list[tuple[Tensor, Tensor]]:
    """Up to `images` validation images of the first group, as (raw pixels, true masks)
    batches of the ensemble's batch size."""
    members, run = group_by_split(ensemble.members)[0]
    dataset = validation_set(run, members[0], data_dir)
    normalize = members[0].config.data.normalize
    batches, taken = [], list(range(min(images, len(dataset))))
    for start in range(0, len(taken), ensemble.batch_size):
        items = [dataset[i] for i in taken[start : start + ensemble.batch_size]]
        normalized = torch.stack([image for image, _, _ in items])
        pixels = ((normalized * normalize.std + normalize.mean) * 255).float()
        batches.append((pixels, torch.stack([mask for _, mask, _ in items])))
    return batches


def measure(
    ensemble: Ensemble,
    runner: runtimes.Runner,
    batches: list[tuple[Tensor, Tensor]],
    pp: PostProcess,
) -> dict[str, Any]:
    """Largest probability difference and both Dice over the batches."""
    normalize = ensemble.members[0].config.data.normalize
    largest, seen = 0.0, 0
    eager_dice: list[np.ndarray] = []
    exported_dice: list[np.ndarray] = []
    for pixels, truth in batches:
        normalized = (pixels / 255 - normalize.mean) / normalize.std
        probs, presence = predict_batch(ensemble, normalized)
        assert probs is not None  # check_members: there is a segmenter
        outputs = runner(pixels.numpy())
        exported = outputs[0]
        heads = outputs[1] if len(outputs) > 1 else None
        largest = max(largest, float(np.abs(exported - probs).max()))
        for found, dice in ((probs, eager_dice), (exported, exported_dice)):
            masks = postprocess_batch(found, pp, presence if found is probs else heads)
            dice.append(dice_per_pair(torch.from_numpy(masks), truth).double().numpy())
        seen += len(pixels)
    return {
        "images": seen,
        "max_difference": largest,
        "dice_eager": float(np.concatenate(eager_dice).mean()),
        "dice_exported": float(np.concatenate(exported_dice).mean()),
    }


def manifest_of(
    ensemble: Ensemble, pp: PostProcess, parity: dict[str, Any], written: tuple[str, int]
) -> dict[str, Any]:
    """The manifest of an export `written` for (runtime, sides' multiple)."""
    runtime, stride = written
    normalize = ensemble.members[0].config.data.normalize
    return {
        "format": 1,
        "runtime": runtime,
        "input": {
            "name": "pixels",
            "shape": ["batch", 1, "height", "width"],
            "dtype": "float32",
            "values": "raw grey pixels, 0..255",
            "trained_size": list(trained_size(ensemble.members)),
            "divisible_by": stride,
        },
        "outputs": {
            "probs": ["batch", ensemble.classes, "height", "width"],
            "presence": "when a model gives it",
        },
        "classes": ensemble.classes,
        "normalize": {"mean": normalize.mean, "std": normalize.std},
        "postprocess": pp.to_dict(),
        "sources": tuned_with(ensemble),
        "parity": parity,
        "versions": {
            "sever": __version__,
            "torch": torch.__version__,
            **runtimes.versions(runtime),
            "python": platform.python_version(),
        },
    }


# ---------------------------------------------------------------- predicting with an export


def read_manifest(model: Path) -> dict[str, Any]:
    """The manifest `sever export` wrote beside `model` (`manifest_path`; an export of an
    earlier sever has `<stem>.json`, taken when it is of the model's runtime).

    Raises:
        DataError: no model, no manifest, or not one sever wrote.
    """
    manifest = find_manifest(model)
    if not model.is_file():
        raise DataError(f"--exported {model}: no such file")
    try:
        data = json.loads(manifest.read_text())
        data["classes"], data["postprocess"], data["input"]["divisible_by"]
        height, width = data["input"]["trained_size"]
        runtime = data.get("runtime", "onnxruntime")  # (the first manifests: ONNX only)
        if runtime not in runtimes.LOADERS:
            raise ValueError(f"runtime {runtime!r}, expected one of {', '.join(runtimes.LOADERS)}")
    except FileNotFoundError:
        raise DataError(
            f"--exported {model}: no {manifest.name} beside it; export with sever export"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{manifest}: not a sever export manifest ({exc})") from None
    if runtime not in runtimes.LOADED_FROM.get(model.suffix, (runtime,)):
        raise DataError(
            f"--exported {model}: {manifest.name} beside it is the manifest of a {runtime} "
            f"export, not of this {model.suffix} file; export it again with sever export"
        )
    return {**data, "manifest": str(manifest)}


def find_manifest(model: Path) -> Path:
    """`manifest_path(model)`, else the `<stem>.json` that earlier versions wrote."""
    manifest = manifest_path(model)
    older = model.with_suffix(".json")
    return older if not manifest.is_file() and older.is_file() else manifest


def raw_pixels(image: NDArray[np.uint8]) -> dict[str, NDArray[np.float32]]:
    """The exported graph's input: grey pixels as they are, as float32 (it normalises)."""
    return {"image": image.astype(np.float32)}


def predict_exported(
    model: Path,
    images_dir: Path,
    outputs: Outputs | Path,
    postprocess: PostProcess | Path | dict[str, Any] | None = None,
    loading: tuple[int, int] = (4, 2),
    tiling: Tiling = Tiling(),
) -> PredictReport:
    """`predict --exported`: a folder's submission from an exported model in the runtime
    its manifest names (onnxruntime, CUDA when it has it; torch.export; AOTInductor),
    post-processed as the manifest says unless `postprocess` (one, or a file or mapping
    read for the model's classes) is given; `loading` is (batch size, loader workers);
    images larger than a tile (default: the size the models were trained at) are predicted
    in tiles, as `predict_folder` does."""

    outputs = outputs if isinstance(outputs, Outputs) else Outputs(outputs)
    manifest = read_manifest(model)
    classes = int(manifest["classes"])
    if not isinstance(postprocess, PostProcess):
        source = manifest["postprocess"] if postprocess is None else postprocess
        postprocess = load_postprocess(source, f"{manifest['manifest']}: postprocess", classes)
    outputs.check()
    stride = int(manifest["input"]["divisible_by"])
    height, width = manifest["input"]["trained_size"]
    tiling = tiling.resolved((int(height), int(width)), loading[0])
    ids, whole, sizes, strips = split_strips(images_dir, tiling, stride, outputs)
    check_divisible(images_dir, whole, sizes, stride)
    template = outputs.template(images_dir)
    if template is not None:
        check_same_images(read_template(template, classes)[1], ids, template)
    runner = runtimes.load(model, manifest.get("runtime", "onnxruntime"))  # (checked)
    dataset = ImageFolderDataset(images_dir, whole, raw_pixels)
    loader = DataLoader(
        dataset, batch_sampler=size_batches(sizes, loading[0]), num_workers=loading[1]
    )
    with ExitStack() as stack, Tracker(len(ids), "predict (exported)", "images") as progress:
        writing = Writing(outputs, postprocess, images_dir, stack, manifest.get("sources", {}))
        for images, batch_ids in loader if whole else ():
            found = runner(images.numpy())
            writing.add(list(batch_ids), found[0], found[1] if len(found) > 1 else None)
            progress.update(len(batch_ids))
        for image_id in strips:
            image = read_gray(images_dir / image_id)
            probs, presence = predict_tiled(image, runner_tiles(runner), tiling, classes)
            writing.add([image_id], probs[None], None if presence is None else presence[None])
            progress.update(1)
        report = writing.finish(ids, template, classes)
    return report


def runner_tiles(runner: runtimes.Runner) -> TileModel:
    """An exported model as a `TileModel` (it takes raw pixels)."""

    def predict(tiles: NDArray[np.uint8]) -> tuple[Probs, Probs | None]:
        found = runner(tiles[:, None].astype(np.float32))
        return found[0], found[1] if len(found) > 1 else None

    return predict


def check_divisible(
    images_dir: Path, ids: list[str], sizes: list[tuple[int, int]], stride: int
) -> None:
    for image_id, (height, width) in zip(ids, sizes, strict=True):
        if height % stride or width % stride:
            raise DataError(
                f"{images_dir / image_id}: {height}x{width} is not a multiple of {stride}, "
                "which the exported model needs"
            )
