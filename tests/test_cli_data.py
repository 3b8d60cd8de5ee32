"""The data commands end to end: `sever synth`, `sever check-data`, `sever config`.

Most run in-process through `sever.cli.main` (fast); a few go through `python -m sever` in a
subprocess to see exactly what a user sees: exit status, stderr, traceback or not.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sever.cli import main
from sever.config import load_config
from tests.support import cli_output

SMALL = ["--n-train", "20", "--n-test", "4", "--height", "64", "--width", "256"]


def run_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sever", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (content hash, mtime) of every file below `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return {str(p.relative_to(folder)): (digest[p], p.stat().st_mtime_ns) for p in files}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A dataset written by `sever synth`; tests that change it copy it first."""
    out = tmp_path_factory.mktemp("cli") / "data"
    main(["synth", str(out), *SMALL])
    return out


# ---------------------------------------------------------------- synth


def test_synth_writes_the_layout(tmp_path: Path, capsys):
    out = tmp_path / "data"
    code, stdout, stderr = cli_output(capsys, "synth", out, *SMALL, "--format", "wide")
    assert code == 0 and stderr == ""
    assert stdout.splitlines()[-1] == f"wrote {out}"
    assert "train_images: 20" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "sample_submission.csv",
        "test_images",
        "train.csv",
        "train_images",
    ]
    assert len(list((out / "train_images").glob("*.jpg"))) == 20
    assert len(list((out / "test_images").glob("*.jpg"))) == 4
    lines = (out / "train.csv").read_text().splitlines()
    assert lines[0] == "ImageId_ClassId,EncodedPixels" and len(lines) == 1 + 4 * 20
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left


def test_synth_refuses_a_non_empty_folder(dataset: Path, capsys):
    before = snapshot(dataset)
    code, stdout, stderr = cli_output(capsys, "synth", dataset, *SMALL, "--seed", "1")
    assert code == 1 and stdout == ""
    assert stderr == f"error: {dataset}: already exists and is not empty; choose another folder\n"
    assert snapshot(dataset) == before
    assert sorted(p.name for p in dataset.parent.iterdir()) == ["data"]


def test_synth_refusal_as_a_user_sees_it(dataset: Path):
    before = snapshot(dataset)
    result = run_process("synth", dataset, *SMALL, cwd=dataset.parent)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert snapshot(dataset) == before


# ---------------------------------------------------------------- check-data


def test_check_data_clean(dataset: Path, capsys):
    code, stdout, stderr = cli_output(capsys, "check-data", dataset)
    assert code == 0 and stderr == ""
    assert "images: 20" in stdout and "test images: 4" in stdout
    assert stdout.splitlines()[-1] == f"{dataset}: no problems found"


def copy_of(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "data"))


def test_check_data_lists_problems(dataset: Path, tmp_path: Path, capsys):
    data = copy_of(dataset, tmp_path)
    rows = (data / "train.csv").read_text().splitlines()
    image = rows[1].split(",")[0]
    (data / "train_images" / image).unlink()
    (data / "train.csv").write_text("\n".join([*rows, rows[1]]) + "\n")  # and a duplicate
    code, stdout, stderr = cli_output(capsys, "check-data", data)
    assert code == 1
    # the problems are the report, on stdout; stderr holds the one line of the verdict
    problems = [line for line in stdout.splitlines() if line.startswith("problem: ")]
    csv = data / "train.csv"
    missing = f"{csv}: line 2: ImageId {image}: no such file in {data / 'train_images'}"
    duplicate = (
        f"{csv}: line {len(rows) + 1}: ImageId {image} ClassId {rows[1].split(',')[1]}: "
        "duplicate (image, class) row"
    )
    assert problems == [f"problem: {missing}", f"problem: {duplicate}"]  # by line
    assert stderr == f"error: {data}: 2 problems found, the first: {missing}\n"
    assert "no problems found" not in stdout


def test_check_data_fast_skips_decoding(dataset: Path, tmp_path: Path, capsys):
    data = copy_of(dataset, tmp_path)
    broken = sorted((data / "train_images").iterdir())[-1]
    broken.write_bytes(b"not an image")
    assert cli_output(capsys, "check-data", data, "--fast")[0] == 0
    code, stdout, stderr = cli_output(capsys, "check-data", data)
    assert code == 1 and f"problem: {broken}: not a readable image" in stdout.splitlines()
    assert stderr == f"error: {data}: 1 problem found, the first: {broken}: not a readable image\n"


def test_check_data_missing_folder(tmp_path: Path, capsys):
    code, _, stderr = cli_output(capsys, "check-data", tmp_path / "nowhere")
    assert (code, stderr) == (1, f"error: {tmp_path / 'nowhere'}: data folder not found\n")


# ---------------------------------------------------------------- config


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "x.yml"
    path.write_text("name: x\ntrainer:\n  epochs: 10\n")
    return path


def test_config_prints_the_resolved_yaml(experiment: Path, tmp_path: Path, capsys):
    code, stdout, stderr = cli_output(capsys, "config", "-c", experiment, "-o", "trainer.epochs=3")
    assert code == 0 and stderr == ""
    printed = yaml.safe_load(stdout)
    assert printed["name"] == "x" and printed["trainer"]["epochs"] == 3
    # and it is a valid config in its own right
    resolved = tmp_path / "resolved.yml"
    resolved.write_text(stdout)
    assert load_config(resolved).trainer.epochs == 3


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (
            "name: x\ntrainer:\n  epoks: 3\n",
            [],
            "{file}: unknown key 'trainer.epoks' (did you mean 'trainer.epochs'?)",
        ),
        (
            "name: x\ntrainer:\n  epochs: zero\n",
            [],
            "{file}: trainer.epochs: expected an integer, got 'zero'",
        ),
        (
            "name: x\n",
            ["-o", "data.crop=[256,300]"],
            "-o data.crop=[256,300]: data.crop: 300 is not a multiple of 32 (nearest valid: "
            "288 or 320)",
        ),
    ],
)
def test_config_error_is_one_line(tmp_path: Path, capsys, text, overrides, message):
    path = tmp_path / "x.yml"
    path.write_text(text)
    code, stdout, stderr = cli_output(capsys, "config", "-c", path, *overrides)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: " + message.format(file=path))
    assert stderr.count("\n") == 1 and stderr.endswith("\n")


def test_config_error_traceback_only_with_debug(tmp_path: Path):
    path = tmp_path / "x.yml"
    path.write_text("name: x\ntrainer:\n  epoks: 3\n")
    plain = run_process("config", "-c", path, cwd=tmp_path)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == (
        f"error: {path}: unknown key 'trainer.epoks' (did you mean 'trainer.epochs'?)\n"
    )
    # --debug is accepted after the subcommand too
    debug = run_process("config", "-c", path, "--debug", cwd=tmp_path)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConfigError: " in debug.stderr and "trainer.epoks" in debug.stderr
