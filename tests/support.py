"""Helpers the tests call with arguments: the tiny config, `sever` run in-process, torchrun.

Plain functions rather than fixtures because module-scoped fixtures call them as well as
tests, each time with other arguments. Tests import them as `from tests.support import ...`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
  min_pixels: 8  # a minimum mask size for 64x256 images (the default is for 256x1600)
"""


def write_tiny(folder: Path, data: Path) -> Path:
    """`folder/tiny.yml`: TINY on `data`, saving runs under `folder/saved`."""
    path = folder / "tiny.yml"
    path.write_text(TINY.format(data=data, saved=folder / "saved"))
    return path


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
