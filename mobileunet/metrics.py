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


# --- image-to-image metrics (lesson 06): how close is a student's image to the teacher's? ------


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range**2 / MSE)`` in dB; shape ``(B,)``.

    28 dB is an RMS error of 4% of the range (10 grey levels of 255).

    Example:
        >>> psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).round().tolist()
        [20.0]
    """
    _same_images(pred, target)
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5,
         reduction: str = "image") -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5; differentiable.

    Each channel is compared on its own and the map is averaged (the paper's
    Sec. III-C recipe, ``K1 = 0.01``, ``K2 = 0.03``); the window is not padded,
    as in the paper. Matches ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)``. ``reduction="image"`` gives one score per image, shape ``(B,)``;
    ``"map"`` the per-pixel map.
    """
    import torch.nn.functional as F

    _same_images(pred, target)
    if reduction not in ("image", "map"):
        raise ValueError(f"reduction={reduction!r}: use 'image' or 'map'")
    B, C, H, W = pred.shape
    radius = int(3.5 * sigma + 0.5)                       # skimage's truncate=3.5 -> 11 taps at 1.5
    if min(H, W) < 2 * radius + 1:
        raise ValueError(f"images of {H}x{W} are smaller than the {2 * radius + 1}-pixel SSIM window: "
                         f"use crops of at least {2 * radius + 1} pixels")
    x = torch.arange(-radius, radius + 1, dtype=pred.dtype, device=pred.device)
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = (g / g.sum()).repeat(C, 1, 1)                     # (C, 1, K): one separable window per channel

    def blur(t):                                          # separable Gaussian, no padding
        t = F.conv2d(t, g[:, :, None, :], groups=C)       # along W
        return F.conv2d(t, g[:, :, :, None], groups=C)    # along H

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s if reduction == "map" else s.flatten(1).mean(1)


def _same_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}: add a batch dimension with x[None]")
