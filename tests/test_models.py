"""Forward, backward, odd sizes, channel counts and bad input, for every model case."""
import pytest
import torch

from mobileunet import UNet, count_params, unet_2015
from mobileunet.checkpoint import load_checkpoint, save_checkpoint

from model_tester import CASES

ids = [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("in_ch,out_ch", [(1, 1), (3, 2)])
def test_forward_shape_and_channels(case, in_ch, out_ch):
    model = case.build(in_channels=in_ch, out_channels=out_ch).eval()
    y = model(torch.randn(2, in_ch, case.size, case.size))
    assert y.shape == (2, out_ch, case.size, case.size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_backward_reaches_every_parameter(case):
    model = case.build(in_channels=1, out_channels=1)
    model(torch.randn(2, 1, case.size, case.size)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_odd_sizes_keep_the_input_size(case):
    model = case.build(in_channels=1, out_channels=1).eval()
    h, w = case.odd_size
    assert model(torch.randn(1, 1, h, w)).shape == (1, 1, h, w)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_wrong_channels_give_a_clear_error(case):
    model = case.build(in_channels=3, out_channels=1)
    with pytest.raises(ValueError, match="channel"):
        model(torch.randn(1, 1, case.size, case.size))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_checkpoint_round_trip(case, tmp_path):
    model = case.build(in_channels=1, out_channels=1).eval()
    x = torch.randn(1, 1, case.size, case.size)
    path = save_checkpoint(tmp_path / "m.pt", model, {"note": "test"})
    again, meta = load_checkpoint(path)
    assert meta == {"note": "test"}
    assert type(again) is type(model)
    torch.testing.assert_close(again(x), model(x))


def test_unet_2015_has_the_papers_parameter_count():
    # 64-128-256-512-1024 with BN and 2x2 up-convs: 31,036,481 parameters
    assert count_params(unet_2015()) == 31_036_481


@pytest.mark.parametrize("kwargs,match", [
    ({"base": 0}, "base"),
    ({"base": 7}, "odd"),
    ({"depth": -1}, "depth"),
    ({"in_channels": 1.5}, "in_channels"),
    ({"upsample": "cubic"}, "upsample"),
])
def test_bad_unet_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_missing_batch_dimension_is_explained():
    with pytest.raises(ValueError, match="batch dimension"):
        UNet(base=8, depth=2)(torch.randn(1, 32, 32))


def test_checkpoint_refuses_a_mismatched_architecture(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", UNet(base=8, depth=2))
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["base"] = 16
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="does not fit UNet"):
        load_checkpoint(path)


def test_checkpoint_refuses_a_pickled_module(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(UNet(base=8, depth=2), path)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        load_checkpoint(path)
