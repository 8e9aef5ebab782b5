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


def gap_closed(student: float, scratch: float, teacher: float) -> float:
    """The share of the scratch-to-teacher gap a distilled student closes: ``(s - scratch) / (teacher - scratch)``.

    1 means the student matches the teacher, 0 that it is no better than the
    same student trained from scratch on the same budget, below 0 that the
    teacher's help made it worse.

    Example:
        >>> round(gap_closed(student=0.95, scratch=0.90, teacher=1.0), 3)
        0.5
    """
    for name, value in (("student", student), ("scratch", scratch), ("teacher", teacher)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"gap_closed: {name}={value!r} is not a number")
    if teacher <= scratch:
        raise ValueError(f"gap_closed: the teacher ({teacher:.4f}) is not better than scratch "
                         f"({scratch:.4f}), so there is no gap to close; compare the scores directly")
    return (student - scratch) / (teacher - scratch)


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


def line_mask(image: torch.Tensor, darker: float = 0.1, window: int = 5) -> torch.Tensor:
    """An image's thin dark lines: pixels darker than the median of their ``window`` x ``window`` neighbourhood.

    Luminance (Rec. 601 weights) more than ``darker`` below the local median: a
    median keeps regions and removes lines thinner than half the window, so
    the cartoon effect's ink lines stand out while its flat, dark regions do
    not. The same rule is applied to the teacher's and to the student's
    image, so neither is judged by a mask made for the other. ``image`` is
    ``(B, 3, H, W)`` or ``(B, 1, H, W)`` in [0, 1]; returns a ``(B, 1, H, W)``
    bool mask.
    """
    import torch.nn.functional as F

    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f"expected a (B, 3, H, W) or (B, 1, H, W) image batch, got {tuple(image.shape)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise ValueError(f"window={window!r}: give an odd number of pixels, 3 or more (5 = the usual)")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    lum = (image * w).sum(1, keepdim=True) if image.shape[1] == 3 else image
    B, _, H, W = lum.shape
    r = window // 2
    patches = F.unfold(F.pad(lum, (r, r, r, r), mode="replicate"), window)     # (B, window^2, H*W)
    median = patches.median(dim=1).values.view(B, 1, H, W)
    return (median - lum) > darker


def line_f1(pred_lines: torch.Tensor, true_lines: torch.Tensor, tolerance: int = 1) -> dict[str, float]:
    """F1 of two line masks, a pixel matching when the other mask has a line within ``tolerance`` px.

    Precision: share of predicted line pixels with a true line pixel within
    ``tolerance`` (a (2t+1)-square); recall: the same the other way round. This
    is the usual boundary F-measure (Martin, Fowlkes & Malik 2004) with a
    square window. Masks are ``(B, 1, H, W)`` bool or 0/1. Two empty masks
    score 1.

    Example:
        >>> a = torch.zeros(1, 1, 8, 8, dtype=torch.bool); a[0, 0, 4, :] = True
        >>> b = torch.roll(a, 1, dims=2)                            # the same line, 1 px lower
        >>> line_f1(b, a)["f1"], line_f1(b, a, tolerance=0)["f1"]
        (1.0, 0.0)
    """
    import torch.nn.functional as F

    _same_images(pred_lines.float(), true_lines.float())
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance={tolerance!r}: give whole pixels, 0 or more (1 = the usual)")
    p, t = pred_lines.bool(), true_lines.bool()
    grow = lambda m: F.max_pool2d(m.float(), 2 * tolerance + 1, stride=1, padding=tolerance) > 0  # noqa: E731
    n_p, n_t = int(p.sum()), int(t.sum())
    if n_p == 0 and n_t == 0:
        return {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    precision = float((p & grow(t)).sum()) / max(n_p, 1)
    recall = float((t & grow(p)).sum()) / max(n_t, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"f1": f1, "precision": precision, "recall": recall}


def _same_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}: add a batch dimension with x[None]")
