"""MobileNet blocks, built in lesson 03: why they are cheap, and when they are not.

Three recipes, each a drop-in for a standard 3x3 conv -> BN -> ReLU:

* depthwise-separable conv (MobileNetV1, Howard et al. 2017, Sec. 3.1),
* inverted residual with a linear bottleneck (MobileNetV2, Sandler et al. 2018, Sec. 3.3),
* the same with squeeze-excitation and hard-swish (MobileNetV3, Howard et al. 2019, Sec. 5).

The conv -> norm -> activation unit is torchvision's ``Conv2dNormActivation``
(padding from the kernel, no conv bias before a norm) and squeeze-excitation is
torchvision's ``SqueezeExcitation``: lesson 03 writes both by hand once and
shows they equal these. The block layout mirrors torchvision's MobileNetV3
``InvertedResidual``, so its state dict loads into ours unchanged.

Cost of a k x k conv from ``C_in`` to ``C_out`` channels on an ``H x W`` map,
in multiply-adds (FLOPs are twice that):

* standard:             ``k^2 * C_in * C_out * H * W``
* depthwise-separable:  ``(k^2 * C_in + C_in * C_out) * H * W``, a ratio of
  ``1/C_out + 1/k^2`` to the standard conv.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation as ConvNormAct
from torchvision.ops.misc import SqueezeExcitation
from .validate import whole_number

Layer = Callable[..., nn.Module]

__all__ = ["ConvNormAct", "SqueezeExcitation", "DepthwiseSeparable", "InvertedResidual",
           "make_divisible", "squeeze_excite", "mobilenet_v2_block", "mobilenet_v3_block",
           "copy_weights"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%.

    MobileNets keep every width a multiple of 8 (vector units like it); the
    width multiplier goes through this.
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _check_channels(**channels: int) -> None:
    for name, value in channels.items():
        whole_number(name, value, fix="a channel count")


class DepthwiseSeparable(nn.Sequential):
    """k x k depthwise -> BN -> act -> 1x1 pointwise -> BN -> act (MobileNetV1, Sec. 3.1).

    The depthwise conv filters each channel on its own (``groups=in_ch``); the
    pointwise 1x1 conv mixes channels. Cost ratio to a standard conv:
    ``1/out_ch + 1/kernel**2`` (about 1/8 to 1/9 for 3x3 and wide layers).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3,
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU6):
        _check_channels(in_ch=in_ch, out_ch=out_ch)
        super().__init__(
            ConvNormAct(in_ch, in_ch, kernel, stride, groups=in_ch,            # (B, in, H/s, W/s)
                        norm_layer=norm, activation_layer=act),
            ConvNormAct(in_ch, out_ch, 1, norm_layer=norm, activation_layer=act),  # (B, out, H/s, W/s)
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> act -> k x k depthwise -> BN -> act -> [SE] -> 1x1 project -> BN, + input.

    MobileNetV2 (Sec. 3.2-3.3): widen to ``hidden_ch`` where the depthwise conv
    is cheap, then project back with no activation (the *linear bottleneck*:
    a ReLU on a thin tensor destroys information). The skip is added when the
    block keeps the shape (stride 1, ``in_ch == out_ch``). MobileNetV3 (Sec. 5)
    adds squeeze-excitation after the depthwise conv and uses hard-swish.

    ``hidden_ch`` is explicit: MobileNetV2 sets it to ``in_ch * t`` (expansion
    ``t``, usually 6); the course's decoder sets it from the *output* channels,
    which is cheaper when the input is a wide concatenation. With
    ``hidden_ch == in_ch`` there is no expand conv.

    Args:
        in_ch, out_ch, hidden_ch: channel counts.
        stride: 1 or 2 (the depthwise conv strides).
        kernel: depthwise kernel size (3 or 5 in MobileNetV3).
        norm, act: layer constructors, e.g. ``nn.BatchNorm2d``, ``nn.ReLU6``, ``nn.Hardswish``.
        se: ``se(hidden_ch) -> module`` inserted after the depthwise conv, e.g.
            ``squeeze_excite``; ``None`` for none.

    Example:
        >>> InvertedResidual(16, 24, hidden_ch=96, stride=2)(torch.zeros(1, 16, 32, 32)).shape
        torch.Size([1, 24, 16, 16])
    """

    def __init__(self, in_ch: int, out_ch: int, hidden_ch: int, stride: int = 1, kernel: int = 3,
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU6,
                 se: Callable[[int], nn.Module] | None = None):
        super().__init__()
        _check_channels(in_ch=in_ch, out_ch=out_ch, hidden_ch=hidden_ch)
        if stride not in (1, 2):
            raise ValueError(f"stride={stride!r}: an inverted residual strides by 1 or 2")
        layers: list[nn.Module] = []
        if hidden_ch != in_ch:
            layers.append(ConvNormAct(in_ch, hidden_ch, 1, norm_layer=norm, activation_layer=act))
        layers.append(ConvNormAct(hidden_ch, hidden_ch, kernel, stride, groups=hidden_ch,
                                  norm_layer=norm, activation_layer=act))
        if se is not None:
            layers.append(se(hidden_ch))
        layers.append(ConvNormAct(hidden_ch, out_ch, 1, norm_layer=norm, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.use_res = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)                                   # (B, out, H/s, W/s)
        return x + y if self.use_res else y


def squeeze_excite(channels: int) -> SqueezeExcitation:
    """MobileNetV3's SE: global pool -> 1x1 to channels/4 -> ReLU -> 1x1 back -> hard-sigmoid -> scale."""
    return SqueezeExcitation(channels, make_divisible(channels // 4), scale_activation=nn.Hardsigmoid)


def mobilenet_v2_block(in_ch: int, out_ch: int, stride: int = 1, expand: int = 6) -> InvertedResidual:
    """MobileNetV2's block: expansion ``expand`` of the input, 3x3 depthwise, ReLU6."""
    return InvertedResidual(in_ch, out_ch, hidden_ch=in_ch * expand, stride=stride)


def mobilenet_v3_block(in_ch: int, out_ch: int, hidden_ch: int, stride: int = 1,
                       kernel: int = 5) -> InvertedResidual:
    """MobileNetV3's block: inverted residual with squeeze-excitation and hard-swish."""
    return InvertedResidual(in_ch, out_ch, hidden_ch, stride, kernel, act=nn.Hardswish,
                            se=squeeze_excite)


def copy_weights(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Copy ``src``'s parameters and buffers into ``dst`` in order, checking every shape.

    For "build it by hand, then check it equals the package": two modules with
    the same tensors in the same order but different names become the same
    function.
    """
    s, d = list(src.state_dict().items()), list(dst.state_dict().items())
    if len(s) != len(d):
        raise ValueError(f"{type(src).__name__} has {len(s)} tensors, {type(dst).__name__} has "
                         f"{len(d)}: the two modules are not built from the same layers")
    state = {}
    for (ks, vs), (kd, vd) in zip(s, d):
        if vs.shape != vd.shape:
            raise ValueError(f"{ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}: "
                             f"the layers differ in order or size")
        state[kd] = vs.clone()
    dst.load_state_dict(state)
    return dst

