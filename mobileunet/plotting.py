"""Pictures for the lessons: image/mask grids, training curves, the U itself.

matplotlib is imported inside each function, so importing mobileunet never
touches a plotting backend or its style.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from .profile import trace_u


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

    Tensors in CHW or HW and arrays in HWC or HW are all accepted. Masks (only 0s and 1s)
    are drawn on a fixed 0-1 scale, so an all-ones mask shows white, not black.
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
            is_mask = img.ndim == 2 and np.isin(img, (0, 1)).all()
            ax.imshow(img, cmap=None if img.ndim == 3 else cmap,
                      **({"vmin": 0, "vmax": 1} if is_mask else {}))
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

    Works for the UNet (its ``inc``/``downs``/``ups`` blocks) and for any model
    with an ``encoder`` returning its skips and a ``decoder`` of ``blocks``,
    such as ``MobileUNet`` (lesson 04), whose last box is the full-size output.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle


    rows = trace_u(model, input_shape)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    side0 = input_shape[-1]
    centres = []
    for i, r in enumerate(rows):
        _, c, h, w = r["out_shape"]
        level = int(round(np.log2(side0 / w)))              # 0 at full resolution
        height = 0.25 + 0.07 * np.log2(h)                   # bigger maps, taller boxes
        width = 0.08 + 0.05 * np.log2(max(c, 1))            # more channels, wider boxes
        x, y = i * 0.75, -level
        color = {"enc": "tab:blue", "dec": "tab:orange"}.get(r["side"], "tab:green")
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, color=color, alpha=0.85))
        ax.text(x, y - height / 2 - 0.08, f"{c}\n{h}x{w}", ha="center", va="top", fontsize=7)
        if centres:                                         # down / up path
            px, py, pw, _ = centres[-1]
            ax.add_patch(FancyArrowPatch((px + pw / 2, py), (x - width / 2, y),
                                         arrowstyle="->", mutation_scale=8, color="k", lw=0.8))
        centres.append((x, y, width, r["side"]))
    for y in {c[1] for c in centres}:                        # skips join encoder and decoder levels
        enc = [(x, wd) for x, yy, wd, side in centres if yy == y and side == "enc"]
        dec = [(x, wd) for x, yy, wd, side in centres if yy == y and side == "dec"]
        if enc and dec:
            (x0, w0), (x1, w1) = enc[-1], dec[0]
            ax.add_patch(FancyArrowPatch((x0 + w0 / 2, y + 0.05), (x1 - w1 / 2, y + 0.05),
                                         arrowstyle="->", mutation_scale=8, color="0.55",
                                         linestyle="--", lw=0.8))
    ax.set_xlim(-0.6, len(rows) * 0.75)
    ax.set_ylim(min(c[1] for c in centres) - 1.0, max(c[1] for c in centres) + 0.8)
    ax.set_axis_off()
    output = ", output (green)" if rows[-1]["side"] == "out" else ""
    ax.set_title("The U from the model's own feature maps: encoder (blue), decoder (orange), "
                 f"skips (dashed){output}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_soft_targets(image, logits, temperatures: Sequence[float] = (1, 2, 4, 8), row: int | None = None,
                      size: float = 1.6):
    """A teacher's probabilities ``sigmoid(z / T)`` at several temperatures, and one row's profile.

    ``image`` and ``logits`` are one image's ``(1, H, W)`` or ``(H, W)`` tensors.
    The last panel plots the probabilities along image row ``row`` (by default
    the row that crosses the most cell boundaries), one curve per temperature:
    the higher T, the flatter the curve, and the more a student hears about
    where the teacher is unsure (lesson 05).
    """
    import matplotlib.pyplot as plt

    z = torch.as_tensor(logits).detach().cpu().float()
    z = z.reshape(z.shape[-2:])
    if row is None:
        row = int((z > 0).float().diff(dim=1).abs().sum(1).argmax())
    n = len(temperatures)
    fig, axes = plt.subplots(1, n + 2, figsize=(size * (n + 1) + 2.8, size + 0.4),
                             gridspec_kw={"width_ratios": [1] * (n + 1) + [1.8]})
    axes[0].imshow(_np(image), cmap="gray")
    axes[0].axhline(row, color="tab:cyan", lw=0.8)
    axes[0].set_title("image", fontsize=9)
    colors = plt.cm.viridis(np.linspace(0, 0.85, n))
    for ax, t, color in zip(axes[1:], temperatures, colors):
        ax.imshow(torch.sigmoid(z / t).numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"T = {t:g}", fontsize=9)
        axes[-1].plot(torch.sigmoid(z[row] / t).numpy(), color=color, lw=1.2, label=f"T = {t:g}")
    for ax in axes[:-1]:
        ax.axis("off")
    axes[-1].axhline(0.5, color="0.7", lw=0.6, ls="--")
    axes[-1].set(ylim=(-0.02, 1.02), xlabel="x along the cyan line", ylabel="p(cell)")
    axes[-1].tick_params(labelsize=7)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def bar_chart(rows: Sequence[dict], value: str, label: str = "model", group: str = "runtime",
              ylabel: str | None = None, title: str = "", log: bool = False, hline: float | None = None):
    """Grouped bars: one cluster per ``label`` (e.g. model), one bar per ``group`` (e.g. runtime).

    ``rows`` are dicts such as a ``profile.Table``'s rows; ``hline`` draws a
    reference line (a peak, a frame budget).
    """
    import matplotlib.pyplot as plt

    rows = list(rows)
    labels = list(dict.fromkeys(r[label] for r in rows))
    groups = list(dict.fromkeys(r.get(group, "") for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(labels) + 2), 3.2))
    width = 0.8 / len(groups)
    for j, g in enumerate(groups):
        vals = {r[label]: r[value] for r in rows if r.get(group, "") == g}
        xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [vals.get(lab, 0) for lab in labels], width, label=str(g))
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel or value, title=title, yscale="log" if log else "linear")
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls="--")
    if len(groups) > 1:
        ax.legend(fontsize=8)
    ax.title.set_fontsize(10)
    fig.tight_layout()
    return fig


def soft_targets_explorer(image, logits):
    """A slider for the temperature that redraws ``plot_soft_targets`` at T = 1 and at T (lesson 05).

    Needs a live kernel; ``plot_soft_targets`` is the static version. The figure
    is an ``Image`` widget whose value is replaced on each change, so nothing
    prints into an ``Output`` widget (which leaks into cell outputs under nbval
    and breaks nbconvert runs that do not store widget state).
    """
    try:
        import ipywidgets as W
    except ImportError as err:
        raise ImportError("the explorer needs ipywidgets: pip install 'mobileunet[course]', "
                          "or use plot_soft_targets() for the static figure") from err
    import io

    import matplotlib.pyplot as plt

    slider = W.FloatLogSlider(value=4.0, base=2, min=-1, max=4, step=0.25, description="T",
                              continuous_update=False)
    picture = W.Image(format="png", layout=W.Layout(max_width="760px"))

    def update(*_):
        fig = plot_soft_targets(image, logits, temperatures=(1, slider.value))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        picture.value = buffer.getvalue()

    slider.observe(update, names="value")
    update()
    return W.VBox([slider, picture])


def wipe_image(left, right, position: float = 0.5, line: float = 1.0) -> np.ndarray:
    """Two images of one scene joined at a vertical wipe: ``left`` up to ``position`` (0..1), ``right`` after.

    A one-pixel line of value ``line`` marks the seam. Both are CHW tensors or
    HWC arrays of the same size; returns an HWC array (lesson 06's comparison).
    """
    a, b = _np(left), _np(right)
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {a.shape} vs {b.shape}")
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"position={position!r}: a fraction of the width, 0..1")
    out = b.copy()
    x = int(round(position * a.shape[1]))
    out[:, :x] = a[:, :x]
    if 0 < x < a.shape[1]:
        out[:, x] = line
    return out


def plot_regime_map(rows: Sequence[dict], summary: Sequence[dict], teacher: dict):
    """Lesson 05's map: per regime, the share of the IoU gap distillation closed, and instance F1 per seed.

    ``rows`` are ``regimes.run_jobs``'s runs, ``summary`` its ``regimes.summarise``
    rows (their ``regime``, ``recipe`` and ``steps`` pick what is drawn: every
    ``scratch`` / ``distilled`` pair at one step count), ``teacher`` the
    teacher's scores (``iou``, ``instance_f1``). Bars are the mean over seeds,
    whiskers the smallest and largest seed; dots are the seeds.
    """
    import matplotlib.pyplot as plt

    dist = [s for s in summary if s["recipe"] == "distilled" and "gap closed" in s]
    regimes = [s["regime"] for s in dist]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.3))
    means = [s["gap closed"] for s in dist]
    err = [[m - s["gap closed min"] for m, s in zip(means, dist)],
           [s["gap closed max"] - m for m, s in zip(means, dist)]]
    ax1.bar(range(len(dist)), means, yerr=err, capsize=4, color="tab:green", alpha=0.8)
    ax1.axhline(0, color="k", lw=0.8)
    ax1.axhline(0.5, color="k", lw=0.8, ls=":")
    ax1.text(len(dist) - 0.5, 0.5, " half the gap", va="bottom", ha="right", fontsize=7)
    ax1.set_xticks(range(len(dist)), regimes, fontsize=8)
    ax1.set(ylabel="share of the IoU gap closed",
            title="IoU: scratch -> distilled, as a share of the gap to the teacher")
    for i, s in enumerate(dist):
        for recipe, dx, colour in (("scratch", -0.15, "tab:grey"), ("distilled", 0.15, "tab:green")):
            f1 = [r["instance_f1"] for r in rows
                  if (r["regime"], r["recipe"], r["steps"]) == (s["regime"], recipe, s["steps"])]
            ax2.scatter([i + dx] * len(f1), f1, color=colour, s=18, label=recipe if i == 0 else None, zorder=3)
    ax2.axhline(teacher["instance_f1"], color="tab:blue", lw=1, ls="--", label="teacher")
    ax2.set_ylim(top=max(ax2.get_ylim()[1], teacher["instance_f1"] + 0.03))
    ax2.set_xticks(range(len(dist)), regimes, fontsize=8)
    ax2.set(ylabel="instance F1 (one dot per seed)", title="are touching cells kept apart?")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def plot_iou_against_f1(rows: Sequence[dict], teacher: dict, short_steps: int):
    """Lesson 05's runs, one dot per seed: pixel IoU against instance F1, one panel per regime.

    ``rows`` are ``regimes.run_jobs``'s runs (``regime``, ``recipe``, ``steps``,
    ``iou``, ``instance_f1``); a recipe run for more than ``short_steps`` is
    labelled with its steps. ``teacher`` (``iou``, ``instance_f1``) is the star.
    A recipe up and to the right is better on both; one far right but low has
    won pixels and lost the cells.
    """
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    fig, axes = plt.subplots(1, len(regimes), figsize=(3.4 * len(regimes), 3.9), sharey=True, squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        recipes = list(dict.fromkeys((r["recipe"], r["steps"]) for r in rows if r["regime"] == regime))
        for k, (recipe, steps) in enumerate(recipes):
            runs = [r for r in rows if (r["regime"], r["recipe"], r["steps"]) == (regime, recipe, steps)]
            label = recipe + (f", {steps} steps" if steps > short_steps else "")
            ax.scatter([r["iou"] for r in runs], [r["instance_f1"] for r in runs], s=22, label=label,
                       color="tab:grey" if recipe == "scratch" else plt.cm.tab10(k), zorder=3,
                       marker="s" if steps > short_steps else "o")
        ax.scatter([teacher["iou"]], [teacher["instance_f1"]], marker="*", s=120, color="tab:blue", label="teacher")
        ax.set(title=regime, xlabel="pixel IoU")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    axes[0][0].set_ylabel("instance F1")
    fig.tight_layout()
    return fig


def plot_effect_curve(curve: dict, title: str = ""):
    """An effect student's learning curve: held-out PSNR (left), SSIM and line F1 (right) against steps.

    ``curve`` is a manifest's ``training.curve`` or ``{"step": h["eval_step"], "psnr": h["val_psnr"], ...}``
    from ``effect_distill.distill_effect``'s history.
    """
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 2.8))
    ax1.plot(curve["step"], curve["psnr"], marker="o", ms=3)
    ax1.set(xlabel="step", ylabel="held-out PSNR (dB)", title=title or "PSNR against the teacher")
    for key in ("ssim", "line_f1"):
        if key in curve:
            ax2.plot(curve["step"], curve[key], marker="o", ms=3, label=key.replace("_", " "))
    ax2.set(xlabel="step", ylim=(0, 1), title="SSIM and line F1")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig
