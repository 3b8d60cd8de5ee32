"""Shared fixtures: a tiny synthetic dataset and a config that trains on it in seconds.

Helpers that tests call with arguments (write_tiny, cli, cli_output, torchrun_train) live in
tests/support.py; the stub Kaggle server in tests/kaggle/stub.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sever.config import Config, load_config
from sever.data.synth import generate
from tests.support import write_tiny


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 training and 4 test images of 64x256, in the competition's layout (read-only)."""
    folder = tmp_path_factory.mktemp("data") / "synthetic"
    generate(folder, n_train=32, n_test=4, height=64, width=256, fmt="long", seed=1)
    return folder


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
