"""`sever average`: the mean of a run's checkpoints, with BatchNorm statistics recomputed
or averaged, loadable wherever a checkpoint loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sever.config import load_config
from sever.data.loaders import build_loaders, load_labels
from sever.data.splits import read_split
from sever.engine.average import AverageOptions, average_run, average_weights
from sever.engine.trainer import train
from sever.errors import CheckpointError
from sever.model.build import build_model
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs of one step, all three kept, EMA weights on (what is averaged)."""
    folder = tmp_path_factory.mktemp("average")
    overrides = [
        "trainer.epochs=3",
        "trainer.steps_per_epoch=1",
        "trainer.save_top_k=3",
        "trainer.ema=0.5",
        "trainer.tensorboard=false",
    ]
    return train(load_config(write_tiny(folder, tiny_data), overrides))


def checkpoint(run: Path, epoch: int) -> dict:
    return torch.load(run / "checkpoints" / f"checkpoint-epoch{epoch}.pth", weights_only=True)


def ema_weights(state: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}


def test_hand_built_weights_average_to_their_mean() -> None:
    def state(w: list[float], mean: float, n: int) -> dict:
        return {"w": torch.tensor(w), "bn.running_mean": torch.tensor([mean]), "n": torch.tensor(n)}

    a, b, c = state([1.0, 2.0], 0.0, 3), state([2.0, 4.0], 3.0, 5), state([6.0, 0.0], 9.0, 4)
    averaged = average_weights([a, b, c], average_bn=True)
    assert averaged["w"].tolist() == [3.0, 2.0]
    assert averaged["bn.running_mean"].tolist() == [4.0]
    assert averaged["n"].item() == 5  # counts: the largest
    kept = average_weights([a, b, c], average_bn=False)
    assert kept["bn.running_mean"].tolist() == [0.0]  # the first's, to be recomputed
    with pytest.raises(CheckpointError, match="differ in their keys or shapes"):
        average_weights([a, {**b, "w": torch.zeros(3)}], average_bn=True)


def test_average_with_bn_averaged_is_the_mean_of_the_ema_weights(run: Path, capsys) -> None:
    out = run.parent / "averaged.pth"
    code, stdout, err = cli_output(capsys, "average", "-r", run, "--bn", "average", "--out", out)
    assert code == 0, err
    assert stdout.splitlines()[-1] == f"wrote {out}"
    state = torch.load(out, weights_only=True)
    inputs = [ema_weights(checkpoint(run, e)) for e in (1, 2, 3)]
    for key, value in state["model"].items():
        if value.is_floating_point():
            expected = (inputs[0][key].double() + inputs[1][key] + inputs[2][key]) / 3
            torch.testing.assert_close(value, expected.float(), msg=key)
    assert sorted(state["averaged"]["epochs"]) == [1, 2, 3]
    assert state["averaged"]["bn"] == "average" and state["ema"] is None


def test_recomputed_bn_statistics_are_those_of_the_training_images(run: Path) -> None:
    report = average_run(AverageOptions(run, epochs=[1, 3], bn_batches=3))
    assert report.out == run / "checkpoints" / "average-e1-e3.pth"
    weights = torch.load(report.out, weights_only=True)["model"]
    # By hand: the encoder's first BatchNorm sees conv1's output of the averaged weights;
    # update_bn's running mean is the mean over batches of each batch's channel means.
    config = load_config(run / "config.yml")
    model = build_model(config.model)
    model.load_state_dict(weights)
    loaders = build_loaders(config, load_labels(config), read_split(run / "split.csv"), False)
    loaders.sampler.set_epoch(1)
    means, variances = [], []
    with torch.no_grad():
        for i, (images, _, _) in enumerate(loaders.train):
            if i == 3:
                break
            features = model.encoder.conv1(images)
            means.append(features.mean((0, 2, 3)))
            variances.append(features.transpose(0, 1).flatten(1).var(1, unbiased=True))
    torch.testing.assert_close(weights["encoder.bn1.running_mean"], torch.stack(means).mean(0))
    torch.testing.assert_close(weights["encoder.bn1.running_var"], torch.stack(variances).mean(0))


def test_an_averaged_checkpoint_loads_where_checkpoints_load(run: Path, capsys) -> None:
    report = average_run(AverageOptions(run, top=2, bn_batches=1))
    code, _, err = cli_output(capsys, "evaluate", "-r", report.out, "--workers", "0", "--json")
    assert code == 0, err
    code, _, err = cli_output(capsys, "train", "--resume", report.out)
    assert code == 1 and "cannot resume from a weights-only checkpoint" in err


def test_checkpoints_of_other_models_are_refused(run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    state = checkpoint(copy, 2)
    state["config"]["model"]["arch"] = "FPN"
    torch.save(state, copy / "checkpoints" / "checkpoint-epoch2.pth")
    # The module's run may already hold averages of other tests (top=2 may have written
    # average-e1-e2.pth): the refusal must add or replace nothing.
    (copy / "checkpoints" / "average-e1-e2.pth").unlink(missing_ok=True)
    before = sorted(copy.rglob("*"))
    with pytest.raises(CheckpointError) as error:
        average_run(AverageOptions(copy, epochs=[1, 2], bn="average"))
    assert str(error.value) == (
        f"{copy / 'checkpoints' / 'checkpoint-epoch2.pth'}: model.arch is 'FPN', "
        "checkpoint-epoch1.pth has 'Unet'; average checkpoints of one model"
    )
    assert sorted(copy.rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-e", "1", "-e", "9"], 1, "no checkpoint for epoch 9; kept epochs: 1, 2, 3"),
        (["-e", "2"], 1, "1 checkpoint(s) to average; keep more"),
        (["-e", "1", "-e", "2", "--top", "2"], 2, "give -e EPOCH ... or --top K, not both"),
        (["--top", "1"], 2, "'--top'"),
        (["--device", "cuda:7"], 2, "--device cuda:7"),
    ],
)
def test_mistakes_are_one_line(run: Path, capsys, args: list[str], code: int, message: str):
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    got, out, err = cli_output(capsys, "average", "-r", run, *args)
    assert got == code and out == "" and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
