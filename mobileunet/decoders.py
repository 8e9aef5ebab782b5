"""A decoder made of MobileNet blocks (lesson 04).

It honours the encoder contract of ``encoders.py``: given the encoder's
``out_channels`` (strides 2..32) and an explicit ``decoder_channels``, each
stage doubles the resolution, concatenates the skip at that stride and mixes
with one inverted residual. Stages beyond the stride-2 skip have no skip and
go to the input's full size.

Two choices come from measurements (lesson 04 and docs/export.md):

* the inverted residual expands relative to its *output* channels; expanding
  the wide concatenation (e.g. 320 + 96 channels) six times made most of a
  decoder's FLOPs;
* upsampling is bilinear, which XNNPACK (ExecuTorch's CPU backend) runs, unlike
  nearest; and it resizes to the skip's exact size, so odd input sizes work.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import InvertedResidual, Layer
from .validate import is_whole, whole_number


class DecoderBlock(nn.Module):
    """Bilinear upsample to the skip's size -> concat skip -> inverted residual (hidden = out x expand).

    Without a skip (``skip_ch=0``) it upsamples to the ``size`` it is given.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, expand: int = 4,
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU6):
        super().__init__()
        self.in_ch, self.skip_ch, self.out_ch = in_ch, skip_ch, out_ch
        self.mode = "bilinear"          # lesson 07 sets "nearest" to show what XNNPACK leaves out
        self.block = InvertedResidual(in_ch + skip_ch, out_ch, hidden_ch=out_ch * expand,
                                      norm=norm, act=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        size = tuple(skip.shape[-2:]) if skip is not None else size
        x = F.interpolate(x, size=size, mode=self.mode,
                          align_corners=False if self.mode == "bilinear" else None)   # (B, in, H, W)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)                                    # (B, in+skip, H, W)
        return self.block(x)                                                   # (B, out, H, W)


class MobileDecoder(nn.Module):
    """Stages of ``DecoderBlock``, one per entry of ``decoder_channels``, each doubling H and W.

    Args:
        encoder_channels: the encoder's ``out_channels``, strides 2, 4, 8, 16, 32.
        decoder_channels: output channels of each stage, from stride 16 upwards.
            Four entries end at stride 2 (the skips run out there); a fifth adds
            a stage at full resolution without a skip; fewer stop earlier
            (the model's head then upsamples its logits).
        expand: the inverted residuals' expansion, relative to their output channels.

    ``forward(features, size)`` takes the encoder's list and the input's (H, W).
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int],
                 expand: int = 4, norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU6):
        super().__init__()
        if len(encoder_channels) != 5:
            raise ValueError(f"encoder_channels={tuple(encoder_channels)}: expected 5 entries "
                             f"(strides 2, 4, 8, 16, 32) from an encoder's out_channels")
        if not 1 <= len(decoder_channels) <= 5 or any(
                not is_whole(c) or c < 1 for c in decoder_channels):
            raise ValueError(f"decoder_channels={tuple(decoder_channels)!r}: give 1 to 5 positive "
                             f"ints, one per stage from stride 16 up, e.g. (64, 32, 24, 16)")
        whole_number("expand", expand, fix="the expansion, 4 or 6")
        skips = list(encoder_channels[:-1])[::-1] + [0]          # strides 16, 8, 4, 2, then none
        ins = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o, expand, norm=norm, act=act)
            for i, s, o in zip(ins, skips, decoder_channels))
        self.out_channels = decoder_channels[-1]
        self.out_stride = 2 ** (5 - len(decoder_channels))

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x, skips = features[-1], list(features[:-1])              # bottleneck at stride 32
        for block in self.blocks:
            skip = skips.pop() if skips else None
            x = block(x, skip, size)                              # (B, c_i, 2h, 2w)
        return x
