"""The UNet's parts (Ronneberger et al. 2015, Fig. 1), built by hand in lesson 01.

Departures from the paper, as almost every modern UNet makes them:
``padding=1`` so a 3x3 conv keeps the size (the paper used unpadded convs and
cropped the skips), and BatchNorm after each conv (the paper predates it).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Layer = Callable[..., nn.Module]


class DoubleConv(nn.Sequential):
    """3x3 conv -> BN -> ReLU, twice. Keeps H and W; changes the channel count."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None,
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU):
        mid_ch = mid_ch or out_ch
        super().__init__(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False),  # no bias: the norm has one
            norm(mid_ch),
            act(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False),
            norm(out_ch),
            act(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool -> DoubleConv: halves H and W, usually doubles the channels."""

    def __init__(self, in_ch: int, out_ch: int, norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch, norm=norm, act=act))


class Up(nn.Module):
    """Upsample x2 -> pad to the skip's exact size -> concat the skip -> DoubleConv.

    ``mode="transpose"`` is the paper's learned 2x2 up-convolution, which also
    halves the channels; ``"bilinear"`` or ``"nearest"`` are free resizes, so the
    DoubleConv's first conv does the halving instead. Padding to the skip's size
    is what lets odd input sizes work (a 75-pixel map pools to 37, which
    upsamples to 74).
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, mode: str = "transpose",
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU):
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsampling mode {mode!r} is not one of {UPSAMPLE_MODES}")
        self.mode = mode
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_ch // 2 + skip_ch, out_ch, norm=norm, act=act)
        else:
            self.up = nn.Upsample(scale_factor=2, mode=mode,
                                  align_corners=False if mode == "bilinear" else None)
            self.conv = DoubleConv(in_ch + skip_ch, out_ch, mid_ch=(in_ch + skip_ch) // 2,
                                   norm=norm, act=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)                                   # (B, C', 2h, 2w)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])  # (B, C', H, W)
        return self.conv(torch.cat([skip, x], dim=1))   # (B, out_ch, H, W)


class UpNoSkip(nn.Module):
    """Up without the skip: the ablation of lesson 02 (what does the skip carry?)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, mode: str = "transpose",
                 norm: Layer = nn.BatchNorm2d, act: Layer = nn.ReLU):
        super().__init__()
        self.inner = Up(in_ch, 0, out_ch, mode=mode, norm=norm, act=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        empty = skip[:, :0]                              # keep only the size of the skip
        return self.inner(x, empty)


UPSAMPLE_MODES = ("transpose", "bilinear", "nearest")
