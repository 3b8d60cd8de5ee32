"""Pretrained weights without a network: from the cache with the Hub offline, or one line at
once (not huggingface_hub's minute of retries)."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from sever.config import ModelConfig
from sever.errors import CheckpointError
from sever.model import build


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch) -> Path:
    """An empty cache, the Hub at a closed port, and offline mode off (as users run)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    return tmp_path / "hub"


def imagenet(**kwargs) -> ModelConfig:
    return ModelConfig(encoder="resnet18", encoder_weights="imagenet", **kwargs)


def test_no_network_is_one_line_at_once(no_network: Path) -> None:
    start = time.monotonic()
    with pytest.raises(CheckpointError) as caught:
        build.build_model(imagenet())
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert message.startswith("encoder resnet18: cannot download its imagenet weights")
    assert "http://127.0.0.1:9 cannot be reached" in message
    assert str(no_network) in message and "model.encoder_weights" in message
    assert "\n" not in message


def test_cached_weights_load_without_asking_the_hub(no_network: Path, monkeypatch) -> None:
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = no_network / "models--smp-hub--resnet18.imagenet" / "snapshots"
    snapshot = snapshot / settings["revision"]
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    torch.manual_seed(0)
    state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")

    def asked(*args, **kwargs):
        raise AssertionError("asked the Hub although the weights are cached")

    monkeypatch.setattr(build, "hub_unreachable", asked)
    model = build.build_model(imagenet(input_channel="r"))
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"][:, :1])
    assert torch.equal(model.encoder.layer4[1].bn2.weight, state["layer4.1.bn2.weight"])
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored afterwards
