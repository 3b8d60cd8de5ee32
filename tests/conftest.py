"""Shared fixtures: a tiny synthetic dataset and a config that trains on it in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sever.config import Config, load_config
from sever.data.synth import generate

TINY = """
name: tiny
seed: 3
data:
  dir: {data}
  image_size: [64, 256]
  crop: [64, 128]
  augment: heavy-crop
  workers: 0
model:
  arch: Unet
  encoder: resnet18
  encoder_weights: null
  input_channel: r
  dropout: 0.1
optimizer:
  encoder: {{lr: 1.0e-3}}
  decoder: {{lr: 3.0e-3}}
scheduler:
  flat_epochs: 1
  cosine_epochs: 3
trainer:
  epochs: 4
  batch_size: 4
  save_dir: {saved}
  log_every: 2
  log_images: 2
"""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 training and 4 test images of 64x256, in the competition's layout (read-only)."""
    folder = tmp_path_factory.mktemp("data") / "synthetic"
    generate(folder, n_train=32, n_test=4, height=64, width=256, fmt="long", seed=1)
    return folder


def write_tiny(folder: Path, data: Path) -> Path:
    """`folder/tiny.yml`: TINY on `data`, saving runs under `folder/saved`."""
    path = folder / "tiny.yml"
    path.write_text(TINY.format(data=data, saved=folder / "saved"))
    return path


@pytest.fixture
def tiny_yaml(tiny_data: Path, tmp_path: Path) -> Path:
    return write_tiny(tmp_path, tiny_data)


@pytest.fixture
def tiny_config(tiny_yaml: Path):
    """A factory: tiny_config('trainer.epochs=2', ...) -> Config."""

    def make(*overrides: str) -> Config:
        return load_config(tiny_yaml, list(overrides))

    return make


@pytest.fixture
def scripted_validation(monkeypatch):
    """scripted_validation([0.5, 0.6]): validation reports these as val_dice_mean in turn."""
    from sever.engine import steps

    def script(values: list[float]) -> None:
        real, scripted = steps.validate, iter(values)

        def fake(config, parts, loader, epoch, board):
            return real(config, parts, loader, epoch, board) | {"val_dice_mean": next(scripted)}

        monkeypatch.setattr(steps, "validate", fake)

    return script


def cli(*args: object) -> int:
    """Run `sever ARGS...` in-process; the exit status (main exits only on errors)."""
    from sever.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as done:
        return done.code or 0
    return 0


def cli_output(capsys, *args: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `sever ARGS...` run in-process."""
    code = cli(*args)
    out, err = capsys.readouterr()
    return code, out, err


def torchrun_train(*args: object) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m sever train ARGS...` on the CPU,
    one thread per process, output captured."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "sever", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
