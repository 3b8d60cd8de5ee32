"""Trainer options: precision, EMA, accumulation, clipping, compile fallback, schedules."""

from __future__ import annotations

import logging

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sever.engine import parts as parts_module
from sever.engine.checkpoint import load_checkpoint
from sever.engine.parts import pick_amp, pick_device
from sever.engine.trainer import train
from sever.errors import ConfigError

pytestmark = pytest.mark.slow
SHORT = ("trainer.epochs=1", "trainer.steps_per_epoch=2")


def last(run):
    return load_checkpoint(run / "checkpoints" / "last.pth")


def test_device_and_precision_choice() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        assert pick_amp("auto", torch.device("cpu")) is None  # off on the CPU by default
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_amp("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        pick_amp("fp16", torch.device("cpu"))


def test_device_is_logged(tiny_config, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sever"):
        train(tiny_config(*SHORT))
    assert any("images on cpu, amp off" in r.getMessage() for r in caplog.records)


def test_accumulation_counts_optimizer_steps(tiny_config) -> None:
    # 26 training images, batch 4 -> 6 batches; accumulating 4 -> ceil(6 / 4) = 2 steps
    run = train(tiny_config("trainer.epochs=1", "trainer.accumulate=4"))
    assert last(run)["step"] == 2


def test_ema_weights_are_kept_and_differ(tiny_config) -> None:
    state = last(train(tiny_config(*SHORT, "trainer.ema=0.5")))
    assert state["ema"] is not None
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    name = "decoder.blocks.0.conv1.0.weight"
    assert not torch.equal(ema[name], state["model"][name])


def test_gradient_clipping_is_applied(tiny_config, monkeypatch) -> None:
    norms = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils,
        "clip_grad_norm_",
        lambda p, max_norm: norms.append(max_norm) or real(p, max_norm),
    )
    train(tiny_config(*SHORT, "trainer.clip_grad=0.5"))
    assert norms == [0.5, 0.5]


def test_bf16_autocast_and_channels_last_on_cpu(tiny_config) -> None:
    run = train(tiny_config(*SHORT, "trainer.amp=bf16", "trainer.channels_last=true"))
    state = last(run)
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values())  # fp32 master
    assert state["metrics"]["val_loss"] == pytest.approx(state["metrics"]["val_loss"])


def test_compile_failure_falls_back(tiny_config, monkeypatch, caplog) -> None:
    def broken(model):
        def fail(*args):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(parts_module.torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="sever"):
        run = train(tiny_config(*SHORT, "trainer.compile=true"))
    assert last(run)["step"] == 2
    assert any("torch.compile failed" in r.getMessage() for r in caplog.records)


def test_plateau_schedule_steps_on_validation(tiny_config, scripted_validation) -> None:
    scripted_validation([0.5, 0.5, 0.5])
    run = train(
        tiny_config(
            "trainer.epochs=3",
            "trainer.steps_per_epoch=1",
            "scheduler.type=plateau",
            "scheduler.plateau_patience=0",
        )
    )
    lrs = [line.split(",")[-2] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    # no improvement at the 2nd and 3rd validations: halved twice
    assert [float(v) for v in lrs] == pytest.approx([3e-3, 1.5e-3, 7.5e-4])


def test_monitor_a_training_metric(tiny_config) -> None:
    run = train(
        tiny_config(
            "trainer.epochs=2", "trainer.steps_per_epoch=1", "trainer.monitor=min train_loss"
        )
    )
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert last(run)["saver"]["best"] == pytest.approx(min(losses), rel=1e-5)


def test_hparams_summary_is_written(tiny_config) -> None:
    run = train(tiny_config(*SHORT))
    events = EventAccumulator(str(run)).Reload()
    assert events.PluginTagToContent("hparams")


def test_class_head_trains_with_its_own_term(tiny_config) -> None:
    run = train(
        tiny_config(
            *SHORT, "model.class_head.enabled=true", "model.class_head.pos_weight=[2, 2, 1, 2]"
        )
    )
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_cls" in header and "val_cls" in header
