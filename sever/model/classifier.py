"""The standalone classifier of `task: classify`: an SMP encoder with a pooled presence head.

It answers one question per image and class, "is this defect present at all?", and its
probabilities gate or scale a segmenter's masks at inference. Built from the same SMP
encoders as the segmenters, so the 1-channel first conv and the weight options
(imagenet, a local file, null) work the same way.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base import ClassificationHead
from torch import Tensor, nn


class Classifier(nn.Module):
    """Input (N, 3, H, W) until `build_model` makes it 1-channel -> class logits (N, C).

    Args:
        encoder: an SMP encoder name (or `tu-<timm model>`).
        weights: None or "imagenet" (downloaded by SMP).
        classes: the number of presence logits.
        pooling: "avg" or "max" over the deepest feature map.
        dropout: before the linear layer.
    """

    def __init__(
        self, encoder: str, weights: str | None, classes: int, pooling: str, dropout: float
    ) -> None:
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=3, depth=5, weights=weights)
        self.classification_head = ClassificationHead(
            self.encoder.out_channels[-1], classes, pooling=pooling, dropout=dropout
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.classification_head(self.encoder(images)[-1])
