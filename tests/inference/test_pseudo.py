"""sever pseudo-label: the keep rule by hand, then the command end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sever.config import load_config
from sever.data.tables import read_table
from sever.engine.trainer import train
from sever.errors import ConfigError
from sever.inference.pseudo import (
    ABSENT,
    DISAGREE,
    PRESENT,
    UNCERTAIN,
    check_cutoffs,
    judge,
    kept,
    presence_probability,
    sibling,
    tally,
)
from tests.support import cli, write_tiny

# --- the keep rule ---------------------------------------------------------------------


def masks_of(non_empty: list[list[bool]]) -> np.ndarray:
    """(N, C, 2, 2) masks, one pixel set where non_empty[n][c]."""
    masks = np.zeros((len(non_empty), len(non_empty[0]), 2, 2), dtype=bool)
    masks[..., 0, 0] = np.array(non_empty)
    return masks


@pytest.mark.parametrize(
    "p, non_empty, expected",
    [
        (0.96, True, PRESENT),
        (0.96, False, DISAGREE),  # sure it is there, but the mask is empty
        (0.04, False, ABSENT),
        (0.04, True, DISAGREE),  # sure it is not, but the mask has pixels
        (0.95, True, UNCERTAIN),  # exactly hi is not above it
        (0.05, False, UNCERTAIN),  # exactly lo is not below it
        (0.5, True, UNCERTAIN),
        (0.5, False, UNCERTAIN),
    ],
)
def test_judge_one_class(p: float, non_empty: bool, expected: int) -> None:
    verdict = judge(np.array([[p]]), masks_of([[non_empty]]), hi=0.95, lo=0.05)
    assert verdict.tolist() == [[expected]]


def test_equal_cutoffs_leave_only_the_exact_value_uncertain() -> None:
    presence = np.array([[0.49, 0.51, 0.5]])
    verdicts = judge(presence, masks_of([[False, True, True]]), hi=0.5, lo=0.5)
    assert verdicts.tolist() == [[ABSENT, PRESENT, UNCERTAIN]]


def test_presence_from_heads_or_max_pixel() -> None:
    probs = np.zeros((1, 4, 2, 3), dtype=np.float32)
    probs[0, 0, 1, 2] = 0.9
    probs[0, 2, 0, 0] = 0.3
    np.testing.assert_allclose(presence_probability(probs), [[0.9, 0, 0.3, 0]])
    heads = np.array([[0.1, 0.99, 0.5, 0.01]])
    np.testing.assert_allclose(presence_probability(probs, heads), heads)


def test_heads_and_max_pixel_can_judge_differently() -> None:
    # One class, a weak pixel (0.6 > threshold 0.5, so the mask is non-empty) but a
    # confident head: the head says present, the max pixel probability is uncertain.
    probs = np.full((1, 1, 2, 2), 0.6, dtype=np.float32)
    masks = probs > 0.5
    from_heads = judge(presence_probability(probs, np.array([[0.99]])), masks, 0.95, 0.05)
    from_pixels = judge(presence_probability(probs), masks, 0.95, 0.05)
    assert from_heads.tolist() == [[PRESENT]] and from_pixels.tolist() == [[UNCERTAIN]]


def test_any_bad_class_drops_the_image_and_tally_counts_reasons() -> None:
    verdicts = np.array(
        [
            [PRESENT, ABSENT, ABSENT, ABSENT],  # kept, one defect
            [ABSENT, ABSENT, ABSENT, ABSENT],  # kept, defect-free
            [PRESENT, UNCERTAIN, DISAGREE, ABSENT],  # dropped: two reasons
            [ABSENT, ABSENT, ABSENT, UNCERTAIN],  # dropped by class 4 alone
        ]
    )
    keep = kept(verdicts)
    assert keep.tolist() == [True, True, False, False]
    counts = tally(verdicts, keep)  # columns: present/absent kept, uncertain, disagree, other
    assert counts.tolist() == [
        [1, 1, 0, 0, 2],
        [0, 2, 1, 0, 1],
        [0, 2, 0, 1, 1],
        [0, 2, 1, 0, 1],
    ]
    assert (counts.sum(axis=1) == len(verdicts)).all()


@pytest.mark.parametrize(
    "hi, lo, message",
    [
        (0.05, 0.95, "--hi 0.05 is below --lo 0.95"),
        (1.5, 0.05, "--hi 1.5: expected a probability in [0, 1]"),
        (0.95, -0.1, "--lo -0.1: expected a probability in [0, 1]"),
    ],
)
def test_bad_cutoffs(hi: float, lo: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_cutoffs(hi, lo)


def test_sibling_names() -> None:
    assert sibling(Path("a/pseudo.csv"), "images.txt") == Path("a/pseudo-images.txt")


# --- end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch run with a classification head."""
    folder = tmp_path_factory.mktemp("pseudo")
    path = write_tiny(folder, tiny_data)
    return train(load_config(path, ["trainer.epochs=1", "model.class_head.enabled=true"]))


@pytest.fixture(scope="module")
def headless(run: Path) -> Path:
    """The same checkpoint without its classification head."""
    path = run.parent / "headless.pth"
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    state["config"]["model"]["class_head"]["enabled"] = False
    state["model"] = {k: v for k, v in state["model"].items() if "classification" not in k}
    torch.save(state, path)
    return path


def ensemble_file(folder: Path, checkpoint: Path) -> Path:
    spec = folder / "ensemble.yml"
    spec.write_text(
        yaml.safe_dump(
            {
                "models": [{"checkpoint": str(checkpoint)}],
                "tta": "hflip",
                "postprocess": {"threshold": 0.5, "min_pixels": 0},
            }
        )
    )
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("heads", [True, False], ids=["heads", "max-pixel"])
@pytest.mark.parametrize("cutoffs", [[], ["--hi", "0.5", "--lo", "0.5"]], ids=["default", "0.5"])
def test_pseudo_label_writes_csv_ids_and_summary(
    run: Path,
    headless: Path,
    tiny_data: Path,
    tmp_path: Path,
    capsys,
    heads: bool,
    cutoffs: list[str],
) -> None:
    checkpoint = run / "checkpoints" / "last.pth" if heads else headless
    images, out = tiny_data / "test_images", tmp_path / "pseudo.csv"
    args = ["-c", str(ensemble_file(tmp_path, checkpoint)), "--images", str(images)]
    code = cli("pseudo-label", *args, "--out", str(out), "--workers", "0", *cutoffs)
    assert code == 0, capsys.readouterr().err
    assert "images: 4 seen" in capsys.readouterr().out

    frame, fmt = read_table(out)
    ids = (tmp_path / "pseudo-images.txt").read_text().splitlines()
    summary = json.loads((tmp_path / "pseudo-summary.json").read_text())
    assert fmt == "long"
    assert set(ids) <= {p.name for p in images.iterdir()}
    assert set(frame["ImageId"]) <= set(ids)
    assert summary["presence"] == (
        "classifiers and class heads" if heads else "max pixel probability"
    )
    assert summary["images_seen"] == 4
    assert summary["images_kept"] == len(ids)
    assert summary["images_kept"] + summary["images_dropped"] == summary["images_seen"]
    for c, counts in summary["classes"].items():
        assert sum(counts.values()) == 4
        assert counts["present_kept"] + counts["absent_kept"] == len(ids)
        # every present-kept class has its row in the CSV, and nothing else does
        assert counts["present_kept"] == (frame["ClassId"] == int(c)).sum()
        if cutoffs:
            assert counts["uncertain"] == 0


@pytest.mark.slow
def test_pseudo_label_json_is_the_summary(run: Path, tiny_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "pseudo.csv"
    args = ["-r", str(run), "--last", "--images", str(tiny_data / "test_images")]
    code = cli("pseudo-label", *args, "--out", str(out), "--workers", "0", "--json")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "pseudo-summary.json").read_text())
    assert json.loads(capsys.readouterr().out) == summary
    assert summary["images_seen"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, message",
    [
        ("empty folder", "no images (.jpg, .jpeg, .png) in this folder"),
        ("hi below lo", "--hi 0.05 is below --lo 0.95"),
        ("both sources", "give either -c ENSEMBLE.yml or -r RUN, not both"),
    ],
)
def test_pseudo_label_errors_are_one_line(
    run: Path, tiny_data: Path, tmp_path: Path, capsys, case: str, message: str
) -> None:
    images, extra = tiny_data / "test_images", []
    spec = ensemble_file(tmp_path, run / "checkpoints" / "last.pth")
    if case == "empty folder":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "hi below lo":
        extra = ["--hi", "0.05", "--lo", "0.95"]
    else:
        extra = ["-r", str(run)]
    out = tmp_path / "p.csv"
    code = cli("pseudo-label", "-c", str(spec), *extra, "--images", str(images), "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "p-images.txt").exists()
