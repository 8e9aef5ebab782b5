"""The architecture explorer and its static fallback."""
import matplotlib

matplotlib.use("Agg")

from mobileunet.widgets import DECODERS, architecture_explorer, architecture_table  # noqa: E402


def test_static_table_is_deterministic_and_complete():
    choices = [{"encoder": "mobilenet_v3_small", "width_mult": 1.0, "decoder_channels": d}
               for d in DECODERS.values()]
    table = architecture_table(choices, size=64, in_channels=1)
    assert len(table) == len(DECODERS)
    assert table.rows == architecture_table(choices, size=64, in_channels=1).rows
    assert set(table.rows[0]) == {"encoder", "width", "decoder", "input", "params", "GFLOPs"}


def test_explorer_updates_its_table_and_picture():
    panel = architecture_explorer(in_channels=1)
    (_enc, _width), (decoder, size) = panel.children[0].children, panel.children[1].children
    table, picture = panel.children[3], panel.children[4]
    before = table.value
    size.value = 128
    decoder.value = "stops at stride 8 (64, 32)"
    assert table.value != before and "128x128" in table.value
    assert picture.value[:4] == b"\x89PNG"


def test_show_grid_draws_masks_on_a_fixed_scale():
    import torch

    from mobileunet.plotting import show_grid

    ones, image = torch.ones(8, 8), torch.linspace(0, 0.5, 64).reshape(8, 8)
    fig = show_grid([[ones, image]])
    mask_im, image_im = (ax.get_images()[0] for ax in fig.axes[:2])
    assert mask_im.get_clim() == (0, 1)            # an all-ones mask is white, not black
    assert image_im.get_clim() == (0.0, 0.5)       # an image keeps its own range
