"""The trainer end to end on tiny synthetic data: run directory, exact resume, TensorBoard,
early stopping, top-k checkpoints, and the failure paths that must not lose work."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sever.cli import main
from sever.config import config_dict
from sever.engine import steps
from sever.engine.checkpoint import load_checkpoint
from sever.engine.resume import find_resume_point
from sever.engine.trainer import train
from sever.errors import CheckpointError, DataError, TrainingStopped

pytestmark = pytest.mark.slow


def read_metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_run_directory_holds_everything(tiny_config) -> None:
    config = tiny_config("trainer.epochs=2")
    run = train(config)
    assert run.parent == config.trainer.save_dir / "tiny"
    for name in ("config.yml", "split.csv", "metrics.csv", "train.log"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert {"last.pth", "model_best.pth", "checkpoint-epoch2.pth"} <= checkpoints
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    required = ["epoch", "train_loss", "val_loss", "val_dice_mean", "lr_encoder", "lr_decoder"]
    assert set(required + [f"val_dice_{c}" for c in range(1, 5)]) <= set(rows[0])
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    assert state["epoch"] == 2 and state["config"] == config_dict(config)
    assert {"model", "optimizer", "scheduler", "rng", "versions", "step"} <= set(state)
    # a second run of the same experiment never reuses the directory
    assert train(config) != run


def test_resume_continues_exactly(tiny_config) -> None:
    whole = train(tiny_config("trainer.epochs=4"))
    half = train(tiny_config("trainer.epochs=2"))
    resumed_config = tiny_config("trainer.epochs=4")
    resumed = train(resumed_config, resume=find_resume_point(half / "checkpoints" / "last.pth"))
    assert resumed == half
    a = torch.load(whole / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pth", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (4, 4 * 6)
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], msg=key)
    assert without_time(read_metrics(whole)) == without_time(read_metrics(resumed))


def test_cli_train_and_resume(tiny_yaml: Path, capsys) -> None:
    main(["train", "-c", str(tiny_yaml), "-o", "trainer.epochs=1"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("run: ")
    run = Path(last_line[5:])
    main(["train", "--resume", str(run), "-o", "trainer.epochs=2"])
    assert capsys.readouterr().out.strip().endswith(f"run: {run}")
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"]


def test_tensorboard_events(tiny_config) -> None:
    run = train(tiny_config("trainer.epochs=2"))
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/bce",
        "train/dice",
        "lr/lr_encoder",
        "lr/lr_decoder",
        "val/loss",
        "val/dice_mean",
        "val/dice_1",
        "val/dice_4",
    }
    assert expected <= scalars
    assert len(events.Scalars("val/dice_mean")) == 2
    images = events.Tags()["images"]
    assert len(images) == 2 and all(tag.startswith("val_images/") for tag in images)
    # the learning rate of each group keeps its ratio (1e-3 : 3e-3) along the schedule
    enc, dec = events.Scalars("lr/lr_encoder"), events.Scalars("lr/lr_decoder")
    assert all(abs(d.value - 3 * e.value) < 1e-9 for e, d in zip(enc, dec, strict=True))


def test_early_stopping_and_top_k(tiny_config, scripted_validation) -> None:
    scripted_validation([0.5, 0.6, 0.55, 0.58, 0.59, 0.7])
    config = tiny_config(
        "trainer.epochs=6", "trainer.early_stop=2", "trainer.save_top_k=2", "trainer.save_period=3"
    )
    run = train(config)
    # no improvement at epochs 3 and 4: stops after 4 of 6 epochs
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2", "3", "4"]
    best = load_checkpoint(run / "checkpoints" / "model_best.pth")
    assert best["epoch"] == 2
    kept = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-epoch*.pth"))
    # top 2 by the metric (epochs 2 and 4) plus every 3rd epoch
    assert kept == ["checkpoint-epoch2.pth", "checkpoint-epoch3.pth", "checkpoint-epoch4.pth"]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_config, monkeypatch) -> None:
    real = steps.train_one_epoch

    def poisoned(config, parts, loader, epoch, *rest):
        if epoch == 2:
            loss = parts.loss
            parts.loss = lambda *a: {k: v * float("nan") for k, v in loss(*a).items()}
        return real(config, parts, loader, epoch, *rest)

    monkeypatch.setattr(steps, "train_one_epoch", poisoned)
    config = tiny_config("trainer.epochs=3")
    with pytest.raises(TrainingStopped, match=r"epoch 2 step 7: the loss is not finite") as info:
        train(config)
    last = Path(str(info.value).split("checkpoint is ")[1].split(",")[0])
    assert load_checkpoint(last)["epoch"] == 1


def test_keyboard_interrupt_keeps_the_last_completed_epoch(
    tiny_config, monkeypatch, caplog
) -> None:
    """A KeyboardInterrupt (a second Ctrl-C) stops at once: last.pth stays at the last
    completed epoch, and nothing is labelled as an epoch that did not complete."""
    real = steps.train_one_epoch

    def interrupted(config, parts, loader, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(config, parts, loader, epoch, *rest)

    monkeypatch.setattr(steps, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config("trainer.epochs=3", "trainer.save_period=1"))
    message = next(r.getMessage() for r in caplog.records if "resume with" in r.getMessage())
    assert "checkpoints/last.pth keeps epoch 1" in message
    run = Path(message.split("--resume ")[1])
    assert load_checkpoint(run / "checkpoints" / "last.pth")["epoch"] == 1
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["checkpoint-epoch1.pth", "last.pth", "model_best.pth"]


def test_refuses_a_broken_dataset(tiny_data: Path, tiny_config, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    with (broken / "train.csv").open("a") as handle:
        handle.write("nothere.jpg,3,1 10\n")
    with pytest.raises(DataError, match="nothere.jpg: no such file"):
        train(tiny_config(f"data.dir={broken}"))
    with pytest.raises(DataError, match="data.image_size is 128x256"):
        train(tiny_config("data.image_size=[128, 256]"))


def test_resume_from_a_damaged_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "checkpoints" / "last.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as done:
        main(["train", "--resume", str(bad)])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 1 and err.count("\n") == 0
    assert "not a readable checkpoint" in err
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


def test_resume_from_a_weights_only_checkpoint_is_refused(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("trainer.epochs=1", "trainer.steps_per_epoch=1"))
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    slim = run / "checkpoints" / "slim.pth"
    torch.save({k: state[k] for k in ("model", "config", "epoch", "format")}, slim)
    with pytest.raises(CheckpointError, match="cannot resume from a weights-only checkpoint"):
        train(tiny_config("trainer.epochs=2"), resume=find_resume_point(slim))
