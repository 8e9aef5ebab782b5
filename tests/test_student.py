"""The MobileUNet student: arguments, config, cost budget, and ONNX Runtime parity."""
import pytest
import torch

from mobileunet import MobileUNet, count_params, default_student, mobile_unet_v2, unet_teacher
from mobileunet.models import MODELS
from mobileunet.profile import count_flops, onnx_bytes, ort_session


def test_registered_for_checkpoints_and_config_rebuilds():
    assert MODELS["MobileUNet"] is MobileUNet
    model = mobile_unet_v2(0.35, in_channels=1)
    again = MobileUNet(**model.config)
    assert again.config == model.config and count_params(again) == count_params(model)


def test_default_student_is_20x_cheaper_than_the_teacher():
    x = torch.zeros(1, 1, 256, 256)
    ratio = count_flops(unet_teacher(), x) / count_flops(default_student(in_channels=1), x)
    assert ratio >= 20


@pytest.mark.parametrize("kwargs,error,match", [
    ({"encoder": "vgg"}, ValueError, "encoder"),
    ({"width_mult": 3.0}, ValueError, "width_mult"),
    ({"decoder_channels": ()}, ValueError, "decoder_channels"),
    ({"decoder_channels": (16, 8, 8, 8, 8, 8)}, ValueError, "decoder_channels"),
    ({"decoder_channels": 16}, TypeError, "decoder_channels"),
    ({"out_channels": 0}, ValueError, "out_channels"),
    ({"expand": 0}, ValueError, "expand"),
])
def test_bad_arguments_name_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        MobileUNet(**kwargs)


def test_onnx_runtime_matches_eager():
    torch.manual_seed(0)
    model = default_student(in_channels=3, out_channels=2).eval()
    x = torch.randn(1, 3, 64, 96)
    session = ort_session(onnx_bytes(model, x), threads=1)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert got.shape == (1, 2, 64, 96)
    assert float((torch.from_numpy(got) - want).abs().max()) < 1e-4
