"""`sever bench`: the loader advice and the GPU peak table by hand, the batch timer on a fake
loader, and the measurements end to end on the tiny dataset (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sever.engine.bench import Batches, loader_advice, peak_tflops, run_bench, write_report
from tests.support import cli_output

RATES = ("loader_samples_per_s", "compute_images_per_s", "step_images_per_s")


@pytest.mark.parametrize(
    ("loader", "compute", "workers", "bound", "needed"),
    [
        (50, 200, 2, True, 8),  # 25 samples/s per worker; 200 / 25 = 8
        (50, 210, 2, True, 9),  # rounded up
        (30, 100, 0, True, 4),  # the main process counts as one worker
        (400, 200, 2, False, 1),
        (400, 200, 8, False, 4),  # keeps up; 4 of the 8 workers would do
    ],
)
def test_loader_advice(loader, compute, workers, bound, needed) -> None:
    advice = loader_advice(loader, compute, workers)
    assert (advice.loader_bound, advice.workers_needed) == (bound, needed)
    if bound:
        assert "the loader is the bottleneck" in advice.text
        assert f"data.workers: {needed} would keep up" in advice.text


def test_loader_advice_messages() -> None:
    assert "more than this machine's 4 cores" in loader_advice(10, 100, 1, cores=4).text
    assert "cores" not in loader_advice(50, 200, 2, cores=16).text
    assert "data.workers is 0" in loader_advice(400, 200, 0).text
    assert loader_advice(400, 200, 2).text.startswith("the loader keeps up")


@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989),
        ("NVIDIA H100 80GB HBM3", "fp32", 67),
        ("NVIDIA H100 PCIe", "bf16", 756),
        ("NVIDIA H200", "tf32", 495),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
        ("Tesla V100-SXM2-16GB", "fp16", 125),
        ("Tesla V100-SXM2-16GB", "tf32", 15.7),  # no TF32 units: float32 runs on fp32 ones
        ("Tesla V100-SXM2-16GB", "bf16", None),
        ("NVIDIA GeForce RTX 4090", "bf16", 165),
        ("NVIDIA L4", "bf16", 121),
        ("NVIDIA L40S", "bf16", None),  # unknown: not taken for an L4
    ],
)
def test_peak_tflops(name, precision, expected) -> None:
    assert peak_tflops(name, precision) == expected


class FakeLoader:
    """Three batches per epoch; as its own epoch sampler, records the epochs it is set to."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epochs.append(epoch)

    def shard(self, rank: int, world: int) -> None:
        pass

    def __iter__(self):
        return iter("abc")


def test_batches_run_across_epochs() -> None:
    loader = FakeLoader()
    batches = Batches(loader, loader, total=7, skip=2, device=torch.device("cpu"))
    assert len(batches) == 7 and batches.start is None
    assert "".join(batches) == "abcabca"
    assert loader.epochs == [1, 2, 3]
    assert batches.start is not None


@pytest.mark.slow
def test_run_bench_on_tiny_data(tiny_config, tmp_path: Path) -> None:
    # One worker, and more batches than an epoch of 12 images holds: persistent workers
    # across epochs.
    report = run_bench(tiny_config("data.workers=1", "data.val_fraction=0.6"), steps=3)
    assert report["crop"] == [64, 128] and report["batch_size"] == 4
    for key in RATES:
        assert report[key] > 0 and math.isfinite(report[key]), key
    # By hand: ResNet-18 is 1.8 GMAC at 224x224, so about 0.6 GFLOP at 64x128; the Unet
    # decoder adds as much again and more, and the backward pass twice the forward: a few
    # GFLOP per image.
    assert 1e9 < report["flops_per_image"] < 2e10
    assert report["step_tflops"] == pytest.approx(
        report["flops_per_image"] * report["step_images_per_s"] / 1e12
    )
    assert report["peak_memory_bytes"] > 100 * 2**20
    assert report["peak_memory_kind"] == "process peak RSS"
    assert report["mfu"] is None and "CUDA only" in report["mfu_note"]
    assert report["workers_needed"] >= 1 and report["advice"]
    path = tmp_path / "out" / "bench.json"
    path.parent.mkdir()
    write_report(report, path)
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temporary left


@pytest.mark.slow
def test_cli_prints_table_and_writes_json(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.json"
    code, stdout, _ = cli_output(capsys, "bench", "-c", tiny_yaml, "--steps", 2, "--out", out)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("tiny: Unet resnet18, batch 4, crop 64x128, cpu")
    for label in ("data loading (0 workers)", "full training step", "peak memory", "MFU"):
        assert any(line.strip().startswith(label) for line in lines), label
    assert lines[-1] == f"wrote {out}"
    report = json.loads(out.read_text())
    assert report["name"] == "tiny" and report["steps"] == 2
    assert all(report[key] > 0 for key in RATES)


def test_cli_error_is_one_line(tiny_yaml: Path, capsys) -> None:
    code, stdout, stderr = cli_output(
        capsys, "bench", "-c", tiny_yaml, "-o", "trainer.batch_size=100"
    )
    assert code == 1 and not stdout
    assert stderr.strip() == (
        "error: trainer.batch_size 100 is larger than the 26 training images; lower it"
    )


@pytest.mark.slow
def test_bench_a_classifier(tiny_config) -> None:
    segmenter = run_bench(tiny_config(), steps=2)
    classifier = run_bench(tiny_config("task=classify"), steps=2)
    for key in RATES:
        assert classifier[key] > 0 and math.isfinite(classifier[key]), key
    # the encoder alone, without the Unet decoder: fewer FLOPs per image
    assert 0 < classifier["flops_per_image"] < segmenter["flops_per_image"]
