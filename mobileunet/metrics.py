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


def instance_f1(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5,
                match_iou: float = 0.5) -> dict[str, float]:
    """Do predicted blobs correspond to cells one for one? F1 over matched objects.

    Each connected component of the thresholded prediction is matched to a true
    cell when their IoU is at least ``match_iou`` (at 0.5 a match is unique).
    Pixel IoU barely notices two touching cells merged into one blob; this
    metric counts it as one miss and one false blob. ``labels`` holds
    per-image cell ids (0 = background), shape (N, 1, H, W) or (N, H, W).
    """
    import numpy as np
    from scipy import ndimage

    probs = probs.reshape(len(probs), *probs.shape[-2:]).cpu().numpy()
    labels = labels.reshape(len(labels), *labels.shape[-2:]).cpu().numpy()
    if probs.shape != labels.shape:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must hold the same images")
    matched = n_true = n_pred = 0
    for p, t in zip(probs, labels):
        comp, n_comp = ndimage.label(p > threshold)
        t = t.astype(np.int64)
        n_t = int(t.max())
        pairs = np.bincount(comp.ravel() * (n_t + 1) + t.ravel(),
                            minlength=(n_comp + 1) * (n_t + 1)).reshape(n_comp + 1, n_t + 1)
        area_p, area_t = pairs.sum(1, keepdims=True), pairs.sum(0, keepdims=True)
        ious = pairs / np.maximum(area_p + area_t - pairs, 1)
        matched += int((ious[1:, 1:] >= match_iou).sum())
        n_true += len(np.unique(t)) - (1 if (t == 0).any() else 0)
        n_pred += n_comp
    precision = matched / max(n_pred, 1)
    recall = matched / max(n_true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"instance_f1": f1, "precision": precision, "recall": recall,
            "cells": n_true, "blobs": n_pred}
