"""DDP through torchrun, 2 processes on the CPU (gloo): one run directory, and validation
metrics equal to a single-process evaluation of the saved checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from sever.cli import main
from sever.data.sampling import ShardSampler, ShuffleSampler
from tests.support import torchrun_train

pytestmark = pytest.mark.slow


def test_shards_cover_the_epoch_once() -> None:
    whole = ShuffleSampler(10, seed=1)
    halves = [ShuffleSampler(10, seed=1) for _ in range(3)]
    for rank, sampler in enumerate(halves):
        sampler.shard(rank, 3)
    items = [list(s) for s in halves]
    assert [len(i) for i in items] == [4, 4, 4]  # 10 padded to 12
    merged = [pair for group in zip(*items, strict=True) for pair in group]
    assert merged[:10] == list(whole)  # the same order, dealt round-robin
    assert merged[10:] == list(whole)[:2]  # padding repeats the start
    assert sorted(i for s in (ShardSampler(7, r, 2) for r in range(2)) for i in s) == list(range(7))


def test_two_processes_train_one_run(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    overrides = ["trainer.epochs=2", "trainer.batch_size=2"]
    done = torchrun_train("-c", tiny_yaml, *(arg for o in overrides for arg in ("-o", o)))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("run: ")]
    assert len(lines) == 1  # only rank 0 reports
    run = Path(lines[0][5:])
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # exactly one run directory
    rows = pd.read_csv(run / "metrics.csv")
    assert rows["epoch"].tolist() == [1, 2]
    main(["evaluate", "-r", str(run), "--last", "--json", "--workers", "0"])
    report = json.loads(capsys.readouterr().out)
    assert report["dice_mean"] == pytest.approx(rows["val_dice_mean"].iloc[-1], abs=1e-6)
    assert report["empty_baseline"] == pytest.approx(rows["val_empty_baseline"].iloc[-1])
    # a different world size cannot resume the run
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "-o", "trainer.epochs=3"])
    assert "trained with 2 process(es), resumed with 1" in capsys.readouterr().err


def test_gpus_flag_starts_torchrun(tiny_yaml: Path, monkeypatch) -> None:
    import subprocess as sp

    calls = []
    monkeypatch.setattr(sp, "call", lambda command: calls.append(command) or 0)
    argv = ["sever", "train", "-c", str(tiny_yaml), "--gpus", "4", "-o", "trainer.epochs=1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        main(argv[1:])
    assert done.value.code == 0
    (command,) = calls
    assert Path(command[0]).name == "torchrun"
    assert command[1:] == [
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "sever",
        "train",
        "-c",
        str(tiny_yaml),
        "-o",
        "trainer.epochs=1",
    ]


def test_two_processes_validate_a_classifier_exactly(tiny_yaml: Path, capsys) -> None:
    # The presence counts are all-reduced: the sharded validation's F1 equals a
    # single-process evaluation of the same checkpoint.
    overrides = ["task=classify", "trainer.epochs=1", "trainer.batch_size=2"]
    done = torchrun_train("-c", tiny_yaml, *(arg for o in overrides for arg in ("-o", o)))
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(next(x for x in done.stdout.splitlines() if x.startswith("run: "))[5:])
    rows = pd.read_csv(run / "metrics.csv")
    main(["evaluate", "-r", str(run), "--last", "--json", "--workers", "0"])
    report = json.loads(capsys.readouterr().out)
    for c in ("mean", 1, 2, 3, 4):
        assert report[f"f1_{c}"] == pytest.approx(rows[f"val_f1_{c}"].iloc[-1], abs=1e-6)
