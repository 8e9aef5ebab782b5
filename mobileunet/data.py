"""Embedded data: a deterministic generator of microscopy-like touching cells.

It stands in for the ISBI 2012 EM stack of the UNet paper: bright cells with
dark membranes, many of them touching, so the thin background gaps between
neighbours are what the model has to get right. Everything is generated from a
seed: no download, same seed -> same pixels on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

SPLITS = ("train", "val", "unlabelled")


@dataclass(frozen=True)
class CellSample:
    image: np.ndarray   # (H, W) float32 in [0, 1]
    mask: np.ndarray    # (H, W) float32, 1 inside a cell, 0 on background and gaps
    weight: np.ndarray  # (H, W) float32, the paper's border weight map
    labels: np.ndarray  # (H, W) int32, 0 background, k for cell k


def border_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The UNet paper's weight map (Ronneberger et al. 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))`` where
    ``w_c`` balances the class frequencies and ``d1``, ``d2`` are the distances
    to the nearest and second-nearest cell. The second term is large only in
    the narrow gaps between touching cells, so the loss pays most attention
    where a model would otherwise merge two cells into one.
    The distance term is applied on background pixels only, as in the paper's
    Fig. 3d.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D label image, got shape {labels.shape}")
    fg = labels > 0
    frac = float(fg.mean())
    w_c = np.where(fg, 0.5 / max(frac, 1e-6), 0.5 / max(1.0 - frac, 1e-6))
    ids = [k for k in np.unique(labels) if k > 0]
    if len(ids) < 2:
        return w_c.astype(np.float32)
    dists = np.stack([ndimage.distance_transform_edt(labels != k) for k in ids])
    two = np.partition(dists, 1, axis=0)[:2]         # the two smallest, in order
    d1, d2 = two[0], two[1]
    w = w_c + np.where(fg, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))
    return w.astype(np.float32)


def make_cell_image(size: int | tuple[int, int] = 128, seed: int = 0, gap: float = 0.08,
                    w0: float = 10.0, sigma: float = 5.0) -> CellSample:
    """One synthetic image of touching cells with its mask, labels and weight map.

    Recipe: random ellipses packed closer than their radii so they overlap;
    each pixel belongs to the cell whose ellipse it is deepest inside; pixels
    nearly equally deep in two cells become the background gap between them.
    The image is bright cytoplasm with a darker nucleus, dark membranes, an
    uneven background, blur and noise.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if min(h, w) < 16:
        raise ValueError(f"size {size!r} is too small for cells: use at least 16 pixels")
    rng = np.random.default_rng(seed)
    scale = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    n = max(2, int(rng.integers(18, 30) * h * w / 128**2))
    centres = rng.uniform([0, 0], [h, w], size=(n, 2))
    radii = rng.uniform(0.07, 0.12, size=n) * scale
    aspect = rng.uniform(0.7, 1.0, size=n)
    angle = rng.uniform(0, np.pi, size=n)

    depth = np.empty((n, h, w), np.float32)          # < 1 inside ellipse k, 0 at its centre
    for k in range(n):
        dy, dx = yy - centres[k, 0], xx - centres[k, 1]
        c, s = np.cos(angle[k]), np.sin(angle[k])
        u, v = c * dx + s * dy, -s * dx + c * dy
        depth[k] = np.sqrt((u / radii[k]) ** 2 + (v / (radii[k] * aspect[k])) ** 2)

    order = np.partition(depth, 1, axis=0)[:2]       # deepest and second-deepest
    nearest = np.argmin(depth, axis=0)
    inside = order[0] < 1.0
    contested = (order[1] - order[0]) < gap          # nearly equally deep in two cells
    labels = np.where(inside & ~contested, nearest + 1, 0).astype(np.int32)
    mask = (labels > 0).astype(np.float32)

    own = np.take_along_axis(depth, nearest[None], 0)[0]
    image = 0.25 + 0.15 * ndimage.gaussian_filter(rng.normal(size=(h, w)), scale / 6) * (scale / 6)
    brightness = rng.uniform(0.65, 0.85, size=n + 1)[labels]
    image = np.where(labels > 0, brightness, image)
    image -= 0.25 * (labels > 0) * (own < 0.3)                   # nucleus
    membrane = inside & ((own > 0.85) | contested)
    image = np.where(membrane, 0.1, image)                       # dark membranes and gaps
    texture = ndimage.gaussian_filter(rng.normal(size=(h, w)), 1.5)
    image = ndimage.gaussian_filter(image + 0.15 * texture, 0.8)
    image = image + rng.normal(scale=0.04, size=(h, w))
    image = np.clip(image, 0.0, 1.0).astype(np.float32)

    weight = border_weight_map(labels, w0=w0, sigma=sigma)
    return CellSample(image=image, mask=mask, weight=weight, labels=labels)


class CellsDataset(Dataset):
    """A fixed split of generated cell images as ``(image, mask, weight)`` tensors.

    Each split draws its images from its own seeds, so train and val never
    share a picture, and ``CellsDataset("val", ...)`` holds the same pixels on
    every machine. The whole split is generated up front (a few ms an image).

    Args:
        split: ``"train"``, ``"val"`` or ``"unlabelled"`` (extra images for
            teacher labelling in lesson 05; they carry masks, which that lesson
            does not use).
        n: number of images.
        size: side of the square images in pixels.
        seed: the data seed; change it for a different but equally fixed dataset.

    Example:
        >>> image, mask, weight = CellsDataset("train", n=4, size=64)[0]
        >>> image.shape, mask.shape, weight.shape
        (torch.Size([1, 64, 64]), torch.Size([1, 64, 64]), torch.Size([1, 64, 64]))
    """

    def __init__(self, split: str = "train", n: int = 64, size: int = 128, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {SPLITS}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: the number of images must be a positive int")
        self.split, self.size, self.seed = split, size, seed
        samples = [make_cell_image(size, seed=_sample_seed(seed, split, i)) for i in range(n)]
        self.images = torch.from_numpy(np.stack([s.image for s in samples]))[:, None]
        self.masks = torch.from_numpy(np.stack([s.mask for s in samples]))[:, None]
        self.weights = torch.from_numpy(np.stack([s.weight for s in samples]))[:, None]
        self.labels = torch.from_numpy(np.stack([s.labels for s in samples]))[:, None]  # cell ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i], self.weights[i]


def _sample_seed(seed: int, split: str, index: int) -> int:
    seq = np.random.SeedSequence([seed, SPLITS.index(split), index])
    return int(seq.generate_state(1)[0])


def cells_splits(n_train: int, n_val: int, size: int = 128,
                 seed: int = 0) -> tuple[CellsDataset, CellsDataset]:
    """The course's fixed train/val split of the cells data."""
    return CellsDataset("train", n_train, size, seed), CellsDataset("val", n_val, size, seed)


# --- labels as hurried annotators draw them (lesson 05) ------------------------------------------

MAX_EDGE_SHIFT = 8
"""Largest ``dilate``/``erode`` in pixels: beyond it a cell's outline says little about the cell."""


def corrupt_labels(labels: np.ndarray, rng: np.random.Generator, miss: float = 0.3,
                   dilate: int = 2, erode: int = 0) -> np.ndarray:
    """One label image redrawn the way hurried annotators draw it: cells missed, outlines off.

    Each cell is left out with probability ``miss``; each kept cell's outline
    moves by a whole number of pixels drawn uniformly from ``-erode..dilate``
    (positive grows it, negative shrinks it). A grown cell takes background
    pixels, so the narrow gaps between touching cells fill in; where two grown
    cells meet, the cell with the lower id keeps the pixel. The ids of the
    kept cells are unchanged, so ``border_weight_map`` works on the result.

    Example:
        >>> lab = np.zeros((9, 9), np.int32); lab[3:6, 3:6] = 1
        >>> int((corrupt_labels(lab, np.random.default_rng(0), miss=0.0, dilate=1, erode=1) > 0).sum()) in (1, 9, 25)
        True
    """
    check_label_noise(miss, dilate, erode)
    out = np.zeros_like(labels)
    disk = ndimage.generate_binary_structure(2, 1)
    for k in (int(k) for k in np.unique(labels) if k > 0):
        keep, shift = rng.random() >= miss, int(rng.integers(-erode, dilate + 1))
        if not keep:
            continue
        cell = labels == k
        if shift > 0:
            cell = ndimage.binary_dilation(cell, disk, iterations=shift)
        elif shift < 0:
            cell = ndimage.binary_erosion(cell, disk, iterations=-shift)
        out = np.where(cell & (out == 0), k, out)
    return out.astype(labels.dtype)


def check_label_noise(miss: float, dilate: int, erode: int) -> None:
    """Raise ``ValueError`` naming the bad rate or shift of ``corrupt_labels``."""
    if isinstance(miss, bool) or not isinstance(miss, (int, float)) or not 0.0 <= miss <= 1.0:
        raise ValueError(f"miss={miss!r}: the share of cells left out must be a number from 0 to 1 "
                         f"(0.3 leaves out about a third)")
    for name, value in (("dilate", dilate), ("erode", erode)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value <= MAX_EDGE_SHIFT:
            raise ValueError(f"{name}={value!r}: give whole pixels from 0 to {MAX_EDGE_SHIFT} "
                             f"(2 moves an outline by up to 2 px)")


class NoisyLabels(Dataset):
    """A cells split whose masks were drawn badly (``corrupt_labels``); the images are untouched.

    ``images`` are the clean split's; ``masks``, ``weights`` and ``labels`` are
    recomputed from the corrupted cell ids, so the border weight map stresses
    the gaps the annotator drew, not the true ones. ``true_masks`` keeps the
    clean masks for grading the labels. Seeded by ``seed``: the same
    arguments give the same labels on every machine.

    Args:
        clean: a ``CellsDataset`` split to corrupt.
        miss: share of cells left out of the masks, 0..1.
        dilate, erode: the largest outline shift outwards / inwards, whole pixels.
        seed: seed of the corruption (not of the images).

    Example:
        >>> noisy = NoisyLabels(CellsDataset("train", n=2, size=64), miss=0.3, dilate=2)
        >>> len(noisy), tuple(noisy[0][1].shape)
        (2, (1, 64, 64))
    """

    def __init__(self, clean: "CellsDataset", miss: float = 0.3, dilate: int = 2, erode: int = 0,
                 seed: int = 0):
        check_label_noise(miss, dilate, erode)
        if not isinstance(getattr(clean, "labels", None), torch.Tensor):
            raise TypeError(f"clean must be a CellsDataset (it needs cell ids in .labels), got "
                            f"{type(clean).__name__}")
        rng = np.random.default_rng([seed, 7])
        labels = [corrupt_labels(lab[0].numpy(), rng, miss, dilate, erode) for lab in clean.labels]
        self.images, self.true_masks = clean.images, clean.masks
        self.labels = torch.from_numpy(np.stack(labels))[:, None]
        self.masks = (self.labels > 0).float()
        self.weights = torch.from_numpy(np.stack([border_weight_map(lab) for lab in labels]))[:, None]
        self.noise = {"miss": float(miss), "dilate": int(dilate), "erode": int(erode), "seed": int(seed)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i], self.weights[i]
