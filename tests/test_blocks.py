"""MobileNet blocks: parameter counts against the formulas, shapes, and equality with torchvision."""
import pytest
import torch
from torch import nn

from mobileunet import count_params
from mobileunet.blocks import (ConvNormAct, DepthwiseSeparable, InvertedResidual, copy_weights,
                               make_divisible, mobilenet_v2_block, mobilenet_v3_block, squeeze_excite)


@pytest.mark.parametrize("cin,cout,k", [(16, 32, 3), (32, 64, 5), (8, 8, 3)])
def test_standard_and_separable_parameter_counts(cin, cout, k):
    bn = lambda c: 2 * c                                    # BatchNorm's weight and bias
    assert count_params(ConvNormAct(cin, cout, k)) == k * k * cin * cout + bn(cout)
    assert count_params(DepthwiseSeparable(cin, cout, kernel=k)) == \
        k * k * cin + bn(cin) + cin * cout + bn(cout)


@pytest.mark.parametrize("cin,cout,hidden,stride", [(16, 24, 96, 2), (24, 24, 144, 1), (32, 16, 32, 1)])
def test_inverted_residual_parameter_count(cin, cout, hidden, stride):
    expand = cin * hidden + 2 * hidden if hidden != cin else 0
    expected = expand + 9 * hidden + 2 * hidden + hidden * cout + 2 * cout
    block = InvertedResidual(cin, cout, hidden, stride)
    assert count_params(block) == expected
    y = block(torch.randn(2, cin, 17, 16))
    assert y.shape == (2, cout, (17 - 1) // stride + 1, 16 // stride)
    assert block.use_res == (stride == 1 and cin == cout)


def test_squeeze_excite_parameter_count_and_gate():
    se = squeeze_excite(64)                                  # squeeze to 16
    assert count_params(se) == 64 * 16 + 16 + 16 * 64 + 64
    x = torch.rand(1, 64, 8, 8)
    y = se(x)
    assert y.shape == x.shape and (y <= x + 1e-6).all()      # a gate in [0, 1] only scales down


def test_no_conv_bias_before_a_norm_and_padding_from_the_kernel():
    block = mobilenet_v3_block(16, 24, 64, stride=1, kernel=5)
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
            assert m.bias is None and m.padding == (2, 2)
    assert any(isinstance(m, nn.Hardswish) for m in block.modules())


def test_equals_torchvision_mobilenet_v2_block():
    from torchvision.models.mobilenetv2 import InvertedResidual as TVBlock

    theirs, ours = TVBlock(16, 24, stride=2, expand_ratio=6).eval(), mobilenet_v2_block(16, 24, 2).eval()
    copy_weights(theirs, ours)
    x = torch.randn(2, 16, 20, 20)
    torch.testing.assert_close(ours(x), theirs(x))


def test_equals_torchvision_mobilenet_v3_block_with_the_same_state_dict():
    from torchvision.models.mobilenetv3 import InvertedResidual as TVBlock, InvertedResidualConfig

    cnf = InvertedResidualConfig(40, 5, 120, 40, True, "HS", 1, 1, 1.0)
    theirs = TVBlock(cnf, nn.BatchNorm2d).eval()
    ours = mobilenet_v3_block(40, 40, 120, stride=1, kernel=5).eval()
    ours.load_state_dict(theirs.state_dict())               # same layout, same names
    x = torch.randn(1, 40, 12, 12)
    torch.testing.assert_close(ours(x), theirs(x))


def test_copy_weights_names_a_mismatch():
    with pytest.raises(ValueError, match="not built from the same layers"):
        copy_weights(DepthwiseSeparable(8, 16), mobilenet_v2_block(8, 16))


@pytest.mark.parametrize("kwargs,match", [
    ({"in_ch": 0, "out_ch": 8, "hidden_ch": 8}, "in_ch"),
    ({"in_ch": 8, "out_ch": 8, "hidden_ch": 8, "stride": 3}, "stride"),
])
def test_bad_block_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InvertedResidual(**kwargs)


@pytest.mark.parametrize("value,expected", [(32 * 0.35, 16), (24 * 0.5, 16), (96 * 0.5, 48), (320 * 0.75, 240)])
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected
