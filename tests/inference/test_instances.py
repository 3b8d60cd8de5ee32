"""predict --instances: one record per connected defect region, consistent with the
submission's masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from sever.data import rle
from sever.inference import Ensemble, predict
from sever.inference.instances import find_instances, read_instances, rebuilt_masks
from sever.inference.postprocess import PostProcess
from tests.inference.test_predict_inputs import member, noise_images  # noqa: F401 (a fixture)


def test_regions_by_hand():
    masks = np.zeros((4, 8, 10), bool)
    masks[0, 1:3, 1:4] = True  # class 1: a 2x3 block...
    masks[0, 5, 7] = True  # ...and a lone pixel
    masks[2, 4, 4] = masks[2, 5, 5] = True  # class 3: diagonal neighbours, one region
    probs = np.where(masks, 0.8, 0.1)
    probs[0, 2, 3] = 0.9
    found = find_instances("a.jpg", masks, probs)
    boxes = [(i.class_id, i.x0, i.y0, i.x1, i.y1, i.area) for i in found]
    assert boxes == [(1, 1, 1, 4, 3, 6), (1, 7, 5, 8, 6, 1), (3, 4, 4, 6, 6, 2)]
    assert (found[0].mean_prob, found[0].max_prob) == (round((5 * 0.8 + 0.9) / 6, 4), 0.9)
    assert (found[1].mean_prob, found[1].max_prob) == (0.8, 0.8)
    assert (rebuilt_masks(found, "a.jpg", 4, 8, 10) == masks).all()
    assert find_instances("b.jpg", np.zeros((4, 8, 10), bool), probs) == []


def test_the_records_rebuild_the_submission(member, tmp_path: Path):  # noqa: F811
    folder = noise_images(tmp_path / "images", 3, seed=1)
    pp = PostProcess(threshold=0.5, min_pixels=0, min_component=5)
    out, records = tmp_path / "sub.csv", tmp_path / "defects.jsonl"
    ensemble = Ensemble([member], postprocess=pp, workers=0)
    predict.predict_folder(ensemble, folder, predict.Outputs(out, "wide", instances=records))
    found = read_instances(records)
    assert found and all(i.area >= 5 for i in found)
    with (tmp_path / "defects.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [r["rle"] for r in rows] == [i.rle for i in found]
    submission = pd.read_csv(out, keep_default_na=False)
    pairs = zip(submission["ImageId_ClassId"], submission["EncodedPixels"], strict=True)
    for key, encoded in pairs:
        image, class_id = key.rsplit("_", 1)
        mask = rle.decode(encoded, 64, 256) > 0 if encoded else np.zeros((64, 256), bool)
        assert (rebuilt_masks(found, image, 4, 64, 256)[int(class_id) - 1] == mask).all(), key
