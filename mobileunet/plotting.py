"""Pictures for the lessons: image/mask grids, training curves, the U itself.

matplotlib is imported inside each function, so importing mobileunet never
touches a plotting backend or its style.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _np(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().float().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):          # CHW -> HWC
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img


def show_grid(rows: Sequence[Sequence], titles: Sequence[str] | None = None,
              size: float = 1.6, cmaps: Sequence[str] | None = None):
    """A grid of images: ``rows[i][j]`` is one panel; ``titles`` label the columns.

    Tensors in CHW or HW and arrays in HWC or HW are all accepted.
    """
    import matplotlib.pyplot as plt

    nrows, ncols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row) or row[j] is None:
                continue
            img = _np(row[j])
            cmap = cmaps[j] if cmaps else "gray"
            ax.imshow(img, cmap=None if img.ndim == 3 else cmap)
            if titles and i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(histories: dict[str, dict], metric: str = "val_iou"):
    """Training loss (left, smoothed) and a validation metric (right) for several runs."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, h in histories.items():
        loss = np.asarray(h["loss"])
        k = max(1, len(loss) // 25)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(h["step"][k - 1:], smooth, label=name)
        ax2.plot(h["eval_step"], h[metric], marker="o", ms=3, label=name)
    ax1.set(xlabel="step", ylabel="training loss (smoothed)", yscale="log")
    ax2.set(xlabel="step", ylabel=metric.replace("_", " "))
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_unet(model: torch.nn.Module, input_shape: tuple[int, ...] = (1, 1, 256, 256)):
    """Draw the U from the model's real feature maps.

    Each box is one block's output: its height is the map's side (log scale), its
    width the channel count (log scale); grey arrows are the skips. The shapes
    come from a forward pass, so a changed model draws a changed U.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    from .profile import trace_shapes

    rows = [r for r in trace_shapes(model, torch.zeros(input_shape)) if r["layer"] != "outc"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    side0 = rows[0]["out_shape"][-1]
    centres = []
    for i, r in enumerate(rows):
        _, c, h, w = r["out_shape"]
        level = int(round(np.log2(side0 / w)))              # 0 at full resolution
        height = 0.25 + 0.07 * np.log2(h)                   # bigger maps, taller boxes
        width = 0.08 + 0.05 * np.log2(c)                    # more channels, wider boxes
        x, y = i * 0.75, -level
        color = "tab:orange" if r["layer"].startswith("ups") else "tab:blue"
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, color=color, alpha=0.85))
        ax.text(x, y - height / 2 - 0.08, f"{c}\n{h}x{w}", ha="center", va="top", fontsize=7)
        if centres:                                         # down / up path
            px, py, pw = centres[-1]
            ax.add_patch(FancyArrowPatch((px + pw / 2, py), (x - width / 2, y),
                                         arrowstyle="->", mutation_scale=8, color="k", lw=0.8))
        centres.append((x, y, width))
    by_level: dict[int, list] = {}
    for x, y, width in centres:
        by_level.setdefault(y, []).append((x, width))
    for y, boxes in by_level.items():                        # skips join equal levels
        if len(boxes) == 2:
            (x0, w0), (x1, w1) = boxes
            ax.add_patch(FancyArrowPatch((x0 + w0 / 2, y + 0.05), (x1 - w1 / 2, y + 0.05),
                                         arrowstyle="->", mutation_scale=8, color="0.55",
                                         linestyle="--", lw=0.8))
    ax.set_xlim(-0.6, len(rows) * 0.75)
    ax.set_ylim(min(y for _, y, _ in centres) - 1.0, 0.8)
    ax.set_axis_off()
    ax.set_title("The U from the model's own feature maps: encoder (blue), decoder (orange), "
                 "skips (dashed)", fontsize=9)
    fig.tight_layout()
    return fig
