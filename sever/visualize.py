"""Masks drawn over images in class colours: people would rather look than read."""

from __future__ import annotations

import cv2
import numpy as np

# RGB per ClassId, chosen to stay apart on grey steel and for common colour blindness.
CLASS_COLOURS = np.array([(255, 221, 0), (255, 0, 255), (0, 200, 83), (255, 64, 0)], dtype=np.uint8)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Tint each class's pixels and outline its regions.

    Args:
        image: (H, W) uint8 grey image.
        masks: (C, H, W) masks, nonzero = class present.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rgb = np.repeat(image[:, :, None], 3, axis=2).astype(np.float32)
    for index in range(masks.shape[0]):
        mask = masks[index] > 0
        if not mask.any():
            continue
        colour = CLASS_COLOURS[index % len(CLASS_COLOURS)].astype(np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(rgb, contours, -1, tuple(int(c) for c in colour), 1)
    return rgb.clip(0, 255).astype(np.uint8)


def truth_and_prediction(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Ground truth above, prediction below, separated by a white line: (2H + 2, W, 3)."""
    gap = np.full((2, image.shape[1], 3), 255, np.uint8)
    return np.concatenate([overlay(image, truth), gap, overlay(image, pred)], axis=0)


def denormalize(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Undo Normalize: (H, W) float -> (H, W) uint8."""
    return ((image * std + mean) * 255).clip(0, 255).astype(np.uint8)
