import io
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import logistic
from torch import nn

from sever.config import OptimizerConfig, SchedulerConfig
from sever.model.optim import (
    OPTIMIZERS,
    build_optimizer,
    build_scheduler,
    flat_cosine,
    flat_logistic,
    steps_per_iteration,
)

R = 0.2  # min_lr_ratio
STEPS_PER_EPOCH = 10
# warm-up 1 epoch = 10 steps, flat until step 20, cosine over 40 steps (20..60);
# flat-logistic: flat for epochs 0-1, roll-off over epochs 2-5 (midpoint 2 + 4 / 2 = epoch 4)
SCHEDULE = dict(warmup_epochs=1, flat_epochs=2, cosine_epochs=4, rolloff_epochs=4, min_lr_ratio=R)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def optimizer(type: str = "radam") -> torch.optim.Optimizer:
    torch.manual_seed(0)
    return build_optimizer(Tiny(), OptimizerConfig(type=type))


def scheduled(type: str = "flat-cosine", **schedule):
    opt = optimizer()
    cfg = SchedulerConfig(type=type, **{**SCHEDULE, **schedule})
    return opt, build_scheduler(opt, cfg, STEPS_PER_EPOCH, "max")


def run(opt, scheduler, steps: int) -> list[list[float]]:
    """The lr of each group before each of `steps` iterations."""
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in opt.param_groups])
        opt.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    ("type", "cls"),
    [("radam", torch.optim.RAdam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_two_named_groups_with_their_own_lr_and_weight_decay(type, cls):
    opt = optimizer(type)
    assert isinstance(opt, cls)
    encoder, decoder = opt.param_groups
    assert (encoder["name"], encoder["lr"], encoder["weight_decay"]) == ("encoder", 7e-5, 3e-5)
    assert (decoder["name"], decoder["lr"], decoder["weight_decay"]) == ("decoder", 3e-3, 3e-4)
    assert len(encoder["params"]) == len(decoder["params"]) == 2


def test_sgd_uses_nesterov_momentum():
    group = optimizer("sgd").param_groups[0]
    assert group["momentum"] == 0.9 and group["nesterov"]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # warm-up starts near 0
        (4, 0.5),  # inside warm-up
        (9, 1.0),  # warm-up done
        (19, 1.0),  # end of flat
        (20, 1.0),  # cosine starts at 1
        (40, (1 + R) / 2),  # middle of cosine
        (60, R),  # end
        (100, R),  # after the end
    ],
)
def test_flat_cosine_multiplier(step, expected):
    assert flat_cosine(step, 10, 20, 40, R) == pytest.approx(expected)
    opt, scheduler = scheduled()
    lrs = run(opt, scheduler, step + 1)
    assert lrs[step][1] == pytest.approx(3e-3 * expected)


def test_the_true_cosine_is_the_default_schedule():
    assert SchedulerConfig().type == "flat-cosine"


def survival(z: float) -> float:
    return 1 / (1 + math.exp(z))


# flat_epochs 2, rolloff_epochs 4: epoch e sits at e - 2 into the roll-off, whose centre is
# at 4 / 2 = 2 and scale 4 / 10 = 0.4, so its value is 1 / (1 + e^((e - 4) / 0.4)).
@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),  # flat, no warm-up
        (19, 1.0),  # last step of the flat epochs
        (20, survival(-5)),  # the roll-off's first epoch: 1 / (1 + e^5), just below 1
        (29, survival(-5)),  # held through the epoch
        (40, 0.5),  # the roll-off's midpoint, epoch 4
        (49, 0.5),
        (50, survival(2.5)),  # its last epoch (the original's last value)
        (100, survival(15)),  # after it, still falling
    ],
)
def test_flat_logistic_multiplier_by_hand(step, expected):
    assert flat_logistic(step, 10, 0, 2, 4, 0.0) == pytest.approx(expected, rel=1e-12)
    opt, scheduler = scheduled("flat-logistic", warmup_epochs=0, min_lr_ratio=0)
    lrs = run(opt, scheduler, step + 1)
    assert lrs[step][1] == pytest.approx(3e-3 * expected)


def test_flat_logistic_with_warmup_and_a_floor():
    # the warm-up ramp multiplies the curve; the curve falls from 1 to min_lr_ratio
    assert flat_logistic(4, 10, 10, 2, 4, R) == pytest.approx(0.5)
    assert flat_logistic(40, 10, 10, 2, 4, R) == pytest.approx(R + (1 - R) * 0.5)
    # far past the roll-off (z = 250,000: e^z would overflow a float)
    assert flat_logistic(10**6, 10, 10, 2, 4, R) == pytest.approx(R)


def seed_curve(start_lr: float, start_anneal: int, n_epochs: int) -> np.ndarray:
    """The original project's CosineAnnealingScheduler.get_curve and rolloff, transcribed
    (sever/model/scheduler.py there); it indexed the curve by epoch, from 0."""
    lrs = np.zeros((n_epochs,))
    lrs[0:start_anneal] = start_lr
    length = n_epochs - start_anneal
    loc, scale = length * 0.5, length * 0.1
    rolloff = np.array([logistic.sf(x, loc, scale) for x in range(length)]) * start_lr
    lrs[start_anneal:] = rolloff
    return lrs


@pytest.mark.parametrize(("start_anneal", "n_epochs"), [(30, 251), (30, 301), (3, 17)])
def test_flat_logistic_is_the_original_curve_at_every_step(start_anneal, n_epochs):
    steps_per_epoch = 7
    curve = seed_curve(1, start_anneal, n_epochs)
    ours = [
        [flat_logistic(e * steps_per_epoch + i, 7, 0, start_anneal, n_epochs - start_anneal, 0)]
        for e in range(n_epochs)
        for i in range(steps_per_epoch)
    ]
    expected = np.repeat(curve, steps_per_epoch)[:, None]
    np.testing.assert_allclose(np.array(ours), expected, rtol=1e-12, atol=0)


def test_flat_cosine_without_warmup_starts_at_the_base_lr():
    opt, _ = scheduled(warmup_epochs=0)
    assert [group["lr"] for group in opt.param_groups] == [7e-5, 3e-3]


def test_constant_warms_up_then_holds():
    lrs = run(*scheduled("constant"), 30)
    assert [lr[1] / 3e-3 for lr in lrs[:3]] == pytest.approx([0.1, 0.2, 0.3])
    assert {lr[1] for lr in lrs[9:]} == {3e-3}


@pytest.mark.parametrize("type", ["flat-cosine", "flat-logistic", "constant"])
def test_encoder_decoder_ratio_holds_along_the_schedule(type):
    for encoder_lr, decoder_lr in run(*scheduled(type), 70):
        assert encoder_lr / decoder_lr == pytest.approx(7e-5 / 3e-3)


@pytest.mark.parametrize("type", ["flat-cosine", "flat-logistic", "constant"])
def test_resume_from_state_dicts_continues_the_same_lrs(type):
    expected = run(*scheduled(type), 70)
    opt, scheduler = scheduled(type)
    before = run(opt, scheduler, 25)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt, scheduler = scheduled(type)
    opt.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    resumed = before + run(opt, scheduler, 45)
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(expected))


def test_plateau_steps_on_the_monitored_value_and_resumes():
    opt, scheduler = scheduled("plateau", plateau_factor=0.5, plateau_patience=1)
    assert not steps_per_iteration(scheduler)
    for value in (0.5, 0.6, 0.6):  # mode max: one bad validation is within patience
        scheduler.step(value)
    assert opt.param_groups[1]["lr"] == 3e-3
    state = scheduler.state_dict()
    opt2, resumed = scheduled("plateau", plateau_factor=0.5, plateau_patience=1)
    resumed.load_state_dict(state)
    for sched, group in ((scheduler, opt.param_groups), (resumed, opt2.param_groups)):
        sched.step(0.6)  # the second bad validation halves both groups
        assert [g["lr"] for g in group] == pytest.approx([3.5e-5, 1.5e-3])


def test_lambda_schedules_step_per_iteration():
    assert steps_per_iteration(scheduled("flat-cosine")[1])
    assert steps_per_iteration(scheduled("flat-logistic")[1])
    assert steps_per_iteration(scheduled("constant")[1])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        ValidationError, match="expected one of: constant, flat-cosine, flat-logistic, plateau"
    ):
        SchedulerConfig(type="cosine")
    with pytest.raises(KeyError, match="did you mean 'radam'.*adamw, radam, sgd"):
        OPTIMIZERS["radm"]
