"""The pre-flight checks of lesson 02: overfit one batch, the learning-rate range test, layer statistics."""
import itertools

import pytest
import torch

from mobileunet import UNet, bce_loss, set_seed
from mobileunet.diagnostics import layer_stats, lr_range_test, overfit_batch


def batch(n=4, side=16):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 1, side, side, generator=g)
    mask = (image > 0.5).float()
    return image, mask, torch.ones_like(mask)


def small_unet():
    set_seed(0)
    return UNet(in_channels=1, out_channels=1, base=4, depth=2)


def test_overfit_batch_drives_the_loss_down():
    image, mask, weight = batch()
    losses = overfit_batch(small_unet(), image, mask, bce_loss, weight, steps=60, lr=1e-2)
    assert len(losses) == 60 and losses[-1] < 0.5 * losses[0]


def test_lr_range_test_raises_the_rate_and_stops_when_the_loss_blows_up():
    image, mask, weight = batch()
    out = lr_range_test(small_unet(), itertools.repeat((image, mask, weight)), bce_loss,
                        lr_min=1e-4, lr_max=1e3, steps=40)
    assert out["lr"][0] == pytest.approx(1e-4)
    assert all(b > a for a, b in zip(out["lr"], out["lr"][1:]))
    assert len(out["lr"]) == len(out["loss"]) <= 40
    with pytest.raises(ValueError, match="lr_min"):
        lr_range_test(small_unet(), [], bce_loss, lr_min=1.0, lr_max=0.1)


def test_layer_stats_one_row_per_block_and_the_model_left_as_it_was():
    model = small_unet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, mask, weight = batch()
    rows = layer_stats(model, image, mask, bce_loss, weight)
    assert [r["layer"] for r in rows] == ["inc", "downs.0", "downs.1", "ups.0", "ups.1", "outc"]
    assert all(r["grad_norm"] > 0 and 0 <= r["act_zero"] <= 1 for r in rows)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_batches_are_refused_with_the_shapes():
    image, mask, _ = batch()
    with pytest.raises(ValueError, match=r"\(4, 1, 16, 16\)"):
        overfit_batch(small_unet(), image[0], mask, bce_loss)
