"""sever.progress: a bar on a terminal, plain lines (done / total, rate, time left) elsewhere."""

from __future__ import annotations

import io
import logging
import math
import os
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from sever import progress
from sever.errors import ConfigError
from sever.logsetup import setup_logging
from sever.progress import Tracker, duration, tqdm_replaced
from tests.kaggle.stub import serve_kaggle, without_credentials
from tests.support import cli_output, write_tiny

LINE = re.compile(
    r"^(?P<desc>.+): (?P<done>[\d.]+)/(?P<total>[\d.]+) (?P<unit>\S+) \((?P<pct>\d+)%\)"
)


@pytest.fixture
def clock(monkeypatch):
    """A fake monotonic clock: clock.now = seconds."""
    state = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(progress.time, "monotonic", lambda: state.now)
    return state


@pytest.fixture
def logged(capsys):
    """Call logged() to set up sever's logging as the CLI does (to the captured stderr, so
    inside the test); it returns a reader of the lines logged since."""

    def start():
        setup_logging()
        return lambda: capsys.readouterr().err.splitlines()

    return start


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (44.6, "45s"), (185, "3m05s"), (3600 * 2 + 7 * 60, "2h07m")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_plain_lines_every_interval_with_rate_and_time_left(clock, logged) -> None:
    read = logged()
    # 400 images; 30 s between lines. After 40 s, 100 done: 2.5 images/s, 300 left: 2m00s.
    with Tracker(400, "predict", "images", interval=30, terminal=False) as bar:
        clock.now += 20
        bar.update(50)  # 20 s: not yet a line
        clock.now += 20
        bar.update(50)  # 40 s: a line
        clock.now += 10
        bar.update(100)  # 50 s: 10 s since the last line, none
        clock.now += 30
        bar.update(120)  # 80 s: 320 done, 4 images/s, 80 left: 20 s
        clock.now += 20
        bar.update(80)
    assert read() == [
        "predict: 100/400 images (25%), 2.50 images/s, 2m00s left",
        "predict: 320/400 images (80%), 4.00 images/s, 20s left",
        "predict: 400 images in 1m40s (4.00 images/s)",
    ]


def test_bytes_show_in_megabytes_and_postfix_values_follow(clock, logged) -> None:
    read = logged()
    with Tracker(50_000_000, "upload model.pth", "B", interval=0, terminal=False) as bar:
        clock.now += 4
        bar.set_postfix(loss="0.1234")
        bar.update(10_000_000)  # 2.5 MB/s, 40 MB left: 16 s
    assert read()[0] == "upload model.pth: 10.0/50.0 MB (20%), 2.5 MB/s, 16s left, loss 0.1234"


def test_iterating_counts_items_and_leave_false_has_no_closing_line(clock, logged) -> None:
    read = logged()
    items = list(Tracker(3, "epoch 1/4", "batches", iterable="abc", leave=False, interval=0))
    assert items == ["a", "b", "c"]
    assert [LINE.match(line)["done"] for line in read()] == ["1", "2", "3"]


def test_a_terminal_gets_a_bar_and_no_lines(monkeypatch, logged) -> None:
    read = logged()
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    with Tracker(4, "predict", "images", interval=0) as bar:
        assert bar.bar is not None
        bar.update(4)
    err = "\n".join(read())
    assert "4/4" in err and "images in" not in err  # tqdm's bar, not the plain lines


def test_failed_work_has_no_closing_line(clock, logged) -> None:
    read = logged()
    with pytest.raises(RuntimeError), Tracker(4, "predict", "images", interval=60) as bar:
        bar.update(1)
        raise RuntimeError("stop")
    assert read() == []


def test_quietened_logging_shows_nothing(clock, logged) -> None:
    read = logged()
    logging.getLogger("sever").setLevel(logging.WARNING)  # what DDP ranks other than 0 do
    try:
        with Tracker(4, "predict", "images", interval=0) as bar:
            bar.update(4)
    finally:
        logging.getLogger("sever").setLevel(logging.DEBUG)
    assert read() == []


def test_without_severs_logging_lines_go_to_stderr(clock, capsys, monkeypatch) -> None:
    # sever's Python API in a notebook cell: nobody called setup_logging
    sever = logging.getLogger("sever")
    monkeypatch.setattr(sever, "handlers", [])
    monkeypatch.setattr(sever, "level", logging.NOTSET)
    with Tracker(2, "predict", "images", interval=0, terminal=False) as bar:
        clock.now += 1
        bar.update(2)
    assert capsys.readouterr().err.splitlines() == [
        "predict: 2/2 images (100%), 2.00 images/s, 0s left",
        "predict: 2 images in 1s (2.00 images/s)",
    ]


def test_a_librarys_tqdm_goes_through_the_tracker(clock, logged) -> None:
    read = logged()
    # The kaggle client calls tqdm(total=..., unit="B", ...) and update(n) per chunk.
    library = types.SimpleNamespace(tqdm=lambda **kwargs: pytest.fail("not replaced"))
    with tqdm_replaced(library, lambda: "download x.zip"):
        with library.tqdm(total=2_000_000, initial=0, unit="B", disable=False) as bar:
            clock.now += 2
            bar.update(2_000_000)
    assert read() == ["download x.zip: 2.0 MB in 2s (1.0 MB/s)"]


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_interval_is_one_line_before_any_work(monkeypatch, capsys, tmp_path, value) -> None:
    monkeypatch.setenv("SEVER_PROGRESS_INTERVAL", value)
    with pytest.raises(ConfigError, match="SEVER_PROGRESS_INTERVAL"):
        progress.interval_from_env()
    code, out, err = cli_output(capsys, "synth", tmp_path / "data", "--n-train", "2")
    assert code == 2 and not (tmp_path / "data").exists()
    assert err.strip() == (
        f"error: SEVER_PROGRESS_INTERVAL={value}: expected seconds between progress lines "
        "(a number >= 0, default 30)"
    )


# ------------------------------------------------- every long command, off a terminal


def progress_lines(err: str, desc: str) -> list[tuple[float, float]]:
    """(done, total) of each plain progress line of `desc` in `err`."""
    found = []
    for line in err.splitlines():
        match = LINE.match(line)
        if match and match["desc"] == desc:
            found.append((float(match["done"]), float(match["total"])))
    return found


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`sever train` in a subprocess whose stderr is a pipe, as in a notebook's `!` cell or a
    job log, with 2 loader workers and a class head: (run directory, its stderr)."""
    folder = tmp_path_factory.mktemp("progress")
    config = write_tiny(folder, tiny_data)
    overrides = [
        "trainer.epochs=1",
        "trainer.steps_per_epoch=3",
        "trainer.log_every=100",
        "data.workers=2",
        "model.class_head.enabled=true",
    ]
    command = [sys.executable, "-m", "sever", "train", "-c", config]
    command += [a for o in overrides for a in ("-o", o)]
    env = {**os.environ, "SEVER_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    run = Path(done.stdout.strip().splitlines()[-1].removeprefix("run: "))
    return run, done.stderr


@pytest.fixture
def every_line(monkeypatch) -> None:
    monkeypatch.setenv("SEVER_PROGRESS_INTERVAL", "0")


@pytest.mark.slow
def test_train_shows_each_epoch_and_validation(trained) -> None:
    run, err = trained
    assert progress_lines(err, "epoch 1/1") == [(1, 3), (2, 3), (3, 3)]
    val = len(pd.read_csv(run / "split.csv").query("split == 'val'"))
    batches = math.ceil(val / 4)  # trainer.batch_size 4
    assert progress_lines(err, "validate 1") == [(k, batches) for k in range(1, batches + 1)]
    assert "loss" in [line for line in err.splitlines() if line.startswith("epoch 1/1: 3/3")][0]


@pytest.mark.slow
def test_predict_evaluate_tune_and_pseudo_label_show_progress(
    trained, tiny_data: Path, tmp_path: Path, capsys, every_line
) -> None:
    run, _ = trained
    model = ["-r", run, "--workers", "2", "--batch-size", "1", "--device", "cpu"]
    images = ["--images", tiny_data / "test_images"]
    code, _, err = cli_output(capsys, "predict", *model, *images, "--out", tmp_path / "s.csv")
    assert code == 0, err
    assert progress_lines(err, "predict") == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "predict: 4 images in" in err

    code, _, err = cli_output(capsys, "evaluate", *model)
    assert code == 0, err
    val = len(pd.read_csv(run / "split.csv").query("split == 'val'"))
    assert progress_lines(err, "evaluate") == [(k, val) for k in range(1, val + 1)]

    code, _, err = cli_output(capsys, "tune", *model, "--out", tmp_path / "pp.yml")
    assert code == 0, err
    assert progress_lines(err, f"tune: predict {run.name}")[-1] == (val, val)

    out = tmp_path / "pseudo.csv"
    code, _, err = cli_output(capsys, "pseudo-label", *model, *images, "--out", out)
    assert code == 0, err
    assert progress_lines(err, "pseudo-label") == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.slow
def test_upload_and_download_show_the_kaggle_clients_progress(
    trained, tiny_data: Path, tmp_path: Path, monkeypatch, capsys, every_line
) -> None:
    run, _ = trained
    without_credentials(monkeypatch, tmp_path)
    with serve_kaggle(monkeypatch, tmp_path) as stub:
        code, _, err = cli_output(capsys, "upload", "-r", run, "--weights-only")
        assert code == 0, err
        size = (tmp_path / "upload" / "tiny" / run.name / "model_best.pth").stat().st_size
        sent = [line for line in err.splitlines() if line.startswith("upload model_best.pth: ")]
        assert sent[-1].startswith(f"upload model_best.pth: {size / 1e6:.1f} MB in ")
        assert progress_lines(err, "upload model_best.pth")  # done / total lines too

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(tiny_data.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(tiny_data).as_posix())
        stub.files["severstal-steel-defect-detection"] = buffer.getvalue()
        code, _, err = cli_output(capsys, "download", tmp_path / "data")
        assert code == 0, err
        lines = progress_lines(err, "download severstal-steel-defect-detection.zip")
        assert lines and lines[-1][0] == lines[-1][1]  # the last line: all of it
