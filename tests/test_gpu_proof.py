"""bench/gpu_proof.py, the one-command proof for the GPU machine: its dry run end to end on
the CPU (every step recorded with its figures), and by hand the pieces that make it degrade
gracefully: time limits that stop a whole process group, a failing or late step recorded
rather than fatal, the fp32/bf16 comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sever.config import load_config
from sever.kaggle.wheels import build_wheel

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_proof.py"
spec = importlib.util.spec_from_file_location("gpu_proof", SCRIPT)
proof_module = importlib.util.module_from_spec(spec)
sys.modules["gpu_proof"] = proof_module  # dataclasses look their module up
spec.loader.exec_module(proof_module)
VARIANTS = proof_module.VARIANTS
BENCH_FIGURES = (
    "loader_samples_per_s",
    "compute_images_per_s",
    "step_images_per_s",
    "flops_per_image",
    "peak_memory_bytes",
)


@pytest.mark.slow
def test_dry_run_records_every_step(tmp_path: Path) -> None:
    # A tiny pure-Python wheel stands in for .whl/: the install path the GPU run takes.
    wheels = tmp_path / "wheels"
    build_wheel("six", wheels)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--wheels", str(wheels), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_proof.json").read_text())
    assert (out / "gpu_proof.log").stat().st_size > 0
    assert report["dry_run"] is True

    wheels_entry = report["wheels"]
    assert wheels_entry["status"] == "ok"
    assert [name.split("-")[0] for name in wheels_entry["wheels"]] == ["six"]
    assert "segmentation-models-pytorch" in wheels_entry["missing"]
    environment = report["environment"]
    assert environment["status"] == "ok"
    assert Path(environment["sever_path"]) == SCRIPT.parent.parent / "sever"  # the checkout
    assert environment["versions"]["segmentation_models_pytorch"][0].isdigit()
    assert report["synth"]["status"] == "ok"

    assert set(report["bench"]) == {"fpn-b5", "fpn-se_resnext50"}
    for model, variants in report["bench"].items():
        assert set(variants) == set(proof_module.VARIANTS)
        for name, entry in variants.items():
            assert entry["status"] == "ok", (model, name, entry)
            assert all(entry[key] > 0 for key in BENCH_FIGURES), (model, name)
            assert entry["mfu"] is None and entry["mfu_note"]  # CPU: no MFU
            assert entry["variant"]["compile"] == name.endswith("compile")
    compiled = report["bench"]["fpn-b5"]["bf16_channels_last_compile"]
    assert (
        compiled["compile_fell_back"] is False
        and "TORCH_COMPILE_DISABLE" in compiled["compile_note"]
    )
    assert report["bench"]["fpn-b5"]["fp32"]["variant"] == {
        "amp": "off",
        "channels_last": False,
        "compile": False,
    }

    train = report["train"]
    for precision in ("fp32", "bf16"):
        assert train[precision]["status"] == "ok"
        assert [row["epoch"] for row in train[precision]["curve"]] == [1, 2]
    comparison = train["comparison"]
    assert comparison["status"] == "ok" and comparison["epochs"] == [2, 2]
    assert isinstance(comparison["within_tolerance"], bool)
    assert len(comparison["train_loss_bf16"]) == 2

    predict = report["predict"]
    assert predict["status"] == "ok"
    assert predict["images"] == 4 and predict["images_per_s"] > 0
    assert predict["projected_kaggle_s"] > 5506 / predict["images_per_s"]
    assert report["summary"]["steps_not_ok"] == 0
    assert report["summary"]["fpn-b5"]["fp32"]["speedup_over_fp32"] == 1.0


def make_proof(tmp_path: Path, budget: float):
    settings = proof_module.replace(proof_module.DRY, budget=budget)
    return proof_module.Proof(tmp_path, tmp_path, settings, True, [])


def alive(pid: int) -> bool:
    """Running: it exists and is not a zombie (an orphan that init has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_time_limit_stops_the_process_and_what_it_started(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    # A parent that starts a child (as the loader starts workers) and both outlive the limit.
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(child_pid)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    log = proof_module.Log(tmp_path / "log", proof_module.Clock(100))
    start = time.monotonic()
    outcome = proof_module.run_command(
        [sys.executable, "-c", code], dict(os.environ), tmp_path, 3, log
    )
    assert outcome.code is None and time.monotonic() - start < 20
    assert not alive(int(child_pid.read_text()))
    entry = proof_module.failure(outcome)
    assert entry["status"] == "timeout" and entry["error"] == "stopped at its 3s limit"


def test_a_failing_or_late_step_is_recorded_and_saved(tmp_path: Path) -> None:
    proof = make_proof(tmp_path, budget=600)

    def broken(limit: float) -> dict:
        raise KeyError("curve")

    result = proof.step(("synth",), "setup", broken)
    assert result["status"] == "failed" and result["error"] == "KeyError: 'curve'"
    saved = json.loads((tmp_path / "gpu_proof.json").read_text())
    assert saved["synth"]["status"] == "failed"
    assert saved["bench"]["fpn-b5"]["fp32"] == {"status": "pending"}

    late = make_proof(tmp_path, budget=3)  # less than the reserve: nothing may start
    result = late.step(("bench", "fpn-b5", "fp32"), "bench", lambda limit: {})
    assert result["status"] == "skipped" and "budget" in result["error"]


def test_failed_command_names_its_last_error_line(tmp_path: Path) -> None:
    outcome = proof_module.Outcome(1, 2.0, "", "Traceback\n  ...\nerror: CUDA out of memory\n", 60)
    entry = proof_module.failure(outcome)
    assert entry == {
        "status": "failed",
        "exit_code": 1,
        "error": "error: CUDA out of memory",
        "stderr_tail": ["Traceback", "  ...", "error: CUDA out of memory"],
    }


def row(epoch: int, train_loss: float, val_loss: float, dice: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_dice_mean": dice,
        "val_empty_baseline": 0.9,
        "seconds": 3.0,
    }


def test_compare_training_by_hand() -> None:
    train = {
        "fp32": {"status": "ok", "curve": [row(1, 0.8, 0.5, 0.90), row(2, 0.4, 0.3, 0.92)]},
        "bf16": {"status": "ok", "curve": [row(1, 0.7, 0.5, 0.91), row(2, 0.45, 0.3, 0.905)]},
    }
    result = proof_module.compare_training(train)
    assert result["difference"] == pytest.approx(-0.015)
    assert result["within_tolerance"] is False  # 0.015 > 0.01
    assert result["best_val_dice_mean_bf16"] == 0.91
    assert result["largest_train_loss_gap"] == pytest.approx(0.1)
    assert result["largest_val_loss_gap"] == 0
    train["bf16"] = {"status": "timeout"}
    assert proof_module.compare_training(train)["status"] == "skipped"


def test_wheel_list_names_what_the_gpu_image_lacks() -> None:
    names = proof_module.pinned_names()
    assert {"segmentation-models-pytorch", "albumentations", "pydantic"} <= set(names)
    assert "torch" not in names and "kaggle" not in names  # there, or not needed


@pytest.mark.parametrize("model", proof_module.MODELS, ids=lambda m: m.name)
def test_the_gpu_runs_configs_load(model, tiny_data: Path, tmp_path: Path) -> None:
    """The full-size run cannot be tried here: at least every config it gives sever loads,
    with the recipe's model, sizes and workers and the variant's precision."""
    proof = proof_module.Proof(tmp_path, tmp_path, proof_module.GPU, False, [])
    proof.data = tiny_data
    recipe = load_config(proof_module.CHECKOUT / "experiments" / model.recipe)
    cases = [(VARIANTS[v], v) for v in VARIANTS]
    if model == proof_module.TRAINED:
        cases += [(proof.train_overrides(p), p) for p in proof_module.PRECISIONS]
    for extra, name in cases:
        flags = proof.config_flags(model, extra)
        assert flags[0] == "-c" and set(flags[2::2]) == {"-o"}
        config = load_config(flags[1], flags[3::2])
        assert config.model.encoder == recipe.model.encoder and config.model.encoder_weights is None
        assert (config.data.crop, config.trainer.batch_size) == (
            recipe.data.crop,
            recipe.trainer.batch_size,
        )
        assert config.data.workers == 8 and config.data.dir == tiny_data
        assert config.trainer.amp == ("off" if name == "fp32" else "bf16")
        assert config.trainer.compile == name.endswith("compile")
