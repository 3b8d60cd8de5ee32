"""Every shipped experiment builds its model and trains one step at a small size."""

from pathlib import Path

import pytest
import torch

from sever.config import load_config
from sever.model.build import build_model, split_outputs
from sever.model.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "experiments").glob("*.yml") if p.name != "base.yml")


def test_the_original_recipes_are_shipped() -> None:
    names = {p.stem for p in RECIPES}
    expected = {"unet-b5", "fpn-b5", "unet-se_resnext50", "fpn-se_resnext50", "fpn-inceptionv4"}
    assert expected | {"demo", "demo-classifier"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_experiment_model_forward_backward(path: Path) -> None:
    # These machines cannot download weights: build the same model from scratch.
    config = load_config(path, ["model.encoder_weights=null"])
    torch.manual_seed(0)
    model = build_model(config.model, config.task)
    images = torch.randn(2, 1, 64, 96)
    masks = (torch.rand(2, 4, 64, 96) > 0.9).float()
    mask_logits, class_logits = split_outputs(model(images))
    if config.task == "segment":
        assert mask_logits.shape == (2, 4, 64, 96)
    else:
        assert mask_logits is None and class_logits.shape == (2, 4)
    loss = build_loss(config)(mask_logits, masks, class_logits)
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"])
    # The encoder's first conv (1-channel input) and the head both learn. (Some SMP
    # encoders keep a few unused layers, e.g. EfficientNet's conv_head, without gradients.)
    first = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1 and first.weight.grad is not None
    heads = model.classification_head if config.task == "classify" else model.segmentation_head
    head = [p.grad for p in heads.parameters()]
    assert head and all(g is not None and g.abs().sum() > 0 for g in head)


# The original project's experiments/*.yml: lr_scheduler CosineAnnealingScheduler's
# (start_anneal, n_epochs) and training.epochs; its fpn-inceptionv4 recipe shipped no YAML
# and takes the others' schedule.
SEED_SCHEDULES = {
    "fpn-b5": (30, 251, 250),
    "unet-b5": (30, 251, 250),
    "unet-se_resnext50": (30, 251, 250),
    "fpn-se_resnext50": (30, 301, 300),
    "fpn-inceptionv4": (30, 251, 250),
}


@pytest.mark.parametrize("name", sorted(SEED_SCHEDULES))
def test_the_original_recipes_use_the_original_loss_and_schedule(name: str) -> None:
    config = load_config(ROOT / "experiments" / f"{name}.yml")
    start_anneal, n_epochs, epochs = SEED_SCHEDULES[name]
    # its BCEDiceLoss(bce_weight=0.6, dice_weight=0.4): one Dice over batch and classes
    assert config.loss.weights() == {"bce": 0.6, "dice_pooled": 0.4}
    assert not config.loss.stages
    scheduler = config.scheduler
    assert (scheduler.type, scheduler.warmup_epochs, scheduler.min_lr_ratio) == (
        "flat-logistic",
        0,
        0,
    )
    assert (scheduler.flat_epochs, scheduler.rolloff_epochs) == (
        start_anneal,
        n_epochs - start_anneal,
    )
    assert config.trainer.epochs == epochs


def test_the_demo_keeps_sever_defaults_for_loss_and_schedule() -> None:
    config = load_config(ROOT / "experiments" / "demo.yml")
    assert config.loss.weights() == {"bce": 0.6, "dice": 0.4}
    assert config.scheduler.type == "flat-cosine"
