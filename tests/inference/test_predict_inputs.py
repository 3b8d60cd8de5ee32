"""predict's inputs: folders that mix image sizes, and checks made before any inference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from sever.config import load_config
from sever.errors import DataError, OptionError
from sever.inference import Ensemble, predict
from sever.inference.models import Member
from sever.model.build import build_model
from tests.support import write_tiny


@pytest.fixture(scope="module")
def member(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Member:
    """An untrained FPN (it needs sides divisible by 32); predictions need no training."""
    path = write_tiny(tmp_path_factory.mktemp("predict"), tiny_data)
    config = load_config(path, ["model.arch=FPN", "model.encoder=mobilenet_v2"])
    torch.manual_seed(0)
    return Member(Path("fpn.pth"), build_model(config.model).eval(), config)


def noise_images(folder: Path, count: int, seed: int) -> Path:
    """`count` 64x256 images of seeded noise, 0.jpg, 1.jpg, ...: an untrained model's
    probabilities vary over them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (64, 256), np.uint8))
    return folder


def images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    for name, (height, width) in sizes.items():
        cv2.imwrite(str(folder / name), np.full((height, width), 100, np.uint8))
    return folder


@pytest.mark.parametrize(
    ("sizes", "batch", "expected"),
    [
        ([(64, 256)] * 5, 2, [[0, 1], [2, 3], [4]]),
        ([(64, 256), (128, 256), (64, 256), (128, 256), (64, 256)], 2, [[0, 2], [4], [1, 3]]),
        ([(1, 1), (2, 2), (3, 3)], 4, [[0], [1], [2]]),
        ([], 4, []),
    ],
)
def test_size_batches(sizes, batch: int, expected: list[list[int]]) -> None:
    assert predict.size_batches(sizes, batch) == expected


def test_a_folder_of_mixed_sizes_is_predicted(member: Member, tmp_path: Path) -> None:
    # b.jpg (128 high) between two 64-high images: one batch of 3 would not stack
    sizes = {"a.jpg": (64, 256), "b.jpg": (128, 256), "c.jpg": (64, 256), "d.jpg": (64, 128)}
    folder = images(tmp_path / "images", sizes)
    out = tmp_path / "sub.csv"
    report = predict.predict_folder(
        Ensemble([member], workers=0), folder, predict.Outputs(out, "wide")
    )
    assert report.images == 4
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows["ImageId_ClassId"]) == [f"{i}_{c}" for i in sorted(sizes) for c in range(1, 5)]


def test_checks_come_before_inference(
    member: Member, tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the checks")

    monkeypatch.setattr(predict, "predict_batches", no_inference)
    folder = images(tmp_path / "data" / "test_images", {"a.jpg": (64, 256), "b.jpg": (64, 256)})
    template = tmp_path / "data" / "sample_submission.csv"
    template.write_text("ImageId,ClassId,EncodedPixels\na.jpg,0,\nc.jpg,0,\n")
    out = tmp_path / "out" / "sub.csv"
    with pytest.raises(DataError, match=r"sample_submission.csv: image c.jpg in the template"):
        predict.predict_folder(Ensemble([member], workers=0), folder, out)
    with pytest.raises(OptionError, match="--out .*: is a folder"):
        predict.predict_folder(
            Ensemble([member], workers=0), folder, predict.Outputs(tmp_path, "wide")
        )
    with pytest.raises(OptionError, match="--format tsv: expected one of auto, wide, long"):
        predict.predict_folder(Ensemble([member], workers=0), folder, predict.Outputs(out, "tsv"))
    odd = images(tmp_path / "odd", {"a.jpg": (64, 256), "z.jpg": (64, 250)})
    with pytest.raises(DataError, match=r"z.jpg: 64x250 is not a multiple of 32, which FPN"):
        predict.predict_folder(Ensemble([member], workers=0), odd, predict.Outputs(out, "wide"))
    assert not (tmp_path / "out").exists()  # nothing created by a refused predict
