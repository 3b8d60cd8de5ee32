import math

import pytest
import torch
import torch.nn.functional as F

from sever.config import LOSS_TERMS, ClassHeadConfig, Config, LossConfig, LossWeights
from sever.model.losses import LOSSES, SegmentationLoss, build_loss, pooled_dice_loss

LN3 = math.log(3)  # sigmoid(+-ln 3) = 0.75 / 0.25


def loss_fn(head: ClassHeadConfig | None = None, **weights) -> SegmentationLoss:
    return SegmentationLoss(LossConfig(**weights), head or ClassHeadConfig())


def one_pixel_defect() -> tuple[torch.Tensor, torch.Tensor]:
    """1x1x2x2 logits giving p = 0.75 on the defect pixel and 0.25 elsewhere."""
    logits = torch.tensor([[[[LN3, -LN3], [-LN3, -LN3]]]])
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    return logits, masks


def test_every_config_term_is_registered():
    assert set(LOSS_TERMS) == set(LOSSES) == set(LossWeights.model_fields)


def test_default_is_bce_and_dice_by_hand():
    # BCE: every pixel scores p = 0.75 on its truth -> ln(4/3).
    # Dice: intersection 0.75, sum of p 1.5, sum of truth 1 -> 2 * 0.75 / 2.5 = 0.6.
    out = loss_fn()(*one_pixel_defect())
    assert set(out) == {"bce", "dice", "loss"}
    assert out["bce"].item() == pytest.approx(math.log(4 / 3))
    assert out["dice"].item() == pytest.approx(0.4)
    assert out["loss"].item() == pytest.approx(0.6 * math.log(4 / 3) + 0.4 * 0.4)


def test_dice_with_half_probabilities_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    _, masks = one_pixel_defect()
    out = loss_fn(bce=0, dice=1)(logits, masks)
    # intersection 0.5, sizes 2 + 1 -> dice 1/3
    assert out["dice"].item() == pytest.approx(2 / 3)
    assert out["loss"].item() == pytest.approx(2 / 3)


def test_dice_of_a_class_absent_from_the_batch_counts_as_zero_loss():
    # SMP's choice: a class without true pixels adds 0 (not 1 - dice) to the class mean.
    logits = torch.zeros(1, 2, 2, 2)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1
    out = loss_fn(bce=0, dice=1)(logits, masks)
    assert out["dice"].item() == pytest.approx((2 / 3 + 0) / 2)


def two_classes_one_absent() -> tuple[torch.Tensor, torch.Tensor]:
    """1x2x2x2: class 1 has one defect pixel (p = 0.75, 0.25 elsewhere), class 2 none
    (p = 0.25 everywhere)."""
    logits, masks = one_pixel_defect()
    return torch.cat([logits, torch.full_like(logits, -LN3)], 1), torch.cat([masks, 0 * masks], 1)


def test_pooled_dice_against_smp_per_class_dice_by_hand():
    # Pooled (the original's): intersection 0.75, sum of p 0.75 + 7 * 0.25 = 2.5, of truth
    # 1 -> dice 1.5 / 3.5 = 3/7, loss 4/7. SMP's: class 1 dice 1.5 / 2.5 = 0.6 -> 0.4; the
    # absent class 2 counts 0 -> mean 0.2.
    out = loss_fn(bce=0, dice=1, dice_pooled=1)(*two_classes_one_absent())
    assert out["dice_pooled"].item() == pytest.approx(4 / 7)
    assert out["dice"].item() == pytest.approx(0.2)
    assert out["loss"].item() == pytest.approx(4 / 7 + 0.2)


def test_pooled_dice_of_empty_masks_counts_the_predicted_pixels():
    # no defect anywhere: intersection 0, so 1 - 0 / (sum of p + eps) = 1 (SMP's: 0)
    logits, masks = torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    assert pooled_dice_loss(logits, masks).item() == pytest.approx(1.0)
    assert loss_fn(bce=0, dice=1)(logits, masks)["dice"].item() == 0


def seed_bce_dice(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The original project's BCEDiceLoss(bce_weight=0.6, dice_weight=0.4), transcribed from
    its sever/model/loss.py (`dice` with eps 1e-7 and no threshold, `DiceLoss` = 1 - dice)."""
    bce = torch.nn.BCEWithLogitsLoss()(outputs, targets)
    probs = F.sigmoid(outputs)
    intersection = torch.sum(targets * probs)
    union = torch.sum(targets) + torch.sum(probs)
    dice = 2 * intersection / (union + 1e-7)
    return 0.6 * bce + 0.4 * (1 - dice)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bce_and_pooled_dice_is_the_original_loss(seed):
    torch.manual_seed(seed)
    logits = 3 * torch.randn(3, 4, 16, 24)
    masks = (torch.rand(3, 4, 16, 24) > 0.8).float()
    masks[:, 2] = 0  # a class absent from the batch
    out = loss_fn(bce=0.6, dice=0, dice_pooled=0.4)(logits, masks)
    assert set(out) == {"bce", "dice_pooled", "loss"}
    torch.testing.assert_close(out["loss"], seed_bce_dice(logits, masks))


def test_total_is_the_weighted_sum_of_the_components():
    torch.manual_seed(0)
    logits, class_logits = torch.randn(2, 4, 8, 8), torch.randn(2, 4)
    masks = (torch.rand(2, 4, 8, 8) > 0.7).float()
    head = ClassHeadConfig(enabled=True, weight=0.5)
    out = loss_fn(head, bce=0.6, dice=0.4, lovasz=0.3, focal=0.2)(logits, masks, class_logits)
    weights = {"bce": 0.6, "dice": 0.4, "lovasz": 0.3, "focal": 0.2, "cls": 0.5}
    assert set(out) == {*weights, "loss"}
    expected = sum(w * out[name] for name, w in weights.items())
    torch.testing.assert_close(out["loss"], expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_give_float32_losses(dtype):
    torch.manual_seed(0)
    logits, class_logits = torch.randn(2, 4, 8, 8).to(dtype), torch.randn(2, 4).to(dtype)
    masks = (torch.rand(2, 4, 8, 8) > 0.7).to(dtype)
    loss = loss_fn(ClassHeadConfig(enabled=True), dice_pooled=0.1, lovasz=0.1, focal=0.1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = loss(logits, masks, class_logits)
    reference = loss(logits.float(), masks.float(), class_logits.float())
    for name, value in out.items():
        assert value.dtype == torch.float32 and value.ndim == 0, name
        torch.testing.assert_close(value, reference[name])


def test_class_loss_targets_presence_with_pos_weight():
    masks = torch.zeros(1, 4, 2, 2)
    masks[0, 1, 1, 1] = 1  # only class 2 is present
    logits, class_logits = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4)
    plain = loss_fn(ClassHeadConfig(enabled=True))(logits, masks, class_logits)
    head = ClassHeadConfig(enabled=True, pos_weight=(1, 2, 3, 4))
    weighted = loss_fn(head)(logits, masks, class_logits)
    # each element costs ln 2 at logit 0; the positive one is multiplied by pos_weight[1] = 2
    assert plain["cls"].item() == pytest.approx(math.log(2))
    assert weighted["cls"].item() == pytest.approx(5 / 4 * math.log(2))
    mask_part = (weighted["loss"] - 0.2 * weighted["cls"]).item()
    assert mask_part == pytest.approx((plain["loss"] - 0.2 * plain["cls"]).item())


def test_classifier_loss_is_the_presence_bce_alone():
    masks = torch.zeros(2, 4, 2, 2)
    masks[0, 0, 0, 0] = 1  # image 0 has class 1; image 1 has nothing
    config = Config.model_validate(
        {"name": "c", "task": "classify", "model": {"class_head": {"pos_weight": [3, 1, 1, 1]}}}
    )
    loss = build_loss(config)
    out = loss(None, masks, torch.zeros(2, 4))
    # 8 elements at logit 0 cost ln 2 each; the one positive is weighted 3: 10 ln 2 / 8
    assert set(out) == {"cls", "loss"}
    assert out["loss"].item() == pytest.approx(10 / 8 * math.log(2))
    assert isinstance(build_loss(Config(name="s")), SegmentationLoss)
