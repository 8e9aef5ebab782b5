"""The architecture explorer of lesson 04, and its static fallback.

``architecture_explorer()`` is an ipywidgets panel: pick an encoder, a width
multiplier, decoder channels and an input size; it shows the parameters,
FLOPs, a quick eager latency and the U drawn from the model's feature maps.
``architecture_table()`` and ``draw_unet`` render the same facts for a fixed
list of choices, for rendered pages and for nbval, where no kernel answers a
slider. ipywidgets is imported only when the explorer is built.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .encoders import ENCODERS
from .models import MobileUNet
from .plotting import draw_unet, wipe_image
from .profile import Table, count_flops, count_params, measure_latency
from .tables import format_cell

DECODERS: dict[str, tuple[int, ...]] = {
    "default (64, 32, 24, 16, 8)": (64, 32, 24, 16, 8),
    "thin (32, 16, 16, 8, 8)": (32, 16, 16, 8, 8),
    "wide (128, 48, 32, 32, 16)": (128, 48, 32, 32, 16),
    "stops at stride 2 (64, 32, 24, 16)": (64, 32, 24, 16),
    "stops at stride 8 (64, 32)": (64, 32),
}
"""Decoder presets the explorer offers: one entry per stage, from stride 16 up."""

WIDTHS = (0.35, 0.5, 0.75, 1.0)
SIZES = (128, 256, 512)


def architecture_row(encoder: str, width_mult: float, decoder_channels: Sequence[int],
                     size: int = 256, in_channels: int = 3, latency: bool = False) -> dict:
    """Parameters and GFLOPs of one ``MobileUNet`` (and its eager latency when ``latency``)."""
    model = MobileUNet(encoder, width_mult, tuple(decoder_channels), in_channels)
    x = torch.zeros(1, in_channels, size, size)
    row = {"encoder": encoder, "width": width_mult, "decoder": str(tuple(decoder_channels)),
           "input": f"{size}x{size}", "params": count_params(model),
           "GFLOPs": round(count_flops(model, x) / 1e9, 3)}
    if latency:
        t = measure_latency({"m": model}, tuple(x.shape), threads=(torch.get_num_threads(),),
                            runtimes=("eager-cl",), warmup=2, repeats=5)
        row["eager ms"] = round(t.rows[0]["median_ms"], 1)
    return row


def architecture_table(choices: Sequence[dict], size: int = 256, in_channels: int = 3,
                       latency: bool = False) -> Table:
    """The static fallback: the explorer's numbers for a fixed list of choices.

    Each choice is a dict of ``encoder``, ``width_mult`` and ``decoder_channels``.
    Without ``latency`` every number is deterministic (params, FLOPs), so a
    notebook can check the printed table under nbval.
    """
    return Table([architecture_row(c["encoder"], c["width_mult"], c["decoder_channels"], size,
                                   in_channels, latency) for c in choices])


def architecture_explorer(in_channels: int = 3):
    """An ipywidgets panel to try MobileUNet designs; needs a live kernel.

    Returns the widget; display it as a cell's last line. The table and the
    picture are ``HTML`` and ``Image`` widgets whose values are replaced on each
    change, so nothing is printed into an ``Output`` widget (which leaks into
    cell outputs under nbval and breaks nbconvert without widget state).
    """
    try:
        import ipywidgets as W
    except ImportError as err:
        raise ImportError("the explorer needs ipywidgets: pip install 'mobileunet[course]', "
                          "or use architecture_table() for the static version") from err
    import io

    import matplotlib.pyplot as plt


    encoder = W.Dropdown(options=ENCODERS, value="mobilenet_v3_small", description="encoder")
    width = W.SelectionSlider(options=WIDTHS, value=1.0, description="width")
    decoder = W.Dropdown(options=list(DECODERS), value="default (64, 32, 24, 16, 8)", description="decoder")
    size = W.Dropdown(options=SIZES, value=256, description="input")
    timed = W.Checkbox(value=False, description="measure latency (eager, ~1 s)")
    table = W.HTML()
    picture = W.Image(format="png", layout=W.Layout(max_width="720px"))

    def update(*_):
        row = architecture_row(encoder.value, width.value, DECODERS[decoder.value], size.value,
                               in_channels, latency=timed.value)
        table.value = _html_table([row])
        model = MobileUNet(encoder.value, width.value, DECODERS[decoder.value], in_channels)
        fig = draw_unet(model, (1, in_channels, size.value, size.value))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        picture.value = buffer.getvalue()

    for w in (encoder, width, decoder, size, timed):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([encoder, width]), W.HBox([decoder, size]), timed, table, picture])


def _html_table(rows: Sequence[dict]) -> str:
    from html import escape

    head = "".join(f"<th style='padding:2px 8px'>{escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{escape(_cell(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    return format_cell(v, floatfmt="", commas_from=0)


def wipe_explorer(left, right, labels: tuple[str, str] = ("teacher", "student"), scale: int = 2):
    """A slider that wipes between two images of one scene (lesson 06); needs a live kernel.

    ``plotting.wipe_image`` is the static version. The picture is an ``Image``
    widget whose PNG is replaced on each move (nearest-neighbour enlarged
    ``scale`` times), so nothing prints into an ``Output`` widget.
    """
    try:
        import ipywidgets as W
    except ImportError as err:
        raise ImportError("the wipe needs ipywidgets: pip install 'mobileunet[course]', "
                          "or use plotting.wipe_image() for the static version") from err
    import io

    import numpy as np
    from PIL import Image as PILImage


    slider = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, readout_format=".0%",
                           description=f"{labels[0]} | {labels[1]}",
                           style={"description_width": "initial"}, layout=W.Layout(width="420px"))
    picture = W.Image(format="png")

    def update(*_):
        img = wipe_image(left, right, slider.value)
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
        buffer = io.BytesIO()
        PILImage.fromarray(img).save(buffer, format="png")
        picture.value = buffer.getvalue()

    slider.observe(update, names="value")
    update()
    return W.VBox([slider, picture])
