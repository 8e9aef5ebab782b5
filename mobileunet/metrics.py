"""Segmentation metrics on binary masks: IoU (Jaccard) and Dice (F1)."""
from __future__ import annotations

import torch


def _binary(pred: torch.Tensor, target: torch.Tensor, threshold: float, from_logits: bool):
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if from_logits:
        pred = torch.sigmoid(pred)
    return pred > threshold, target > 0.5


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5,
        from_logits: bool = False, eps: float = 1e-7) -> float:
    """Intersection over union of the foreground, pooled over the whole batch.

    ``pred`` holds probabilities (or logits with ``from_logits=True``); it is
    thresholded at ``threshold``. Two empty masks count as a perfect match.
    """
    p, t = _binary(pred, target, threshold, from_logits)
    inter, union = (p & t).sum().item(), (p | t).sum().item()
    return 1.0 if union == 0 else (inter + eps) / (union + eps)


def dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5,
         from_logits: bool = False, eps: float = 1e-7) -> float:
    """Dice coefficient 2|P n T| / (|P| + |T|); equals 2 IoU / (1 + IoU)."""
    p, t = _binary(pred, target, threshold, from_logits)
    inter, total = (p & t).sum().item(), (p.sum() + t.sum()).item()
    return 1.0 if total == 0 else (2 * inter + eps) / (total + eps)
