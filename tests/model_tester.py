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


CASES: list[ModelCase] = [
    ModelCase("unet", _unet),
    ModelCase("unet-bilinear", _unet_bilinear),
    ModelCase("unet-noskip", _unet_noskip),
]
