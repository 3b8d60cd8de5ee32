"""Faults at every inference output, a catalogue: a full disk at each writer, a read-only
run, a writer killed mid-write and its leftovers, a folder no file can be created in.

The writers: predict's submission, saved probabilities (--save-probs), defect records
(--instances) and overlays; evaluate's report; export's model and manifest; average's
checkpoint; tune's YAML and its cache; pseudo-label's three files. Each full-disk case runs
the real command on a real, full tmpfs (`small_disk`) and asks for one line naming the
file and the full disk, the earlier outputs as they were and no temporary left behind.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sever import fileio
from sever.config import load_config
from sever.engine.trainer import train
from sever.inference import Ensemble
from sever.inference import predict as predicting
from sever.inference import tune as tuning
from tests.faults.conftest import fill
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow

SMALL = ["model.encoder=mobilenet_v2", "model.dropout=0"]  # quick to save and to load
OLD = "an earlier output\n"


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of one step, both kept (average needs two)."""
    folder = tmp_path_factory.mktemp("faults")
    overrides = [
        *SMALL,
        "trainer.epochs=2",
        "trainer.steps_per_epoch=1",
        "trainer.save_top_k=2",
        "trainer.tensorboard=false",
        "trainer.log_images=0",
    ]
    return train(load_config(write_tiny(folder, tiny_data), overrides))


@pytest.fixture
def low_threshold(tmp_path: Path) -> Path:
    """A post-processing that finds defects in an untrained model's probabilities."""
    path = tmp_path / "low.yml"
    path.write_text("threshold: 0.05\nmin_pixels: 0\n")
    return path


def temporaries(*folders: Path) -> list[Path]:
    """Every temporary file or folder of an atomic write below the folders."""
    return [p for f in folders for p in f.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------- a full disk at each writer


@dataclass(frozen=True)
class Full:
    """A command whose output goes to a full disk: `failing` must be named in one line
    saying the `what` cannot be written, the `kept` files (OLD before) stay as they were."""

    id: str
    args: str
    failing: str
    what: str
    kept: tuple[str, ...]


# {disk}: the full tmpfs; {tmp}: a roomy folder; {run}, {test} and {pp} (a low threshold)
FULL = [
    Full(
        "predict-submission",
        "predict -r {run} --images {test} --out {disk}/sub.csv --workers 0",
        "{disk}/sub.csv",
        "submission",
        ("{disk}/sub.csv",),
    ),
    Full(
        "predict-save-probs",
        "predict -r {run} --images {test} --out {tmp}/sub.csv --save-probs {disk}/probs "
        "--workers 0",
        "{disk}/probs",
        "saved probabilities",
        ("{tmp}/sub.csv",),
    ),
    Full(
        "predict-instances",
        "predict -r {run} --images {test} --out {tmp}/sub.csv --instances {disk}/d.jsonl "
        "--postprocess {pp} --workers 0",
        "{disk}/d.jsonl",
        "defect records",
        ("{tmp}/sub.csv", "{disk}/d.jsonl", "{disk}/d.csv"),
    ),
    Full(
        "predict-overlays",
        "predict -r {run} --images {test} --out {tmp}/sub.csv --overlays {disk}/ov --workers 0",
        "{disk}/ov/",
        "overlay",
        ("{tmp}/sub.csv",),
    ),
    Full(
        "evaluate-report",
        "evaluate -r {run} --out {disk}/r.json --workers 0",
        "{disk}/r.json",
        "report",
        ("{disk}/r.json",),
    ),
    Full(
        "evaluate-html",
        "evaluate -r {run} --out {tmp}/r.json --html {disk}/r.html --workers 0",
        "{disk}/r.html",
        "HTML report",
        ("{disk}/r.html",),
    ),
    Full(
        "export-onnx",
        "export -r {run} --out {disk}/m.onnx --check-images 2 --workers 0",
        "{disk}/m.onnx",
        "export",
        ("{disk}/m.onnx", "{disk}/m.onnx.json"),
    ),
    Full(
        "average-checkpoint",
        "average -r {run} --bn average --out {disk}/a.pth --device cpu",
        "{disk}/a.pth",
        "checkpoint",
        ("{disk}/a.pth",),
    ),
    Full(
        "tune-yaml",
        "tune -r {run} --out {disk}/pp.yml --cache-dir {tmp}/cache --workers 0",
        "{disk}/pp.yml",
        "tuned post-processing",
        ("{disk}/pp.yml",),
    ),
    Full(
        "tune-cache",
        "tune -r {run} --out {tmp}/pp.yml --cache-dir {disk}/cache --workers 0",
        "{disk}/cache/probs-",
        "cache of predicted probabilities",
        ("{tmp}/pp.yml",),
    ),
    Full(
        "pseudo-label",
        "pseudo-label -r {run} --images {test} --out {disk}/p.csv --workers 0",
        "{disk}/p-",  # images.txt, or summary.json when no image is kept (nothing to write)
        "pseudo-label file",
        ("{disk}/p.csv", "{disk}/p-images.txt", "{disk}/p-summary.json"),
    ),
]


@pytest.mark.parametrize("case", FULL, ids=lambda c: c.id)
def test_a_full_disk_is_one_line_and_keeps_the_earlier_output(
    case: Full,
    run: Path,
    tiny_data: Path,
    low_threshold: Path,
    small_disk: Callable[[int], Path],
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.chdir(tmp_path)
    disk = small_disk(256)
    names = {"disk": disk, "tmp": tmp_path, "run": run, "test": tiny_data / "test_images"}
    names["pp"] = low_threshold
    kept = [Path(k.format(**names)) for k in case.kept]
    for path in kept:
        path.write_text(OLD)
    filler = fill(disk)
    before = sorted(disk.rglob("*"))
    code, out, err = cli_output(capsys, *shlex.split(case.args.format(**names)))
    assert code == 1, err
    # (progress lines may come first, on stderr too: the work took a few seconds)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == err.splitlines()[-1:] and "Traceback" not in err, err
    assert errors[0].startswith(f"error: {case.failing.format(**names)}"), err
    assert errors[0].endswith(f": cannot write the {case.what}: the disk is full"), err
    assert [p.read_text() for p in kept] == [OLD] * len(kept)
    assert temporaries(disk, tmp_path) == []
    # nothing new on the disk but the folders an output goes in
    new = [p for p in sorted(disk.rglob("*")) if p not in before]
    assert all(p.is_dir() and not any(p.iterdir()) for p in new), new
    filler.unlink()


def test_a_failed_predict_leaves_none_of_the_folders_made_for_its_outputs(
    run: Path, tiny_data: Path, small_disk: Callable[[int], Path], capsys
) -> None:
    disk = small_disk(256)
    filler = fill(disk)
    args = f"predict -r {run} --images {tiny_data / 'test_images'} --out {disk}/new/sub.csv "
    code, out, err = cli_output(capsys, *shlex.split(args + f"--overlays {disk}/ov --workers 0"))
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith(f"error: {disk}/ov/"), err
    assert err.splitlines()[-1].endswith(": cannot write the overlay: the disk is full"), err
    assert sorted(disk.iterdir()) == [filler]  # neither new/ nor ov/


def test_a_read_error_while_tune_predicts_is_no_failure_to_write_its_cache(
    run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    def unreadable(ensemble, dataset):
        raise OSError(errno.EIO, "Input/output error", "train_images/0.jpg")
        yield  # a generator, as validation_batches is

    monkeypatch.setattr(tuning, "validation_batches", unreadable)
    with pytest.raises(OSError) as e:  # not "cannot write the cache of predicted ..."
        ensemble = Ensemble.from_runs([run], workers=0)
        tuning.tune_runs(ensemble, out=tmp_path / "pp.yml", cache=tmp_path / "cache")
    assert e.value.filename == "train_images/0.jpg"
    assert temporaries(tmp_path) == [] and not list((tmp_path / "cache").glob("probs-*"))


# ---------------------------------------------------------------- a read-only run


def test_evaluate_on_a_read_only_run_writes_its_report_here_and_says_so(
    run: Path, read_only: Callable[[Path], Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    mounted = read_only(run.parent)  # (the experiment folder: the run keeps its name)
    frozen = mounted / run.name
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_output(capsys, "evaluate", "-r", frozen, "--workers", 0)
    assert code == 0, err
    report = tmp_path / f"eval-{mounted.name}-{run.name}-model_best.json"
    assert out.splitlines()[-1] == f"wrote {report}" and report.is_file()
    said = [line for line in err.splitlines() if "goes to" in line]
    assert said == [
        f"evaluate's report goes to {tmp_path}: cannot write in {frozen} "
        "(the file system is read-only)"
    ]


def test_tune_on_a_read_only_run_caches_beside_its_output_and_says_so(
    run: Path, read_only: Callable[[Path], Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    frozen = read_only(run.parent) / run.name
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = cli_output(
        capsys, "tune", "-r", frozen, "--out", out_dir / "pp.yml", "--workers", 0
    )
    assert code == 0, err
    assert (out_dir / "pp.yml").is_file()
    assert [p.name for p in (out_dir / "cache").iterdir()][0].startswith("probs-")
    said = [line for line in err.splitlines() if "goes to" in line]
    assert said == [
        f"the cache of predicted probabilities goes to {out_dir}: cannot write in {frozen} "
        "(the file system is read-only)"
    ]
    # without --out: the YAML here too, named after the run
    code, out, err = cli_output(capsys, "tune", "-r", frozen, "--workers", 0)
    assert code == 0, err
    name = f"postprocess-tuned-{frozen.parent.name}-{run.name}.yml"
    assert (tmp_path / name).is_file() and (tmp_path / "cache").is_dir()
    assert len([line for line in err.splitlines() if "goes to" in line]) == 2  # out, cache


def test_an_output_in_a_read_only_folder_is_refused_before_any_model_runs(
    run: Path,
    tiny_data: Path,
    read_only: Callable[[Path], Path],
    tmp_path: Path,
    monkeypatch,
    capsys,
) -> None:
    (tmp_path / "src").mkdir()
    frozen = read_only(tmp_path / "src")
    ran: list[int] = []
    monkeypatch.setattr(predicting, "predict_batch", lambda *a, **k: ran.append(1))
    images = tiny_data / "test_images"
    for args in (
        ["predict", "-r", run, "--images", images, "--out", frozen / "sub.csv"],
        ["predict", "-r", run, "--images", images, "--out", "/proc/sub.csv"],
        [
            "predict",
            "-r",
            run,
            "--images",
            images,
            "--out",
            tmp_path / "s.csv",
            "--save-probs",
            frozen / "probs",
        ],  # fmt: skip
        ["evaluate", "-r", run, "--out", frozen / "r.json"],
        ["tune", "-r", run, "--cache-dir", frozen / "cache"],
    ):
        code, out, err = cli_output(capsys, *args)
        assert code == 2 and err.count("\n") == 1, err
        assert "(the file system is read-only)" in err or "cannot write in /proc" in err, err
    assert ran == [] and list(tmp_path.glob("*.csv")) == []


# ---------------------------------------------------------------- killed writers


def test_a_killed_predict_leaves_temporaries_the_next_one_removes(
    run: Path, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for copy in range(60):  # enough images to be killed in the middle of them
        for path in sorted((tiny_data / "test_images").iterdir()):
            (images / f"{copy}-{path.name}").write_bytes(path.read_bytes())
    args = ["predict", "-r", run, "--images", images, "--out", tmp_path / "sub.csv",
            "--save-probs", tmp_path / "probs", "--batch-size", 1, "--workers", 0]  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "sever", *map(str, args)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not any(p.glob("*.npz") for p in tmp_path.glob(".probs.tmp-*")):
        assert child.poll() is None and time.monotonic() < deadline, "predict ended too soon"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = temporaries(tmp_path)
    assert left and not (tmp_path / "probs").exists()
    code, out, err = cli_output(capsys, *args)
    assert code == 0, err
    assert temporaries(tmp_path) == []
    assert f"removed {left[0]}, left by an interrupted write" in err
    assert len(list((tmp_path / "probs").glob("*.npz"))) == 240


@dataclass(frozen=True)
class Leftover:
    """A command, and the temporaries a killed earlier run of it left: gone after it."""

    id: str
    args: str
    left: tuple[str, ...]  # names in {tmp}; a trailing / makes a folder


LEFTOVERS = [
    Leftover(
        "predict",
        "predict -r {run} --images {test} --out {tmp}/sub.csv --save-probs {tmp}/probs "
        "--instances {tmp}/d.jsonl --overlays {tmp}/ov --workers 0",
        (
            ".sub.csv.tmp-{pid}.csv",
            ".sub.csv.tmp-{pid}",  # an earlier sever's name, without the suffix
            ".sub.csv.tmp-{bare}.csv",  # an earlier sever's name, without the host
            ".probs.tmp-{pid}/",
            ".probs.old-{pid}/",
            ".d.jsonl.tmp-{pid}.jsonl",
            ".d.csv.tmp-{pid}.csv",
            "ov/.0.png.tmp-{pid}.png",
        ),
    ),
    Leftover(
        "export",
        "export -r {run} --out {tmp}/m.pt2 --check-images 2 --workers 0",
        (".m.pt2.tmp-{pid}.pt2", ".m.pt2.json.tmp-{pid}.json"),
    ),
    Leftover(
        "average",
        "average -r {run} --bn average --out {tmp}/a.pth --device cpu",
        (".a.pth.tmp-{pid}.pth",),
    ),
    Leftover(
        "evaluate", "evaluate -r {run} --out {tmp}/r.json --workers 0", (".r.json.tmp-{pid}.json",)
    ),
    Leftover(
        "tune",
        "tune -r {run} --out {tmp}/pp.yml --cache-dir {tmp}/cache --workers 0",
        (".pp.yml.tmp-{pid}.yml", "cache/.probs-{key}.tmp-{pid}/"),
    ),
    Leftover(
        "pseudo-label",
        "pseudo-label -r {run} --images {test} --out {tmp}/p.csv --workers 0",
        (".p.csv.tmp-{pid}.csv", ".p-images.txt.tmp-{pid}.txt", ".p-summary.json.tmp-{pid}.json"),
    ),
]


@pytest.mark.parametrize("case", LEFTOVERS, ids=lambda c: c.id)
def test_the_next_write_of_an_output_removes_what_a_killed_one_left(
    case: Leftover, run: Path, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    from sever.inference import Ensemble
    from sever.inference.tune import cache_key

    key = cache_key(Ensemble.from_runs([run], workers=0))
    pid = dead_pid()
    ours = f"{fileio.HOST}-{pid}"
    left = [tmp_path / name.format(pid=ours, bare=pid, key=key) for name in case.left]
    for name, path in zip(case.left, left, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir()
            path = path / "half.npz"
        path.write_text("half")
    names = {"tmp": tmp_path, "run": run, "test": tiny_data / "test_images"}
    code, out, err = cli_output(capsys, *shlex.split(case.args.format(**names)))
    assert code == 0, err
    assert [p for p in left if p.exists()] == []
    assert temporaries(tmp_path) == []
