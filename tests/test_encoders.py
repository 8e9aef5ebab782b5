"""Encoders: strides, channels, the tap tables against torchvision, and pretrained loading offline."""
import urllib.error

import pytest
import torch

from mobileunet.encoders import (ENCODERS, MOBILENET_V3_LARGE, MOBILENET_V3_SMALL, STRIDES,
                                 MobileNetEncoder, tap_indices, weights_cache_path)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("width", [0.35, 1.0])
def test_strides_and_out_channels(name, width):
    enc = MobileNetEncoder(name, width, in_channels=1).eval()
    feats = enc(torch.zeros(1, 1, 64, 96))
    assert [f.shape[1] for f in feats] == list(enc.out_channels)
    assert [(64 // f.shape[-2], 96 // f.shape[-1]) for f in feats] == [(s, s) for s in STRIDES]


def test_the_taps_avoid_the_wide_last_conv():
    assert MobileNetEncoder("mobilenet_v2").out_channels == (16, 24, 32, 96, 320)
    assert MobileNetEncoder("mobilenet_v3_large").out_channels == (16, 24, 40, 112, 160)
    assert MobileNetEncoder("mobilenet_v3_small").out_channels == (16, 16, 24, 48, 96)


@pytest.mark.parametrize("name,table", [("mobilenet_v3_large", MOBILENET_V3_LARGE),
                                        ("mobilenet_v3_small", MOBILENET_V3_SMALL)])
def test_the_v3_tables_match_torchvision(name, table):
    import torchvision.models as tvm

    features = getattr(tvm, name)(weights=None).features
    for i, (kernel, hidden, out_ch, se, act, stride, _tap) in enumerate(table, start=1):
        dw = [m for m in features[i].modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1][0]
        assert (dw.kernel_size[0], dw.out_channels, features[i].out_channels, dw.stride[0]) == \
            (kernel, hidden, out_ch, stride), f"row {i}"
    assert tap_indices(name)[-1] == len(table)


def _hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_pretrained_loads_from_the_hub_cache(tmp_path, monkeypatch):
    import torchvision.models as tvm

    _hub(tmp_path, monkeypatch)
    torch.manual_seed(1)
    saved = tvm.mobilenet_v2(weights=None)
    path = weights_cache_path("mobilenet_v2")
    path.parent.mkdir(parents=True)
    torch.save(saved.state_dict(), path)
    enc = MobileNetEncoder("mobilenet_v2", pretrained=True)
    torch.testing.assert_close(enc.features[5].conv[0][0].weight, saved.features[5].conv[0][0].weight)
    grey = MobileNetEncoder("mobilenet_v2", in_channels=1, pretrained=True)
    torch.testing.assert_close(grey.features[0][0].weight, saved.features[0][0].weight.sum(1, keepdim=True))


def test_pretrained_offline_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    _hub(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError) as err:
        MobileNetEncoder("mobilenet_v3_small", pretrained=True)
    msg = str(err.value)
    assert "https://download.pytorch.org/models/mobilenet_v3_small" in msg
    assert str(tmp_path) in msg and "pretrained=False" in msg


@pytest.mark.parametrize("kwargs,match", [
    ({"encoder": "resnet18"}, "not one of"),
    ({"width_mult": 0}, "width_mult"),
    ({"width_mult": 0.5, "pretrained": True}, "width_mult=1.0"),
    ({"in_channels": 0}, "in_channels"),
])
def test_bad_encoder_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MobileNetEncoder(**kwargs)


def test_batchnorm_momentum_suits_short_training():
    from mobileunet.peers import lraspp_mobilenet_v3

    for model in (MobileNetEncoder("mobilenet_v3_large"), lraspp_mobilenet_v3(1, 1)):
        momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert momenta == {0.1}
