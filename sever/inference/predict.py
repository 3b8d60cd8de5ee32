"""Batched full-size inference: test-time augmentation and ensemble averaging.

Probabilities are averaged over TTA views first (in probability space, each view flipped
back), then over the ensemble's members with the chosen averaging (mean, RMS, weighted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch.utils.data import DataLoader

from sever import fileio
from sever.data import rle
from sever.data.augment import build_transform
from sever.data.dataset import ImageFolderDataset
from sever.data.tables import image_files
from sever.errors import CheckpointError, DataError, OptionError
from sever.fileio import (
    atomic_path,
    check_distinct,
    check_output_file,
    check_output_folder,
    folders_made,
    image_shape,
    read_gray,
    remove_leftovers,
)
from sever.inference.ensemble import Ensemble
from sever.inference.instances import InstanceSink, csv_path, find_instances, instance_writer
from sever.inference.models import Member
from sever.inference.postprocess import PostProcess, average, postprocess_batch
from sever.inference.postprocess_file import load_postprocess, tuned_with
from sever.inference.probs import (
    blended,
    check_blend,
    check_save_folder,
    probs_writer,
    read_saved,
)
from sever.inference.submission import (
    FORMATS,
    check_same_images,
    read_template,
    write_submission,
)
from sever.inference.tiles import TileModel, Tiling, check_tiles, predict_tiled
from sever.model.build import split_outputs
from sever.progress import Tracker
from sever.registry import Registry
from sever.visualize import overlay

Flip = Callable[[torch.Tensor], torch.Tensor]
# A batch's probabilities (N, C, H, W) or presence (N, C): see `predict_batch`.
Probs = NDArray[np.float32]

log = logging.getLogger(__name__)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


# Each view is its own inverse, so the same function maps the prediction back.
TTA: Registry[list[Flip]] = Registry(
    "TTA",
    {
        "none": [identity],
        "hflip": [identity, hflip],
        "vflip": [identity, vflip],
        "both": [identity, hflip, vflip],
    },
)


def image_loader(
    images_dir: Path,
    ensemble: Ensemble,
    ids: list[str] | None = None,
    sizes: list[tuple[int, int]] | None = None,
) -> DataLoader[tuple[torch.Tensor, str]]:
    """Full-size, normalised images of a folder (or the given ids, with their `sizes` when
    already read), in name order within each size: a batch holds images of one size, so a
    folder may mix sizes.

    Every image's header is read first, so an unreadable file or a size the models cannot
    take is a one-line error before any inference.
    """
    members = ensemble.members
    ids = image_files(images_dir) if ids is None else ids
    if not ids:
        raise DataError(f"{images_dir}: no images (.jpg, .jpeg, .png) in this folder")
    if sizes is None:
        sizes = [image_shape(images_dir / i) for i in ids]
    check_sizes(images_dir, ids, sizes, members)
    transform = build_transform("none", None, members[0].config.data.normalize, train=False)
    dataset = ImageFolderDataset(images_dir, ids, transform)
    return DataLoader(
        dataset,
        batch_sampler=size_batches(sizes, ensemble.batch_size),
        num_workers=ensemble.workers,
        pin_memory=torch.cuda.is_available(),
    )


def loader_ids(loader: DataLoader[tuple[torch.Tensor, str]]) -> list[str]:
    """The image ids of an `image_loader`, in the folder's order."""
    dataset = loader.dataset
    assert isinstance(dataset, ImageFolderDataset)  # what image_loader builds
    return list(dataset.image_ids)


def size_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices into `sizes` in batches of at most `batch_size` that share one size: the
    sizes in order of first appearance, each size's indices in order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]


def check_sizes(
    images_dir: Path, ids: list[str], sizes: list[tuple[int, int]], members: list[Member]
) -> None:
    """Refuse image sizes that a member's architecture cannot take (many SMP models need
    sides that are multiples of the encoder's output stride, 32), naming the first image."""
    for member in members:
        model = member.model
        if member.size is not None or not getattr(model, "requires_divisible_input_shape", False):
            continue  # (its own input size is checked when the ensemble file is read)
        stride = getattr(model.encoder, "output_stride", 32)
        for image_id, (height, width) in zip(ids, sizes, strict=True):
            if height % stride or width % stride:
                padded = f"{-(-height // stride) * stride}x{-(-width // stride) * stride}"
                raise DataError(
                    f"{images_dir / image_id}: {height}x{width} is not a multiple of {stride}, "
                    f"which {member.config.model.arch} needs; pad the images to {padded}"
                )


@torch.no_grad()
def member_probs(
    member: Member, images: torch.Tensor, views: list[Flip], amp_dtype: torch.dtype | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One model's TTA-averaged probabilities (N, C, H, W) and class presence (N, C); a
    classifier has no masks (None), a segmenter without a class head no presence (None)."""
    probs, presence = None, None
    height, width = images.shape[-2:]
    if member.size is not None:  # its own input size; its probabilities come back to ours
        images = F.interpolate(images, size=member.size, mode="bilinear", align_corners=False)
    for view in views:
        with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            masks, classes = split_outputs(member.model(view(images)))
        if masks is not None:
            masks = view(masks.float())
            if member.size is not None:
                masks = F.interpolate(masks, size=(height, width), mode="bilinear")
            probs = torch.sigmoid(masks) + (0 if probs is None else probs)
        if classes is not None:
            presence = torch.sigmoid(classes.float()) + (0 if presence is None else presence)
    n = len(views)
    return (None if probs is None else probs / n), (None if presence is None else presence / n)


def predict_batch(
    ensemble: Ensemble, images: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> tuple[Probs | None, Probs | None]:
    """Probabilities (N, C, H, W) float32 and presence (N, C) of a batch (N, 1, H, W).

    Probabilities average the segmenters' masks (None if every member is a classifier);
    presence is the mean over every member with one: the segmenters' classification heads
    and the standalone classifiers (None if no member has one).
    """
    images = images.to(ensemble.device, non_blocking=True)
    outputs = [
        member_probs(m, images, TTA[m.tta or ensemble.tta], amp_dtype) for m in ensemble.members
    ]
    masks = [p.cpu().numpy() for p, _ in outputs if p is not None]
    probs = None
    if masks:
        weighted = ensemble.averaging == "weighted"
        weights = [m.weight for m in ensemble.members if m.task == "segment"]
        averaged = average(np.stack(masks), ensemble.averaging, weights if weighted else None)
        probs = averaged.astype(np.float32)
    heads = [c.cpu().numpy() for _, c in outputs if c is not None]
    presence: Probs | None = np.mean(heads, axis=0) if heads else None
    return probs, presence


def predict_batches(
    ensemble: Ensemble,
    loader: DataLoader[tuple[torch.Tensor, str]],
    amp_dtype: torch.dtype | None = None,
) -> Iterator[tuple[list[str], Probs | None, Probs | None]]:
    """Yield (image ids, probabilities, presence) for each batch of an `image_loader`
    (see `predict_batch`)."""
    for images, ids in loader:
        yield list(ids), *predict_batch(ensemble, images, amp_dtype)


def check_members(members: list[Member], postprocess: PostProcess) -> None:
    """Masks need a segmenter; gating and the classifier's scaling of minimum sizes need
    presence: a segmenter's class head or a standalone classifier."""
    if not any(m.task == "segment" for m in members):
        raise CheckpointError(
            "every model given is a classifier (task: classify); add a segmentation model "
            "(-r RUN) for the masks, the classifier then gates or scales them"
        )
    if (postprocess.gate or postprocess.scale_c) and not any(m.has_class_head for m in members):
        raise CheckpointError(
            "the post-processing gates or scales by class presence, but no model gives it: "
            "add a classifier run (task: classify) or use a model with model.class_head.enabled"
        )


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that support it; full precision elsewhere."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


@dataclass(frozen=True)
class PredictReport:
    """What predict wrote: how many images, how many with a defect of each class."""

    images: int
    with_defect: dict[int, int]
    out: Path
    # every file and folder written, the submission first (default: the submission alone)
    files: tuple[Path, ...] = ()

    def lines(self) -> list[str]:
        counts = [f"class {c}: {n}" for c, n in self.with_defect.items()]
        wrote = [f"wrote {path}" for path in self.files or (self.out,)]
        return [", ".join([f"images: {self.images}", *counts]), *wrote]

    def to_dict(self) -> dict[str, Any]:
        with_defect = {str(c): n for c, n in self.with_defect.items()}
        files = [str(path) for path in self.files or (self.out,)]
        return {
            "images": self.images,
            "with_defect": with_defect,
            "out": str(self.out),
            "files": files,
        }


@dataclass(frozen=True)
class Outputs:
    """Where predict writes: the submission (`out`, in `fmt`), and optionally overlays,
    the ensemble's probabilities (`save_probs`, see `sever.inference.probs`) and a record
    of every defect region (`instances`, see `sever.inference.instances`)."""

    out: Path
    fmt: str = "auto"
    overlays: Path | None = None
    save_probs: Path | None = None
    instances: Path | None = None

    def check(self) -> None:
        """Before any work: the format and every output path, no two of them the same."""
        if self.fmt not in FORMATS:
            raise OptionError(f"--format {self.fmt}: expected one of {', '.join(FORMATS)}")
        check_output_file(self.out, "--out")
        if self.overlays is not None:
            check_output_folder(self.overlays, "--overlays")
        if self.save_probs is not None:
            check_save_folder(self.save_probs)
        if self.instances is not None:
            check_output_file(self.instances, "--instances")
            check_output_file(csv_path(self.instances), "--instances (its .csv)")
            if self.instances.suffix == ".csv":
                raise OptionError(
                    f"--instances {self.instances}: the JSON lines go there and the CSV beside "
                    f"them, under the same name; give a .jsonl name, e.g. "
                    f"{self.instances.with_suffix('.jsonl')}"
                )
        whole = () if self.save_probs is None else (f"--save-probs {self.save_probs}",)
        check_distinct(self.labelled(), whole)

    def labelled(self) -> list[tuple[str, Path]]:
        """Every file and folder predict writes, as the user named it, the submission first."""
        found = [(f"--out {self.out}", self.out)]
        if self.instances is not None:
            found.append((f"--instances {self.instances}", self.instances))
            found.append((f"--instances {self.instances} (its .csv)", csv_path(self.instances)))
        for option, folder in (("--save-probs", self.save_probs), ("--overlays", self.overlays)):
            if folder is not None:
                found.append((f"{option} {folder}", folder))
        return found

    def instance_sink(self, stack: ExitStack) -> InstanceSink | None:
        if self.instances is None:
            return None
        self.instances.parent.mkdir(parents=True, exist_ok=True)
        return stack.enter_context(instance_writer(self.instances))

    def template(self, images_dir: Path | None) -> Path | None:
        """With 'auto', a sample_submission.csv beside the images gives the order."""
        if images_dir is None or self.fmt != "auto":
            return None
        beside = images_dir.parent / "sample_submission.csv"
        return beside if beside.is_file() else None


class Writing:
    """What predict writes as the batches come: every image's masks as RLE, and the
    optional outputs (saved probabilities, defect records, overlays)."""

    def __init__(
        self,
        outputs: Outputs,
        postprocess: PostProcess,
        images_dir: Path | None,
        stack: ExitStack,
        record: dict[str, Any],
    ) -> None:
        self.outputs, self.postprocess, self.images_dir = outputs, postprocess, images_dir
        self.rles: dict[str, dict[int, str]] = {}
        # first, so they close last: a run that fails (a full disk) leaves none of the
        # folders made for its outputs that are still empty once the others cleaned up
        for folder, what in ((outputs.out.parent, "submission"), (outputs.overlays, "overlays")):
            if folder is not None:
                with fileio.writing(folder, f"folder of the {what}"):
                    stack.enter_context(folders_made(folder))
        self.probs = None
        if outputs.save_probs is not None:
            sink = probs_writer(outputs.save_probs, postprocess.classes, record, postprocess)
            self.probs = stack.enter_context(sink)
        self.regions = outputs.instance_sink(stack)
        if outputs.overlays is not None:
            remove_leftovers(outputs.overlays)  # once here: write_overlay does not look

    def add(
        self,
        ids: Sequence[str],
        probs: NDArray[np.floating[Any]],
        presence: Probs | None,
        winner: NDArray[np.integer[Any]] | None = None,
    ) -> None:
        if self.probs is not None:
            self.probs.add(ids, probs, presence)
        masks = postprocess_batch(probs, self.postprocess, presence, winner)
        self.rles |= encoded(ids, masks)
        for i, image_id in enumerate(ids):
            if self.regions is not None:
                self.regions.add(find_instances(image_id, masks[i], probs[i]))
            if self.outputs.overlays is not None and self.images_dir is not None:
                write_overlay(self.images_dir / image_id, masks[i], self.outputs.overlays)

    def finish(self, names: list[str], template: Path | None, classes: int) -> PredictReport:
        """Complete the other outputs under their temporary names, then write the
        submission; call it last inside the stack, which renames the others when it closes.
        A write that fails anywhere (a full disk) so leaves every earlier output as it was."""
        if self.probs is not None:
            self.probs.finish()
        if self.regions is not None:
            self.regions.flush()
        return written(self.rles, names, self.outputs, template, classes)


def predict_folder(
    ensemble: Ensemble,
    images_dir: Path,
    outputs: Outputs | Path,
    tiling: Tiling = Tiling(),
) -> PredictReport:
    """Predict every image of a folder into a submission CSV (written atomically).

    Args:
        outputs: the submission (a path: in the 'auto' format, the wide one in the order of
            a sample_submission.csv beside the folder when there is one), and optionally
            overlays, the saved probabilities and the defect records.
        tiling: how images larger than a tile are cut (see `sever.inference.tiles`); by
            default tiles of the smallest size a member was trained at (data.image_size).
    """
    outputs = outputs if isinstance(outputs, Outputs) else Outputs(outputs)
    # Everything that can be checked is checked before the work, not after it.
    postprocess = ensemble.applied_postprocess
    check_members(ensemble.members, postprocess)
    outputs.check()
    tiling = tiling.resolved(trained_size(ensemble.members), ensemble.batch_size)
    names, whole, sizes, strips = split_strips(
        images_dir, tiling, stride_of(ensemble.members), outputs
    )
    loader = image_loader(images_dir, ensemble, whole, sizes) if whole else None
    template = outputs.template(images_dir)
    if template is not None:
        check_same_images(read_template(template, ensemble.classes)[1], names, template)
    amp = autocast_dtype(ensemble.device)
    with ExitStack() as stack, Tracker(len(names), "predict", "images") as progress:
        writing = Writing(outputs, postprocess, images_dir, stack, tuned_with(ensemble))
        for ids, probs, presence in predict_batches(ensemble, loader, amp) if loader else ():
            assert probs is not None  # check_members: there is a segmenter
            writing.add(ids, probs, presence)
            progress.update(len(ids))
        model = ensemble_tiles(ensemble, amp)
        for image_id in strips:
            image = read_gray(images_dir / image_id)
            strip, found = predict_tiled(image, model, tiling, ensemble.classes)
            writing.add([image_id], strip[None], None if found is None else found[None])
            progress.update(1)
        report = writing.finish(names, template, ensemble.classes)
    return report


def stride_of(members: list[Member]) -> int:
    """What the sides of a model's input must be multiples of (1: anything)."""
    need = [
        getattr(m.model.encoder, "output_stride", 32)
        for m in members
        if m.size is None and getattr(m.model, "requires_divisible_input_shape", False)
    ]
    return max(need, default=1)


def trained_size(members: list[Member]) -> tuple[int, int]:
    """The smallest image size (H, W) any member was trained at: the default tile."""
    sizes = [m.config.data.image_size for m in members]
    return min(s[0] for s in sizes), min(s[1] for s in sizes)


class FolderImages(NamedTuple):
    """A folder's images: all of them, those within a tile with their (H, W), and the
    strips (larger than a tile), each list in the folder's order."""

    names: list[str]
    whole: list[str]
    sizes: list[tuple[int, int]]
    strips: list[str]


def split_strips(images_dir: Path, tiling: Tiling, stride: int, outputs: Outputs) -> FolderImages:
    """A folder's images split by `tiling.needed` from their headers, checked before any
    work: that each strip's tiles fit the models."""
    names = image_files(images_dir)
    if not names:
        raise DataError(f"{images_dir}: no images (.jpg, .jpeg, .png) in this folder")
    shapes = {image_id: image_shape(images_dir / image_id) for image_id in names}
    strips = [image_id for image_id, shape in shapes.items() if tiling.needed(shape)]
    for image_id in strips:
        check_tiles(str(images_dir / image_id), shapes[image_id], tiling, stride)
    if strips and outputs.save_probs is not None:
        raise OptionError(
            f"--save-probs: {images_dir / strips[0]} is larger than a tile "
            f"({tiling.size[0]}x{tiling.size[1]}); saved probabilities are for images of "
            "one size: predict the strips without --save-probs"
        )
    whole = [image_id for image_id in names if not tiling.needed(shapes[image_id])]
    return FolderImages(names, whole, [shapes[i] for i in whole], strips)


def ensemble_tiles(ensemble: Ensemble, amp_dtype: torch.dtype | None) -> TileModel:
    """The ensemble as a `TileModel`: grey tiles normalised as the loader does, then
    `predict_batch` (TTA, averaging, each member's size)."""
    normalize = ensemble.members[0].config.data.normalize
    transform = build_transform("none", None, normalize, train=False)

    def predict(tiles: NDArray[np.uint8]) -> tuple[Probs, Probs | None]:
        normalised = [np.ascontiguousarray(transform(image=t)["image"]) for t in tiles]
        batch = torch.stack([torch.from_numpy(n)[None] for n in normalised])
        probs, presence = predict_batch(ensemble, batch, amp_dtype)
        assert probs is not None  # check_members: there is a segmenter
        return probs, presence

    return predict


def predict_saved(
    folders: Sequence[Path],
    outputs: Outputs | Path,
    postprocess: PostProcess | Path | dict[str, Any] | None = None,
    averaging: str = "mean",
    images_dir: Path | None = None,
) -> PredictReport:
    """A submission from saved probabilities (`predict --from-probs`), no model needed:
    several folders are blended with `averaging`, then post-processed.

    Args:
        postprocess: a PostProcess, or a file or mapping read for the saved classes; None:
            what predict applied when it saved the first folder (its manifest's), so the
            submission is the one predicting directly wrote (a format-1 folder: the defaults).
        images_dir: where the images were; only its sample_submission.csv is used.
    """
    outputs = outputs if isinstance(outputs, Outputs) else Outputs(outputs)
    saved = [read_saved(f) for f in folders]
    if postprocess is None and saved[0].postprocess is not None:
        # what predict applied when it saved them: the same default as predicting directly
        others = [s.folder for s in saved[1:] if s.postprocess != saved[0].postprocess]
        if others:
            log.warning(
                "--from-probs %s was saved under another post-processing than %s; the blend "
                "takes %s's (give --postprocess to choose)",
                ", ".join(map(str, others)),
                saved[0].folder,
                saved[0].folder,
            )
        postprocess = load_postprocess(
            saved[0].postprocess, f"{saved[0].folder}/probs.json: postprocess", saved[0].classes
        )
    elif not isinstance(postprocess, PostProcess):
        postprocess = load_postprocess(postprocess, "--postprocess", saved[0].classes)
    check_blend(saved, postprocess)
    outputs.check()
    names = saved[0].images
    template = outputs.template(images_dir)
    if template is not None:
        check_same_images(read_template(template, saved[0].classes)[1], names, template)
    with (
        ExitStack() as stack,
        Tracker(len(names), "predict from probabilities", "images") as progress,
    ):
        writing = Writing(outputs, postprocess, None, stack, saved[0].predicted_with)
        for start in range(0, len(names), SAVED_CHUNK):
            ids = names[start : start + SAVED_CHUNK]
            writing.add(ids, *blended(saved, ids, averaging))
            progress.update(len(ids))
        report = writing.finish(names, template, saved[0].classes)
    return report


SAVED_CHUNK = 8  # images post-processed at a time from saved probabilities


def encoded(ids: Sequence[str], masks: NDArray[np.bool_]) -> dict[str, dict[int, str]]:
    """Each image's non-empty masks as RLE, by ClassId."""
    return {
        str(image_id): {c + 1: rle.encode(m) for c, m in enumerate(image_masks) if m.any()}
        for image_id, image_masks in zip(ids, masks, strict=True)
    }


def written(
    rles: dict[str, dict[int, str]],
    names: list[str],
    outputs: Outputs,
    template: Path | None,
    classes: int,
) -> PredictReport:
    write_submission(rles, names, outputs.out, outputs.fmt, template, classes)
    counts = {c: sum(c in r for r in rles.values()) for c in range(1, classes + 1)}
    files = tuple(path for _, path in outputs.labelled())
    return PredictReport(len(rles), counts, outputs.out, files)


def write_overlay(image_path: Path, masks: NDArray[np.bool_], folder: Path) -> None:
    """PNG of the image with its predicted masks in class colours (written atomically)."""
    picture = overlay(read_gray(image_path), masks)
    _, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    path = folder / f"{image_path.stem}.png"
    with fileio.writing(path, "overlay"), atomic_path(path, clean=False) as tmp:
        tmp.write_bytes(png.tobytes())
