"""Tests for the synthetic Severstal-like dataset generator."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever.data import rle, synth
from sever.data.tables import read_labels

H, W = 128, 256
N_TRAIN, N_TEST = 40, 8


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _masks(out: Path, height: int, width: int) -> dict[str, dict[int, np.ndarray]]:
    """ImageId -> {ClassId: mask (H, W)} from a generated train.csv of either format."""
    header, *rows = _rows(out / "train.csv")
    table: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        if header == ["ImageId_ClassId", "EncodedPixels"]:
            image_class, encoded = row
            image_id, class_id = image_class.rsplit("_", 1)
        else:
            image_id, class_id, encoded = row
        if encoded:
            table.setdefault(image_id, {})[int(class_id)] = rle.decode(encoded, height, width)
    return table


@pytest.fixture(scope="module", params=["long", "wide"])
def small(request, tmp_path_factory) -> tuple[Path, dict, str]:
    fmt = request.param
    out = tmp_path_factory.mktemp(f"synth_{fmt}") / "data"
    summary = synth.generate(out, n_train=N_TRAIN, n_test=N_TEST, height=H, width=W, fmt=fmt)
    return out, summary, fmt


def test_layout_and_images(small):
    out, summary, _ = small
    train = sorted((out / "train_images").iterdir())
    test = sorted((out / "test_images").iterdir())
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert not {p.name for p in train} & {p.name for p in test}
    for path in train[:5] + test[:2]:
        assert len(path.stem) == 9 and int(path.stem, 16) >= 0 and path.suffix == ".jpg"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert summary["train_images"] == N_TRAIN and summary["test_images"] == N_TEST
    assert not list(out.glob("*.tmp*")), "temporary CSVs left behind"


def test_train_csv_structure(small):
    out, summary, fmt = small
    header, *rows = _rows(out / "train.csv")
    ids = sorted(p.name for p in (out / "train_images").iterdir())
    if fmt == "wide":
        assert header == ["ImageId_ClassId", "EncodedPixels"]
        assert [r[0] for r in rows] == [f"{i}_{c}" for i in ids for c in (1, 2, 3, 4)]
        assert sum(r[1] != "" for r in rows) == sum(summary["images_per_class"].values())
    else:
        assert header == ["ImageId", "ClassId", "EncodedPixels"]
        assert all(r[2] for r in rows), "long format lists defect rows only"
        keys = [(r[0], int(r[1])) for r in rows]
        assert keys == sorted(set(keys))
        assert {r[0] for r in rows} <= set(ids)
        assert len({r[0] for r in rows}) == N_TRAIN - summary["defect_free"]


def test_masks_decode_inside_image_without_overlap(small):
    out, summary, _ = small
    masks = _masks(out, H, W)
    assert len(masks) == N_TRAIN - summary["defect_free"]
    for by_class in masks.values():
        stacked = np.stack([m > 0 for m in by_class.values()])
        assert stacked.shape[1:] == (H, W)
        assert stacked.any(axis=(1, 2)).all(), "every RLE decodes to a non-empty mask"
        assert (stacked.sum(axis=0) <= 1).all(), "classes overlap in one image"


def test_summary_matches_csv(small):
    out, summary, _ = small
    masks = _masks(out, H, W)
    per_class = {c: sum(c in m for m in masks.values()) for c in (1, 2, 3, 4)}
    assert summary["images_per_class"] == per_class
    assert summary["multi_class"] == sum(len(m) > 1 for m in masks.values())


def test_sample_submission_matches_test_images(small):
    out, _, fmt = small
    header, *rows = _rows(out / "sample_submission.csv")
    ids = sorted(p.name for p in (out / "test_images").iterdir())
    if fmt == "wide":
        assert header == ["ImageId_ClassId", "EncodedPixels"]
        assert rows == [[f"{i}_{c}", "1 1"] for i in ids for c in (1, 2, 3, 4)]
    else:
        assert header == ["ImageId", "EncodedPixels", "ClassId"]
        assert rows == [[i, f"1 {H * W}", "0"] for i in ids]


def test_reader_accepts_output(small):
    out, summary, fmt = small
    labels = read_labels(out / "train.csv", out / "train_images", (H, W))
    assert labels.format == fmt
    assert len(labels.images) == N_TRAIN
    assert labels.defects["ImageId"].nunique() == N_TRAIN - summary["defect_free"]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    kwargs = dict(n_train=6, n_test=2, height=64, width=128, seed=3)
    synth.generate(tmp_path / "a", **kwargs)
    synth.generate(tmp_path / "b", **kwargs)
    synth.generate(tmp_path / "c", **{**kwargs, "seed": 4})
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert set(a) != set(c), "a different seed should give different image ids"


def test_refuses_non_empty_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        synth.generate(tmp_path, n_train=2, n_test=1, height=64, width=64)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_accepts_existing_empty_dir(tmp_path):
    synth.generate(tmp_path, n_train=2, n_test=1, height=64, width=64)
    assert (tmp_path / "train.csv").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "csv"}, "fmt must be one of"),
        ({"n_train": -1}, "must be >= 0"),
        ({"height": 8}, "height and width"),
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def larger(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_larger") / "data"
    return out, synth.generate(out, n_train=300, n_test=0, height=64, width=400, seed=7)


def test_class_frequencies_resemble_competition(larger):
    _, summary = larger
    per_class = summary["images_per_class"]
    assert 0.35 <= summary["defect_free"] / summary["train_images"] <= 0.65
    assert max(per_class, key=per_class.get) == 3
    assert min(per_class, key=per_class.get) == 2
    assert summary["multi_class"] >= 1


def _excess_deviation(gray: np.ndarray, mask: np.ndarray, free: np.ndarray) -> float:
    """How much more the pixels in `mask` stray from the local background than it does itself."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    ring = (cv2.dilate(mask, kernel) > 0) & free
    if ring.sum() < 20:
        return float("nan")
    level = np.median(gray[ring])
    return float(np.abs(gray[mask > 0] - level).mean() - np.abs(gray[ring] - level).mean())


def test_defects_are_visible(larger):
    out, _ = larger
    excess: dict[int, list[float]] = {c: [] for c in (1, 2, 3, 4)}
    for image_id, by_class in _masks(out, 64, 400).items():
        gray = cv2.imread(str(out / "train_images" / image_id), cv2.IMREAD_GRAYSCALE)
        # The ring must be plain steel: not another defect, not the black strip edge.
        free = (sum(m for m in by_class.values()) == 0) & (gray > 25)
        for class_id, mask in by_class.items():
            excess[class_id].append(_excess_deviation(gray.astype(float), mask, free))
    for class_id, values in excess.items():
        assert np.nanmean(values) > 1.0, f"class {class_id} barely differs from its background"


def test_more_test_images_leave_training_set_unchanged(tmp_path):
    synth.generate(tmp_path / "a", n_train=4, n_test=1, height=64, width=128)
    synth.generate(tmp_path / "b", n_train=4, n_test=3, height=64, width=128)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    train = {k: v for k, v in a.items() if k.startswith("train")}
    assert train and all(b[k] == v for k, v in train.items())
