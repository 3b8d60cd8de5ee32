"""Checkpoint files: atomic writes, safe loads, and the saver's choice of files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sever.engine import checkpoint as ckpt
from sever.engine.saver import CheckpointSaver
from sever.errors import CheckpointError


def state(epoch: int) -> dict:
    return {"model": {"w": torch.full((2,), float(epoch))}, "config": {"name": "x"}, "epoch": epoch}


def test_a_kill_during_save_leaves_the_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pth"
    ckpt.save_checkpoint(state(1), path)
    real_save = torch.save

    def dies_halfway(obj, handle):  # save_checkpoint writes through an open file
        real_save(obj, handle)
        handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(state(2), path)
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary left behind


def test_load_rejects_missing_damaged_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "none.pth")
    (tmp_path / "bad.pth").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "bad.pth")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a sever checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pth")
    torch.save({**state(1), "format": ckpt.FORMAT_VERSION + 1}, tmp_path / "new.pth")
    with pytest.raises(CheckpointError, match="upgrade sever"):
        ckpt.load_checkpoint(tmp_path / "new.pth")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    # weights_only loading: a checkpoint carrying arbitrary Python objects does not load
    torch.save({**state(1), "config": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(tmp_path / "pickled.pth")


def test_rng_state_round_trips_through_weights_only(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.save({"rng": ckpt.rng_state()}, tmp_path / "rng.pth")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_resolve_checkpoint_of_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    ckpt.save_checkpoint(state(1), tmp_path / "checkpoints" / "last.pth")
    assert ckpt.resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.pth"
    with pytest.raises(CheckpointError):
        ckpt.resolve_checkpoint(tmp_path, "best")


def run_saver(saver: CheckpointSaver, values: list[float | None]) -> list[bool]:
    improved = []
    for epoch, value in enumerate(values, start=1):
        improved.append(saver.record(epoch, value))
        saver.write(state(epoch), epoch)
    return improved


@pytest.mark.parametrize(
    "mode, values, top_k, period, kept, best, improved",
    [
        ("max", [0.1, 0.3, 0.2, 0.4], 2, 0, [2, 4], 4, [True, True, False, True]),
        ("min", [0.5, 0.3, 0.4, 0.6], 1, 0, [2], 2, [True, True, False, False]),
        ("max", [0.1, None, 0.2, None], 1, 2, [2, 3, 4], 3, [True, False, True, False]),
        ("max", [0.5, float("nan"), 0.4], 5, 0, [1, 3], 1, [True, False, False]),
        ("max", [0.1, 0.2], 0, 0, [], 2, [True, True]),
    ],
)
def test_saver_keeps_top_k_periodic_and_best(
    tmp_path: Path, mode, values, top_k, period, kept, best, improved
) -> None:
    saver = CheckpointSaver(tmp_path, mode, top_k, period)
    assert run_saver(saver, values) == improved
    files = sorted(int(p.stem.split("epoch")[1]) for p in tmp_path.glob("checkpoint-epoch*"))
    assert files == kept
    assert torch.load(tmp_path / "model_best.pth", weights_only=True)["epoch"] == best
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == len(values)


def test_saver_state_resumes(tmp_path: Path) -> None:
    first = CheckpointSaver(tmp_path, "max", 2, 0)
    run_saver(first, [0.1, 0.3])
    second = CheckpointSaver(tmp_path, "max", 2, 0)
    second.load_state_dict(first.state_dict())
    assert not second.record(3, 0.2)
    second.write(state(3), 3)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-epoch2.pth",
        "checkpoint-epoch3.pth",
    ]
