"""Faults at every write of a training run and of upload staging, a catalogue: a full disk
(real tmpfs, `small_disk`), a read-only folder (a real read-only mount), kill -9 then the
same command again, two processes on one run, a deleted or truncated file of the run.

Each asks for one line on stderr (`error: ...`) naming the path and what is wrong, a
non-zero exit, the earlier outputs as they were, and no temporary or empty folder left.
The runs use the recipes' settings (loader workers, EMA, dropout).
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sever import fileio
from sever.config import load_config
from sever.engine import kfold
from sever.engine.trainer import train
from sever.kaggle import staging
from tests.faults.conftest import fill
from tests.kaggle.stub import without_credentials
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow

SMALL = ["model.encoder=mobilenet_v2"]  # quick to save and to load
# What users run: loader workers, EMA weights, dropout; one step an epoch.
RECIPE = [
    *SMALL,
    "data.workers=2",
    "trainer.ema=0.9",
    "model.dropout=0.2",
    "trainer.steps_per_epoch=1",
    "trainer.log_every=1",
]


def overrides(*extra: str) -> list[str]:
    return [a for o in [*RECIPE, *extra] for a in ("-o", o)]


def error_line(err: str) -> str:
    """The one error line, the last of stderr (log lines of the run may come before it)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err
    assert "Traceback" not in err and "Logging error" not in err, err
    return lines[0]


def temporaries(*folders: Path) -> list[Path]:
    """Temporary files and folders (`.NAME.tmp-HOST-PID`, `.NAME.old-HOST-PID`, and an
    earlier sever's without HOST) below the folders."""
    found = [p for f in folders for p in f.rglob(".*")]
    return [p for p in found if re.search(r"\.(tmp|old)-(\w+-)?\d+", p.name)]


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def epoch_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def only_run(save_dir: Path) -> Path:
    (run,) = (save_dir / "tiny").iterdir()
    return run


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of one step, both kept; copied by the tests that spoil it."""
    folder = tmp_path_factory.mktemp("runs")
    options = [*RECIPE, "trainer.epochs=2", "trainer.save_top_k=2", "trainer.log_images=0"]
    return train(load_config(write_tiny(folder, tiny_data), options))


def copy_run(run: Path, folder: Path) -> Path:
    """A copy of `run` at folder/saved/tiny/<stamp>, its hard links (last.pth and the
    epoch files it is) kept as links."""
    copy = folder / "saved" / "tiny" / run.name
    copied: dict[int, Path] = {}

    def copy_or_link(source: str, target: str) -> None:
        inode = os.stat(source).st_ino
        if inode in copied:
            os.link(copied[inode], target)
        else:
            shutil.copy2(source, target)
            copied[inode] = Path(target)

    shutil.copytree(run, copy, copy_function=copy_or_link)
    return copy


# ---------------------------------------------------------------------- training: full disk


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(
    tiny_yaml: Path, small_disk: Callable[[int], Path], tmp_path: Path, capsys
) -> None:
    # The size of one checkpoint, from a run of the same config elsewhere.
    probe = tmp_path / "probe"
    args = ["train", "-c", tiny_yaml, *overrides("trainer.epochs=1")]
    code, _, err = cli_output(capsys, *args, "-o", f"trainer.save_dir={probe}")
    assert code == 0, err
    size = (only_run(probe) / "checkpoints" / "last.pth").stat().st_size
    # Room for one checkpoint and a half: epoch 1 fits, epoch 2's temporary file does not.
    disk = small_disk(size * 3 // 2 // 1024)
    args = ["train", "-c", tiny_yaml, *overrides("trainer.epochs=3")]
    code, _, err = cli_output(capsys, *args, "-o", f"trainer.save_dir={disk}")
    run = only_run(disk)
    last = run / "checkpoints" / "last.pth"
    assert code == 1
    assert error_line(err) == (
        f"error: {last}: cannot write the checkpoint: the disk is full; checkpoints/last.pth "
        f"keeps epoch 1; free space (or fix the folder), then: sever train --resume {run}"
    )
    assert epoch_of(last) == 1
    assert [r["epoch"] for r in rows(run)] == ["1"]  # not the failed epoch 2
    assert temporaries(disk) == []
    # Once there is room, the run goes on from epoch 1, and metrics.csv with it.
    subprocess.run(["mount", "-o", f"remount,size={size * 4 // 1024}k", str(disk)], check=True)
    code, _, err = cli_output(capsys, "train", "--resume", run)
    assert code == 0, err
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3"] and epoch_of(last) == 3


def test_a_full_disk_at_metrics_csv_after_its_checkpoint_is_made_good_by_resuming(
    run: Path, tiny_yaml: Path, small_disk: Callable[[int], Path], monkeypatch, capsys
) -> None:
    from sever.engine.saver import CheckpointSaver

    size = (run / "checkpoints" / "last.pth").stat().st_size
    disk = small_disk(size * 4 // 1024)
    write, fillers = CheckpointSaver.write, []

    def write_then_fill(saver: CheckpointSaver, state: dict, epoch: int) -> None:
        write(saver, state, epoch)
        if epoch == 2:  # the disk fills between epoch 2's checkpoint and its metrics row
            fillers.append(fill(disk))

    monkeypatch.setattr(CheckpointSaver, "write", write_then_fill)
    args = ["train", "-c", tiny_yaml, *overrides("trainer.epochs=3")]
    code, _, err = cli_output(capsys, *args, "-o", f"trainer.save_dir={disk}")
    run_dir = only_run(disk)
    assert code == 1
    assert error_line(err) == (
        f"error: {run_dir / 'metrics.csv'}: cannot write the metrics: the disk is full; "
        "checkpoints/last.pth keeps epoch 2 (resuming rebuilds metrics.csv from it); free "
        f"space (or fix the folder), then: sever train --resume {run_dir}"
    )
    assert epoch_of(run_dir / "checkpoints" / "last.pth") == 2
    assert [r["epoch"] for r in rows(run_dir)] == ["1"]
    assert temporaries(disk) == []
    monkeypatch.undo()
    fillers[0].unlink()
    code, _, err = cli_output(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert "metrics.csv: brought back in line from the checkpoint's history (2 epochs)" in err
    assert [r["epoch"] for r in rows(run_dir)] == ["1", "2", "3"]


def test_a_full_disk_when_resuming_names_the_file_and_changes_nothing(
    run: Path, small_disk: Callable[[int], Path], capsys
) -> None:
    size = sum(p.stat().st_size for p in {p.stat().st_ino: p for p in run.rglob("*")}.values())
    disk = small_disk(size // 1024 + 1024)
    copy = copy_run(run, disk)
    fill(disk)
    outputs = ["config.yml", "split.csv", "metrics.csv", "checkpoints/last.pth"]
    before = {name: (copy / name).read_bytes() for name in outputs}
    code, _, err = cli_output(capsys, "train", "--resume", copy, "-o", "trainer.epochs=3")
    assert code == 1
    assert error_line(err) == (
        f"error: {copy}/config.yml: cannot write the config: the disk is full; free space (or "
        f"fix the folder), then: sever train --resume {copy}"
    )
    assert {name: (copy / name).read_bytes() for name in outputs} == before
    assert temporaries(disk) == []


def test_a_new_run_on_a_full_disk_leaves_no_folder(
    tiny_yaml: Path, small_disk: Callable[[int], Path], capsys
) -> None:
    disk = small_disk(64)
    fill(disk)
    save_dir = disk / "runs"
    args = ["train", "-c", tiny_yaml, *overrides(f"trainer.save_dir={save_dir}")]
    code, _, err = cli_output(capsys, *args)
    assert code == 1
    line = error_line(err)
    assert line.startswith(f"error: {save_dir}/tiny/") and "config.yml: cannot write" in line
    assert "the disk is full" in line
    assert [p.name for p in disk.iterdir()] == [".filler"]  # no run folder, no runs/tiny/


def test_train_log_on_a_full_disk_stops_with_one_warning(
    small_disk: Callable[[int], Path], capsys
) -> None:
    from sever.logsetup import add_file_log, remove_handler, setup_logging

    setup_logging()
    disk = small_disk(64)
    handler = add_file_log(disk / "train.log")
    fill(disk)
    logger = logging.getLogger("sever.engine.trainer")
    for epoch in range(20):
        logger.info("epoch %d %s", epoch, "x" * 1000)
    remove_handler(handler)  # its unwritten rest does not raise either
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "cannot write the log" in line]
    assert warnings == [
        f"{disk / 'train.log'}: cannot write the log (No space left on device); it stops "
        "here, the run goes on"
    ]
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("epoch 19 x") == 1  # the console goes on


# ---------------------------------------------------------------------- training: read-only


# ---------------------------------------------------------------------- k-fold: full disk


def kfold_cli(capsys, tiny_yaml: Path, save_dir: Path) -> tuple[int, str, str]:
    args = ["-o", "data.folds=2", "-o", f"trainer.save_dir={save_dir}", "--folds", "all"]
    return cli_output(capsys, "train", "-c", tiny_yaml, *args)


def test_a_full_disk_at_the_kfold_ensemble_names_it_and_keeps_the_folds(
    tiny_yaml: Path, small_disk: Callable[[int], Path], monkeypatch, capsys
) -> None:
    disk = small_disk(256)

    def train_then_fill(config, resume=None, new_run=None) -> Path:  # hours of training
        run = new_run()
        (run / "checkpoints" / "model_best.pth").write_bytes(b"")
        if config.data.fold == 1:
            fill(disk)
        return run

    monkeypatch.setattr(kfold, "train", train_then_fill)
    code, out, err = kfold_cli(capsys, tiny_yaml, disk)
    (parent,) = (disk / "tiny").iterdir()
    assert code == 1 and out == ""
    assert error_line(err) == (
        f"error: {parent / 'ensemble.yml'}: cannot write the k-fold ensemble file: the disk "
        f"is full; the folds' runs in {parent} are complete: free space, then list each "
        "fold's checkpoints/model_best.pth in it"
    )
    assert sorted(p.name for p in parent.iterdir()) == ["fold0", "fold1"]
    assert temporaries(disk) == []


def test_a_kfold_whose_first_fold_cannot_be_made_leaves_no_folders(
    tiny_yaml: Path, small_disk: Callable[[int], Path], monkeypatch, capsys
) -> None:
    disk = small_disk(64)
    fill(disk)

    def never_trains(config, resume=None, new_run=None) -> Path:
        return new_run()

    monkeypatch.setattr(kfold, "train", never_trains)
    code, out, err = kfold_cli(capsys, tiny_yaml, disk / "saved")
    assert code == 1 and out == ""
    line = error_line(err)
    assert line.startswith(f"error: {disk}/saved/tiny/") and "-kfold/fold0/config.yml: " in line
    assert ": cannot write the config: the disk is full" in line
    assert [p.name for p in disk.iterdir()] == [".filler"]  # no saved/tiny/<stamp>-kfold


def test_a_read_only_save_dir_is_refused_before_any_work(
    tiny_yaml: Path, read_only: Callable[[Path], Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    from sever.engine import trainer

    def prepare(*args: object, **kwargs: object) -> None:
        pytest.fail("the labels, images, loaders and model were built first")

    monkeypatch.setattr(trainer, "prepare", prepare)
    (tmp_path / "shared").mkdir()
    mounted = read_only(tmp_path / "shared")
    args = ["train", "-c", tiny_yaml, "-o", f"trainer.save_dir={mounted}/runs"]
    code, out, err = cli_output(capsys, *args)
    assert code == 2 and out == ""
    # the one line alone: no line of the run's log, so refused before any training
    assert err == (
        f"error: trainer.save_dir: cannot write in {mounted} (the file system is read-only); "
        "choose a folder you can write to\n"
    )
    assert list((tmp_path / "shared").iterdir()) == []


def test_a_read_only_run_is_refused_on_resume(
    run: Path, read_only: Callable[[Path], Path], tmp_path: Path, capsys
) -> None:
    copy = copy_run(run, tmp_path)
    mounted = read_only(copy)
    code, out, err = cli_output(capsys, "train", "--resume", mounted, "-o", "trainer.epochs=3")
    assert code == 1 and out == ""
    assert err.startswith(f"error: --resume {mounted}: cannot write in {mounted} (the file sys")
    assert err.count("\n") == 1


# ---------------------------------------------------------------------- training: lost files


def test_a_deleted_metrics_csv_is_rebuilt_from_the_checkpoint(
    run: Path, tmp_path: Path, capsys
) -> None:
    copy = copy_run(run, tmp_path)
    expected = rows(copy)
    (copy / "metrics.csv").unlink()
    code, _, err = cli_output(capsys, "train", "--resume", copy, "-o", "trainer.epochs=3")
    assert code == 0, err
    assert "metrics.csv: rebuilt from the checkpoint's history (2 epochs)" in err
    got = rows(copy)
    assert got[:2] == expected and [r["epoch"] for r in got] == ["1", "2", "3"]


def test_a_truncated_last_pth_names_the_intact_checkpoint(
    run: Path, tmp_path: Path, capsys
) -> None:
    copy = copy_run(run, tmp_path)
    last = copy / "checkpoints" / "last.pth"
    whole = last.read_bytes()
    last.unlink()  # as a copy that broke off does, not through the epoch file's link
    last.write_bytes(whole[: len(whole) // 2])
    code, out, err = cli_output(capsys, "train", "--resume", copy)
    intact = copy / "checkpoints" / "checkpoint-epoch2.pth"
    assert code == 1 and out == ""
    assert err == (
        f"error: {last}: not a readable checkpoint (the file is damaged or truncated (copy it "
        f"again)); the newest intact checkpoint is epoch 2's: sever train --resume {intact}\n"
    )
    code, _, err = cli_output(capsys, "train", "--resume", intact, "-o", "trainer.epochs=3")
    assert code == 0, err
    assert epoch_of(last) == 3


# ---------------------------------------------------------------------- training: processes


def sever(folder: Path, *args: object) -> subprocess.Popen:
    """`python -m sever ARGS` in its own process group, output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sever", *map(str, args)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def holds(run: Path, process: subprocess.Popen, starts: int, timeout: float = 300) -> None:
    """Wait until `process` holds the run's lock (it writes its pid into the lock file) and
    trains (train.log then has `starts` run lines: its config.yml is written)."""
    deadline = time.monotonic() + timeout
    lock, log = run / ".lock", run / "train.log"
    while time.monotonic() < deadline:
        locked = lock.is_file() and lock.read_text().startswith(f"pid {process.pid} ")
        if locked and log.is_file() and log.read_text().count("engine.trainer: run ") == starts:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    pytest.fail("the training process never took the lock")


def refused(folder: Path, run: Path, holder: int) -> None:
    """A second `sever train --resume RUN` is refused in one line, touching nothing."""
    config = (run / "config.yml").stat()
    second = sever(folder, "train", "--resume", run)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1 and out == ""
    assert err.startswith(
        f"error: {run}: another sever process is training this run (pid {holder} on "
    ), err
    assert err.endswith("wait for it to end or stop it, then resume\n") and err.count("\n") == 1
    after = (run / "config.yml").stat()
    assert (after.st_mtime_ns, after.st_ino) == (config.st_mtime_ns, config.st_ino)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def test_two_processes_on_one_run_and_kill_9_frees_it(tiny_yaml: Path, tmp_path: Path) -> None:
    long = overrides("trainer.epochs=100000", "trainer.tensorboard=false")
    first = sever(tmp_path, "train", "-c", tiny_yaml, *long)
    try:
        deadline = time.monotonic() + 300
        parent = tmp_path / "saved" / "tiny"
        while not (parent.is_dir() and any(parent.iterdir())) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        run = only_run(tmp_path / "saved")
        holds(run, first, 1)
        refused(tmp_path, run, first.pid)
        # kill -9 of the trainer alone: its loader workers may outlive it for a while, and
        # the lock goes with the process all the same.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        third = sever(tmp_path, "train", "--resume", run, *long)
        try:
            holds(run, third, 2)
            refused(tmp_path, run, third.pid)
        finally:
            stop(third)
    finally:
        stop(first)


# ---------------------------------------------------------------------- upload staging


def upload(capsys, run: Path, *args: object) -> tuple[int, str, str]:
    return cli_output(capsys, "upload", "-r", run, "--dry-run", *args)


def test_upload_to_a_full_disk_keeps_the_earlier_staging(
    run: Path, small_disk: Callable[[int], Path], monkeypatch, tmp_path: Path, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)
    size = (run / "checkpoints" / "last.pth").stat().st_size
    disk = small_disk(size * 3 // 2 // 1024)  # room for one staged checkpoint, not two
    code, _, err = upload(capsys, run, "-e", "1", "--staging-dir", disk / "up")
    assert code == 0, err
    staged = disk / "up" / "tiny" / run.name
    before = {p.name: p.read_bytes() for p in staged.iterdir()}
    code, out, err = upload(capsys, run, "-e", "1", "-e", "2", "--staging-dir", disk / "up")
    assert code == 1 and out == ""
    assert error_line(err) == (
        f"error: {staged}: cannot write the staged folder: the disk is full; the earlier "
        "staging is kept; free space and upload again"
    )
    assert {p.name: p.read_bytes() for p in staged.iterdir()} == before
    assert temporaries(disk) == []


def test_upload_to_a_full_disk_leaves_no_empty_folders(
    run: Path, small_disk: Callable[[int], Path], monkeypatch, tmp_path: Path, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)
    disk = small_disk(1024)
    code, out, err = upload(capsys, run, "--staging-dir", disk / "up")
    staged = disk / "up" / "tiny" / run.name
    assert code == 1 and out == ""
    assert error_line(err) == (
        f"error: {staged}: cannot write the staged folder: the disk is full; nothing is "
        "staged; free space and upload again"
    )
    assert list(disk.iterdir()) == []  # neither up/ nor up/tiny/ nor the hidden folder


def test_a_run_file_that_cannot_be_read_is_no_failure_to_write_the_staging(
    run: Path, monkeypatch, tmp_path: Path, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)

    def unreadable(run: Path, epoch: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(run / "metrics.csv"))

    monkeypatch.setattr(staging, "validated_at", unreadable)
    code, out, err = upload(capsys, run, "-e", "1", "--staging-dir", tmp_path / "up")
    assert code == 1 and out == ""
    assert "cannot write the staged folder" not in err and "metrics.csv" in error_line(err)
    assert not (tmp_path / "up").exists()  # neither the hidden folder nor those made for it


def test_upload_to_a_read_only_folder_is_refused_before_staging(
    run: Path, read_only: Callable[[Path], Path], monkeypatch, tmp_path: Path, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)
    (tmp_path / "shared").mkdir()
    mounted = read_only(tmp_path / "shared")
    code, out, err = upload(capsys, run, "--staging-dir", mounted)
    assert code == 2 and out == ""
    assert err.startswith(f"error: --staging-dir {mounted}/tiny/{run.name}: cannot write in ")
    assert "(the file system is read-only)" in err and err.count("\n") == 1


def test_a_killed_upload_leaves_nothing_once_staged_again(
    run: Path, monkeypatch, tmp_path: Path, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)
    args = ["upload", "-r", run, "--dry-run", "--weights-only", "--with-deps"]
    parent = tmp_path / "upload" / "tiny"
    for _ in range(5):  # kill -9 while the hidden folder is being filled
        killed = sever(tmp_path, *args, "-e", "1", "-e", "2", "--best", "--last")
        while killed.poll() is None and not any(parent.glob(".*.tmp-*")):
            time.sleep(0.005)
        stop(killed)
        if any(parent.glob(".*.tmp-*")):
            break
        shutil.rmtree(tmp_path / "upload", ignore_errors=True)
    leftovers = temporaries(tmp_path / "upload")
    assert leftovers and leftovers[0].name.endswith(f".tmp-{fileio.HOST}-{killed.pid}")
    code, out, err = upload(capsys, run, "-e", "1")
    assert code == 0, err
    assert temporaries(tmp_path / "upload") == []
    assert [p.name for p in parent.iterdir()] == [run.name]
