"""Segmentation losses by name, combined with the weights of `LossConfig`.

Every term works on mask logits (N, C, H, W) against binary masks (N, C, H, W) in SMP's
multilabel mode: each class is its own sigmoid, so pixels may carry several classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sever.registry import Registry

if TYPE_CHECKING:
    from sever.config import ClassHeadConfig, Config, LossConfig


def pooled_dice_loss(mask_logits: Tensor, masks: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - one soft Dice over every pixel of every image and class: the original project's
    Dice term (its `dice`, eps 1e-7, no smoothing), so an image or class without defects
    still counts through its predicted probabilities.

    Args:
        mask_logits: (N, C, H, W).
        masks: (N, C, H, W) of 0/1.
    """
    probs = mask_logits.sigmoid()
    intersection = (probs * masks).sum()
    return 1 - 2 * intersection / (probs.sum() + masks.sum() + eps)


class PooledDiceLoss(nn.Module):
    """`pooled_dice_loss` as a module, for `LOSSES`."""

    def forward(self, mask_logits: Tensor, masks: Tensor) -> Tensor:
        return pooled_dice_loss(mask_logits, masks)


# Factories of loss modules, each called as loss(mask_logits, masks) -> scalar.
# SMP's Dice ('dice') is soft Dice per class over the whole batch, and a class with no true
# pixel in the batch contributes 0, not 1 - dice; 'dice_pooled' is the original project's
# single Dice over the batch and all classes.
LOSSES: Registry[type[nn.Module] | partial] = Registry(
    "loss",
    {
        "bce": nn.BCEWithLogitsLoss,
        "dice": partial(smp.losses.DiceLoss, smp.losses.MULTILABEL_MODE, from_logits=True),
        "dice_pooled": PooledDiceLoss,
        "lovasz": partial(smp.losses.LovaszLoss, smp.losses.MULTILABEL_MODE, from_logits=True),
        "focal": partial(smp.losses.FocalLoss, smp.losses.MULTILABEL_MODE, from_logits=True),
    },
)


class SegmentationLoss(nn.Module):
    """The weighted sum of the active mask losses, plus the class head's BCE.

    Args:
        loss: the weight of each term in `LOSSES` (terms weighted 0 are not computed), and
            the stages that change them; `set_epoch` picks the epoch's weights.
        class_head: weight and per-class pos_weight of the class head's BCE.
    """

    pos_weight: Tensor | None  # a buffer (None: unweighted)

    def __init__(self, loss: LossConfig, class_head: ClassHeadConfig) -> None:
        super().__init__()
        self.config = loss
        self.weights = loss.at_epoch(1)
        self.terms = nn.ModuleDict({name: LOSSES[name]() for name in loss.all_terms()})
        self.class_weight = class_head.weight
        pos_weight = class_head.pos_weight
        # A buffer, so it follows the module to the device.
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor(pos_weight), persistent=False
        )

    def forward(
        self, mask_logits: Tensor, masks: Tensor, class_logits: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The float32 scalar of each active term by name, 'cls' if class logits are given,
        and their weighted sum as 'loss'.

        Args:
            mask_logits: (N, C, H, W), any float dtype.
            masks: (N, C, H, W) of 0/1.
            class_logits: (N, C) from the class head, or None.
        """
        # Sums of many small terms and log-sigmoids lose too much in bf16/fp16.
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            mask_logits, masks = mask_logits.float(), masks.float()
            out = {name: self.terms[name](mask_logits, masks) for name in self.weights}
            total = sum(self.weights[name] * value for name, value in out.items())
            if class_logits is not None:
                out["cls"] = self.class_loss(class_logits.float(), masks)
                total = total + self.class_weight * out["cls"]
            out["loss"] = total
        return out

    def class_loss(self, class_logits: Tensor, masks: Tensor) -> Tensor:
        return presence_bce(class_logits, masks, self.pos_weight)

    def set_epoch(self, epoch: int) -> dict[str, float] | None:
        """Use `epoch`'s weights; the new weights when they change, else None."""
        weights = self.config.at_epoch(epoch)
        changed = weights != self.weights
        self.weights = weights
        return weights if changed else None


class PresenceLoss(nn.Module):
    """A classifier's loss (`task: classify`): the presence BCE alone, as 'cls' and 'loss'.

    Args:
        pos_weight: per-class weight of the positive term (rare classes up), one for every
            class, or None.
    """

    pos_weight: Tensor | None  # a buffer (None: unweighted)

    def __init__(self, pos_weight: Sequence[float] | float | None) -> None:
        super().__init__()
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor(pos_weight), persistent=False
        )

    def forward(self, mask_logits: None, masks: Tensor, class_logits: Tensor) -> dict[str, Tensor]:
        with torch.autocast(device_type=class_logits.device.type, enabled=False):
            value = presence_bce(class_logits.float(), masks.float(), self.pos_weight)
        return {"cls": value, "loss": value}

    def set_epoch(self, epoch: int) -> dict[str, float] | None:
        """One loss all along: nothing changes."""
        return None


def presence_bce(class_logits: Tensor, masks: Tensor, pos_weight: Tensor | None) -> Tensor:
    """BCE of class logits (N, C) against per-class presence in `masks` (N, C, H, W)."""
    present = masks.amax(dim=(2, 3))
    return F.binary_cross_entropy_with_logits(class_logits, present, pos_weight=pos_weight)


def build_loss(config: Config) -> SegmentationLoss | PresenceLoss:
    """The loss of the config's task: masks (+ presence head) or presence alone."""
    if config.task == "classify":
        return PresenceLoss(config.model.class_head.pos_weight)
    return SegmentationLoss(config.loss, config.model.class_head)
