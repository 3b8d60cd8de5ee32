"""Pictures for the report: the images two candidates disagree on, with the truth and each
candidate's post-processed masks in class colours, one above the other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from sever.data import rle
from sever.data.tables import read_labels
from sever.fileio import read_gray
from sever.inference.compare import Comparison, disagreeing, leaders
from sever.inference.ensemble import Ensemble, EnsembleOptions
from sever.inference.postprocess import postprocess_batch
from sever.inference.predict import image_loader, predict_batches
from sever.inference.validation import data_dir_of, run_of
from sever.visualize import overlay

SCALE = 0.5  # the pictures at half size: a 256x1600 image is 128x800 per row


def with_overlays(
    comparison: Comparison, candidates: Sequence[EnsembleOptions], data_dir: Path | None = None
) -> Comparison:
    """The comparison with PNGs of the images the two leaders disagree on most: the truth,
    then each leader's post-processed masks, one above the other (the leaders' models load
    again and predict those images only)."""
    rows = disagreeing(comparison)
    if not rows:
        return comparison
    ids = [comparison.aligned[0].ids[i] for i in rows]
    by_name = {str(o.file): o for o in candidates}
    pair = [by_name[c.name] for c in leaders(comparison)]
    return replace(comparison, overlays=disagreement_overlays(ids, pair, data_dir))


def disagreement_overlays(
    ids: list[str], candidates: Sequence[EnsembleOptions], data_dir: Path | None = None
) -> dict[str, bytes]:
    """PNG per image id: the truth, then each candidate's masks."""
    masks, images_dir, classes = [], Path(), 0
    for options in candidates:
        ensemble = Ensemble.from_options(options)
        member = ensemble.members[0]
        images_dir = data_dir_of(run_of(member), member.config, data_dir) / "train_images"
        classes = ensemble.classes
        masks.append(predicted_masks(ensemble, images_dir, ids))
    truth = true_masks(images_dir, ids, classes)
    return {i: picture(read_gray(images_dir / i), [truth[i], *(m[i] for m in masks)]) for i in ids}


def predicted_masks(
    ensemble: Ensemble, images_dir: Path, ids: list[str]
) -> dict[str, NDArray[np.bool_]]:
    postprocess = ensemble.applied_postprocess
    found: dict[str, NDArray[np.bool_]] = {}
    for batch_ids, probs, presence in predict_batches(
        ensemble, image_loader(images_dir, ensemble, ids)
    ):
        assert probs is not None  # compare scored it: it has a segmenter
        found |= dict(zip(batch_ids, postprocess_batch(probs, postprocess, presence), strict=True))
    return found


def true_masks(images_dir: Path, ids: list[str], classes: int) -> dict[str, NDArray[np.bool_]]:
    labels = read_labels(images_dir.parent / "train.csv", images_dir, None, classes).rles()
    found = {}
    for image_id in ids:
        height, width = read_gray(images_dir / image_id).shape[:2]
        stack = np.zeros((classes, height, width), bool)
        for class_id, encoded in labels.get(image_id, {}).items():
            stack[class_id - 1] = rle.decode(encoded, height, width) > 0
        found[image_id] = stack
    return found


def picture(image: NDArray[np.uint8], rows: list[NDArray[np.bool_]]) -> bytes:
    """The image once per mask set, tinted, one above the other, at SCALE, as PNG."""
    gap = np.full((4, image.shape[1], 3), 255, np.uint8)
    parts = [part for masks in rows for part in (overlay(image, masks), gap)][:-1]
    stacked = np.concatenate(parts, axis=0)
    small = cv2.resize(stacked, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    _, png = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return png.tobytes()
