"""DDP through torchrun, 2 processes on the CPU (gloo): one run directory, and validation
metrics equal to a single-process evaluation of the saved checkpoint."""

from __future__ import annotations

import json
import multiprocessing
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from sever.cli import main
from sever.data.sampling import ShardSampler, ShuffleSampler
from sever.engine.distributed import World, checked_on_main
from sever.errors import CheckpointError
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


def fail_on_main(rank: int, store: str, error: str, results) -> None:
    """One rank of a 2-process gloo world: rank 0's check raises `error`; what each rank
    then raises goes to `results`."""
    import torch.distributed as dist

    init = f"file://{store}"
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=20)
    )
    try:
        raised = {"value": ValueError("a bug"), "sever": CheckpointError("run: no lock")}[error]

        def check() -> None:
            raise raised

        try:
            checked_on_main(check, World(rank, 2))
            results.put((rank, None, ""))
        except Exception as exc:
            results.put((rank, type(exc).__name__, str(exc)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("error", ["value", "sever"])
def test_any_failure_on_rank_0_stops_every_rank(tmp_path: Path, error: str) -> None:
    """Not only a SeverError: rank 1 does not wait for rank 0 until the group's timeout."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    ranks = [
        spawn.Process(target=fail_on_main, args=(r, str(tmp_path / "store"), error, results))
        for r in range(2)
    ]
    for process in ranks:
        process.start()
    got = dict(
        (rank, (kind, text)) for rank, kind, text in (results.get(timeout=120) for _ in ranks)
    )
    for process in ranks:
        process.join(timeout=60)
    if error == "value":
        assert got == {
            0: ("ValueError", "a bug"),
            1: ("RuntimeError", "rank 0 failed: ValueError: a bug"),
        }
    else:
        assert got == {r: ("CheckpointError", "run: no lock") for r in range(2)}


def compare_points(rank: int, store: str, epochs: tuple[int, int], results) -> None:
    """One rank of a 2-process gloo world that read the run at epoch `epochs[rank]`."""
    import torch.distributed as dist

    from sever.engine.resume import ResumePoint
    from sever.engine.trainer import check_same_point

    init = f"file://{store}"
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=20)
    )
    try:
        run = Path("saved/tiny/run")
        state = {"epoch": epochs[rank], "step": 4 * epochs[rank]}
        try:
            check_same_point(ResumePoint(run, run / "checkpoints/last.pth", state), World(rank, 2))
            results.put((rank, ""))
        except CheckpointError as exc:
            results.put((rank, str(exc)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("epochs", [(3, 3), (3, 2)])
def test_ranks_that_read_another_state_all_stop(tmp_path: Path, epochs: tuple[int, int]) -> None:
    """Rank 1 reads the run before rank 0 locks it: an epoch saved in between stops both."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    ranks = [
        spawn.Process(target=compare_points, args=(r, str(tmp_path / "store"), epochs, results))
        for r in range(2)
    ]
    for process in ranks:
        process.start()
    got = dict(results.get(timeout=120) for _ in ranks)
    for process in ranks:
        process.join(timeout=60)
    stopped = (
        "saved/tiny/run: changed while its 2 processes read it (another sever saved it as "
        "they started); resume again"
    )
    assert got == {r: "" if epochs[0] == epochs[1] else stopped for r in range(2)}
