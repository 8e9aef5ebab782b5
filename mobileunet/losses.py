"""The losses of lesson 02. Each takes ``(logits, mask, weight)`` so the
training loop can swap them without knowing which is which."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Plain per-pixel binary cross-entropy; every pixel counts the same."""
    return F.binary_cross_entropy_with_logits(logits, mask)


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None,
              eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over each image, averaged: insensitive to how much is background."""
    p = torch.sigmoid(logits).flatten(1)
    t = mask.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def weighted_bce_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with the paper's border weight map (eq. 1): gaps between cells weigh most."""
    if weight is None:
        raise ValueError("weighted_bce_loss needs the weight map: pass the dataset's third tensor")
    per_pixel = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    return (weight * per_pixel).sum() / weight.sum()


def bce_dice_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + Dice: the common modern default."""
    return bce_loss(logits, mask) + dice_loss(logits, mask)
