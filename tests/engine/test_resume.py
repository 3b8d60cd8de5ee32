"""Interrupted runs resume exactly, with the recipes' own settings: loader workers, dropout,
heavy-crop augmentation and EMA weights.

Each scenario runs `sever train` in its own process group, as a terminal or a job
scheduler would, stops it (kill -9 at a random moment, Ctrl-C in the first or a later
epoch, SIGTERM, Ctrl-C twice), resumes it with `sever train --resume RUN`, and compares
the weights and metrics.csv with a run that was never interrupted.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sever.engine.interrupt import StopRequest
from sever.engine.steps import LoaderStopped, until_stopped
from tests.support import write_tiny

pytestmark = pytest.mark.slow

# The recipes' settings that break naive resumption: workers, dropout, EMA (heavy-crop is
# the tiny config's augmentation already). Three short epochs of 4 steps.
RECIPE = [
    "data.workers=2",
    "model.dropout=0.2",
    "trainer.ema=0.9",
    "trainer.epochs=3",
    "trainer.steps_per_epoch=4",
    "trainer.log_every=1",
    "trainer.save_period=1",
]


def sever_process(folder: Path, *args: str) -> subprocess.Popen:
    """`python -m sever ARGS` in a new session (its own process group), stderr piped."""
    overrides = [a for o in RECIPE for a in ("-o", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sever", *args, *overrides],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def train_run(folder: Path, *args: str) -> Path:
    """Train to the end; the run directory."""
    code, out, err = finish(sever_process(folder, "train", *args))
    assert code == 0, err
    return Path(out.strip().splitlines()[-1].removeprefix("run: "))


def run_folder(saved: Path) -> Path:
    (run,) = (saved / "tiny").iterdir()
    return run


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    """Read the process's stderr until a line contains `text`; the lines read."""
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never appeared:\n{''.join(lines)}")


def metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def assert_same_run(run: Path, reference: Path) -> None:
    """Same final weights (plain and EMA) to 1e-6, and the same metrics.csv."""
    a = torch.load(reference / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 12)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=0, atol=1e-6, msg=key)
    assert metrics(run) == metrics(reference)
    assert not list(run.rglob(".*.tmp-*")), "a temporary file was left behind"
    assert not (run / "checkpoints" / "interrupted.pth").exists()


@pytest.fixture(scope="module")
def uninterrupted(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    tiny = write_tiny(folder, tiny_data)
    return train_run(folder, "-c", str(tiny))


@pytest.fixture
def tiny(tiny_data: Path, tmp_path: Path) -> Path:
    return write_tiny(tmp_path, tiny_data)


def resume(run: Path) -> tuple[int, str, str]:
    return finish(sever_process(run.parent.parent.parent, "train", "--resume", str(run)))


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_moment_then_resume(tiny: Path, uninterrupted: Path, seed: int):
    process = sever_process(tiny.parent, "train", "-c", str(tiny))
    wait_for_line(process, "epoch 1 step 1/")  # training has started: imports are done
    time.sleep(random.Random(seed).uniform(0.0, 12.0))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    run = run_folder(tiny.parent / "saved")
    code, out, err = resume(run)
    assert code == 0, err
    assert out.strip().endswith(f"run: {run}")
    assert_same_run(run, uninterrupted)


@pytest.mark.parametrize("epoch", [1, 2])
def test_ctrl_c_mid_epoch_saves_a_resumable_state(tiny: Path, uninterrupted: Path, epoch: int):
    process = sever_process(tiny.parent, "train", "-c", str(tiny))
    wait_for_line(process, f"epoch {epoch} step 2/")
    os.killpg(process.pid, signal.SIGINT)  # the whole group, workers too, like a terminal
    code, _, err = finish(process)
    assert code == 130, err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"stopped by SIGINT in epoch {epoch} after ")
    assert "Traceback" not in err
    run = run_folder(tiny.parent / "saved")
    assert last_line.endswith(f"resume with: sever train --resume {run}")
    checkpoints = run / "checkpoints"
    state = torch.load(checkpoints / "interrupted.pth", weights_only=True)
    assert state["epoch"] == epoch - 1 and state["partial"]["epoch"] == epoch
    assert 0 < state["partial"]["batches"] < 4
    # nothing labelled as an epoch that is not one
    epochs = sorted(p.name for p in checkpoints.glob("checkpoint-epoch*.pth"))
    assert epochs == [f"checkpoint-epoch{e}.pth" for e in range(1, epoch)]
    if epoch > 1:
        assert torch.load(checkpoints / "last.pth", weights_only=True)["epoch"] == epoch - 1
    code, out, err = resume(run)
    assert code == 0, err
    assert f"resumed in epoch {epoch} after {state['partial']['batches']} batches" in err
    assert_same_run(run, uninterrupted)


def test_sigterm_to_every_process_mid_epoch(tiny: Path, uninterrupted: Path):
    """As Slurm's scancel does: the loader's workers die of it, the trainer stops at the
    last optimiser step and saves it."""
    process = sever_process(tiny.parent, "train", "-c", str(tiny))
    wait_for_line(process, "epoch 2 step 2/")
    os.killpg(process.pid, signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM in epoch 2 after ")
    run = run_folder(tiny.parent / "saved")
    assert (run / "checkpoints" / "interrupted.pth").is_file()
    code, _, err = resume(run)
    assert code == 0, err
    assert_same_run(run, uninterrupted)


def test_sigterm_during_validation_finishes_the_epoch(tiny: Path, uninterrupted: Path):
    process = sever_process(tiny.parent, "train", "-c", str(tiny))
    wait_for_line(process, "epoch 1 step 4/4")  # the last step: validation comes next
    os.kill(process.pid, signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("stopped by SIGTERM after epoch 1, kept in checkpoints/last.pth")
    )
    run = run_folder(tiny.parent / "saved")
    assert not (run / "checkpoints" / "interrupted.pth").exists()
    assert [row["epoch"] for row in metrics(run)] == ["1"]
    code, _, err = resume(run)
    assert code == 0, err
    assert_same_run(run, uninterrupted)


def test_ctrl_c_twice_stops_at_once_and_keeps_the_last_epoch(tiny: Path, uninterrupted: Path):
    process = sever_process(tiny.parent, "train", "-c", str(tiny))
    wait_for_line(process, "epoch 2 step 1/")
    os.killpg(process.pid, signal.SIGINT)
    wait_for_line(process, "Ctrl-C again to stop at once")
    os.killpg(process.pid, signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130 and "Traceback" not in err
    run = run_folder(tiny.parent / "saved")
    checkpoints = run / "checkpoints"
    # either the second signal came before the first safe point, or the state was saved
    if not (checkpoints / "interrupted.pth").exists():
        assert torch.load(checkpoints / "last.pth", weights_only=True)["epoch"] == 1
    code, _, err = resume(run)
    assert code == 0, err
    assert_same_run(run, uninterrupted)


# ---------------------------------------------------------------- the rules of --resume


@pytest.fixture(scope="module")
def finished_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 2-epoch run of one step per epoch (in-process)."""
    from sever.config import load_config
    from sever.engine.trainer import train

    folder = tmp_path_factory.mktemp("finished")
    config = load_config(
        write_tiny(folder, tiny_data), ["trainer.epochs=2", "trainer.steps_per_epoch=1"]
    )
    return train(config)


def test_resuming_a_finished_run_says_so_in_one_line(finished_run: Path, capsys) -> None:
    from tests.support import cli_output

    before = snapshot(finished_run)
    code, out, err = cli_output(capsys, "train", "--resume", finished_run)
    assert code == 0
    assert err.strip() == (
        f"{finished_run}: already finished: epoch 2 of trainer.epochs 2; to train longer, "
        "resume with -o trainer.epochs=3 (or more)"
    )
    assert out.strip() == f"run: {finished_run}"
    assert snapshot(finished_run) == before


def test_a_kill_after_the_last_checkpoint_is_made_good_by_resuming(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    """kill -9 after the final epoch's last.pth, before its links and its metrics.csv row
    (where the random kill above lands when it comes at the run's very end): the run is
    finished, and resuming it says so and does what the kill left undone."""
    import shutil

    from tests.support import cli_output

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    checkpoints = run / "checkpoints"
    rows = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text("".join(rows.splitlines(keepends=True)[:-1]))
    (checkpoints / "checkpoint-epoch2.pth").unlink()
    writer = subprocess.Popen(["true"])  # the killed writer: a PID that runs no more
    writer.wait()
    leftover = run / f".metrics.csv.tmp-{writer.pid}.csv"
    leftover.write_text("epoch,train_loss\n2,0.")
    code, out, err = cli_output(capsys, "train", "--resume", run)
    assert code == 0, err
    assert out.strip() == f"run: {run}"
    assert f"{run}: already finished: epoch 2 of trainer.epochs 2" in err
    assert (run / "metrics.csv").read_text() == rows
    assert os.path.samefile(checkpoints / "last.pth", checkpoints / "checkpoint-epoch2.pth")
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.encoder=resnet34", "model.encoder"),
        ("model.classes=3", "model.classes"),
        ("optimizer.encoder.lr=0.1", "optimizer.encoder.lr"),
        ("scheduler.type=constant", "scheduler.type"),
        ("data.val_fraction=0.5", "data.val_fraction"),
        ("scheduler.plateau_factor=0.3", "scheduler.plateau_factor"),
    ],
)
def test_resume_refuses_overrides_the_checkpoint_fixes(
    finished_run: Path, capsys, override: str, key: str
) -> None:
    from tests.support import cli_output

    before = snapshot(finished_run)
    code, _, err = cli_output(capsys, "train", "--resume", finished_run, "-o", override)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: -o {key}: a run resumes with its own {key} (")
    assert f"start a new run instead: sever train -c {finished_run / 'config.yml'}" in err
    assert snapshot(finished_run) == before


def test_a_mid_epoch_stop_keeps_its_batches(finished_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from tests.support import cli_output

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    state |= {"epoch": 1, "partial": {"epoch": 2, "batches": 1, "sums": {}}}
    torch.save(state, run / "checkpoints" / "interrupted.pth")
    code, _, err = cli_output(capsys, "train", "--resume", run, "-o", "trainer.batch_size=2")
    assert code == 2
    assert err.startswith(
        "error: -o trainer.batch_size: a run stopped mid-epoch resumes with its own "
        "trainer.batch_size (4);"
    )


def test_resume_records_what_is_run_and_cleans_leftovers(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from sever.config import load_config
    from tests.support import cli_output

    run = tmp_path / "run"
    shutil.copytree(fresh_run(tiny_data, tmp_path), run, copy_function=os.link)
    leftover = run / "checkpoints" / ".last.pth.tmp-12345"
    leftover.write_bytes(b"half a checkpoint")
    code, out, err = cli_output(
        capsys, "train", "--resume", run, "-o", "trainer.epochs=2", "-o", "trainer.save_top_k=1"
    )
    assert code == 0, err
    assert not leftover.exists()
    recorded = load_config(run / "config.yml")
    assert (recorded.trainer.epochs, recorded.trainer.save_top_k) == (2, 1)
    assert [row["epoch"] for row in metrics(run)] == ["1", "2"]


def fresh_run(tiny_data: Path, folder: Path) -> Path:
    """A run of one epoch with one step."""
    from sever.config import load_config
    from sever.engine.trainer import train

    config = load_config(
        write_tiny(folder, tiny_data), ["trainer.epochs=1", "trainer.steps_per_epoch=1"]
    )
    return train(config)


def test_a_run_killed_before_its_first_checkpoint_starts_over(
    tiny_data: Path, tmp_path: Path, capsys
) -> None:
    from sever.config import load_config
    from sever.engine.runs import create_run_dir
    from tests.support import cli_output

    config = load_config(
        write_tiny(tmp_path, tiny_data), ["trainer.epochs=1", "trainer.steps_per_epoch=1"]
    )
    run = create_run_dir(config)  # what a kill -9 in the first epoch leaves
    (tmp_path / "reference").mkdir()
    reference = fresh_run(tiny_data, tmp_path / "reference")
    code, out, err = cli_output(capsys, "train", "--resume", run)
    assert code == 0, err
    assert out.strip() == f"run: {run}"
    a = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(reference / "checkpoints" / "last.pth", weights_only=True)
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=0, atol=0, msg=key)


def test_resume_of_something_else_is_one_line(tmp_path: Path, capsys) -> None:
    from tests.support import cli_output

    code, _, err = cli_output(capsys, "train", "--resume", tmp_path)
    assert code == 1
    assert err == (
        f"error: {tmp_path}: not a run directory (no config.yml); give --resume a run "
        "directory (saved/NAME/STAMP) or one of its checkpoints\n"
    )
    code, _, err = cli_output(capsys, "train", "--resume", tmp_path / "nothing")
    assert err == f"error: {tmp_path / 'nothing'}: no such run directory or checkpoint (--resume)\n"


def test_relink_redoes_the_links_a_kill_left_out(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    from sever.engine.saver import CheckpointSaver

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    checkpoints = run / "checkpoints"
    state = torch.load(checkpoints / "last.pth", weights_only=True)
    saver = CheckpointSaver(checkpoints, "max", 3, 1)
    saver.load_state_dict(state["saver"])
    # killed after writing last.pth of epoch 2, before linking it
    (checkpoints / "checkpoint-epoch2.pth").unlink()
    if saver.best_epoch == 2:
        shutil.copy(checkpoints / "checkpoint-epoch1.pth", checkpoints / "model_best.pth")
    saver.relink(2)
    assert os.path.samefile(checkpoints / "last.pth", checkpoints / "checkpoint-epoch2.pth")
    best = torch.load(checkpoints / "model_best.pth", weights_only=True)
    assert best["epoch"] == saver.best_epoch


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("error", [RuntimeError, ConnectionResetError, EOFError])
def test_a_loader_that_dies_after_a_stop_request_is_the_stop(error: type[Exception]):
    """SIGTERM to the group kills the loader's workers: the next fetch fails with torch's
    RuntimeError or, mid-transfer, the pipe's own error (seen on CI as ConnectionResetError
    [Errno 104]); after a stop request each is the stop, before one it is a real error."""

    def batches():
        yield 1
        raise error("worker gone")

    stop = StopRequest()
    with pytest.raises(error):
        list(until_stopped(batches(), stop))
    stop.signum = signal.SIGTERM
    with pytest.raises(LoaderStopped):
        list(until_stopped(batches(), stop))


LOCK_PROBE = """
import fcntl, os, sys
try:
    handle = os.open(sys.argv[1], os.O_RDWR)
except FileNotFoundError:
    sys.exit(print("no lock file"))
try:
    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(print("held"))
print("free")
"""


def lock_state(run: Path) -> str:
    """What another process finds of the run's lock: held, free or no lock file (a lock of
    this process cannot be seen from inside it: lockf's locks are per process)."""
    probe = [sys.executable, "-c", LOCK_PROBE, str(run / ".lock")]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    ("given", "overrides", "code"),
    [
        ("run", [], 0),  # finished: says so
        ("checkpoint", [], 0),
        ("run", ["-o", "model.encoder=resnet34"], 2),  # refused after the read
    ],
)
def test_the_run_is_locked_before_it_is_read(
    finished_run: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,
    given: str,
    overrides: list[str],
    code: int,
) -> None:
    """Another process that saves an epoch and ends between this one's read of the run and
    its lock would leave this one resuming from the older state: the lock comes first, and
    goes on every way out, an error before training included."""
    import shutil

    from sever.engine import resume
    from tests.support import cli_output

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    read, seen = resume.find_resume_point, []

    def find_resume_point(path: Path) -> resume.ResumePoint:
        seen.append(lock_state(run))
        return read(path)

    monkeypatch.setattr(resume, "find_resume_point", find_resume_point)
    path = run if given == "run" else run / "checkpoints" / "checkpoint-epoch1.pth"
    got, _, err = cli_output(capsys, "train", "--resume", path, *overrides)
    assert got == code, err
    assert seen == ["held"]
    assert lock_state(run) == "free"
