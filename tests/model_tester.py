"""The shared model tester: every architecture in the course runs these checks.

Add a model by appending a ``ModelCase`` to ``CASES``; every test in
``test_models.py`` then runs on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass
class ModelCase:
    name: str
    build: Callable[..., nn.Module]          # build(in_channels=, out_channels=)
    size: int = 64                           # a side the model accepts
    odd_size: tuple[int, int] = (75, 90)     # sizes the model must also accept


def _unet(**kw):
    from mobileunet import UNet
    return UNet(base=8, depth=3, **kw)


def _unet_bilinear(**kw):
    from mobileunet import UNet
    return UNet(base=8, depth=4, upsample="bilinear", **kw)


def _unet_noskip(**kw):
    from mobileunet import UNet
    return UNet(base=8, depth=3, upsample="nearest", skips=False, **kw)


def _mobile_unet_v2(**kw):
    from mobileunet import MobileUNet
    return MobileUNet("mobilenet_v2", width_mult=0.35, decoder_channels=(16, 8, 8, 8), **kw)


def _mobile_unet_v3_small_fullres(**kw):
    from mobileunet import MobileUNet
    return MobileUNet("mobilenet_v3_small", width_mult=0.5, decoder_channels=(16, 8, 8, 8, 4), **kw)


def _mobile_unet_v3_large_stride8(**kw):
    from mobileunet import MobileUNet
    return MobileUNet("mobilenet_v3_large", width_mult=0.35, decoder_channels=(16, 8), expand=2, **kw)


def _default_student(**kw):
    from mobileunet import default_student
    return default_student(**kw)


CASES: list[ModelCase] = [
    ModelCase("unet", _unet),
    ModelCase("unet-bilinear", _unet_bilinear),
    ModelCase("unet-noskip", _unet_noskip),
    ModelCase("mobileunet-v2", _mobile_unet_v2),
    ModelCase("mobileunet-v3s-fullres", _mobile_unet_v3_small_fullres, odd_size=(67, 45)),
    ModelCase("mobileunet-v3l-stride8", _mobile_unet_v3_large_stride8),
    ModelCase("default-student", _default_student, odd_size=(33, 97)),
]
