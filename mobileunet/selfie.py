"""MediaPipe's selfie segmenter rebuilt in PyTorch from the course's blocks (lesson 04, section 8).

``tflite_graph.read_tflite`` reads the production model's graph; this module
is that graph as a PyTorch model, with the official weights loaded from the
``.tflite`` file. Its recipe, read off the graph (256x256 RGB in [0, 1]):

* **encoder**: MobileNetV3-Small's first four blocks unchanged, then five
  slimmer 5x5 blocks at stride 16 (32 channels, not 40-48) and nothing at
  stride 32; squeeze-excitation gates with a sigmoid, not the paper's
  hard-sigmoid. Skips at strides 2, 4 and 8;
* **head**: LR-ASPP (Howard et al. 2019, Sec. 6.4) at stride 16: a 1x1 conv to
  128 channels times a sigmoid gate from the pooled map. The paper pools with a
  large kernel and a large stride; MediaPipe's graph pools the whole 16x16 map,
  as torchvision's ``LRASPP`` does, and so does this rebuild;
* **decoder**: three stages back to stride 2, each a bilinear 2x upsample, a
  1x1 projection to the skip's width, a global gate on the skip and a cheap
  1x1 + 3x3-depthwise refinement (``SkipGateBlock``);
* **output**: a learned 2x2 transposed conv from stride 2 to full size, one
  logit map (the ``.tflite`` ends in a sigmoid: ``torch.sigmoid(model(x))``).

Two TensorFlow habits the rebuild must copy exactly: stride-2 convs pad
``SAME`` (the extra row and column at the bottom and right, ``SameConv2d``),
and the ``.tflite``'s convs carry the batch norms folded into their biases.
Here every conv that had a norm keeps a ``BatchNorm2d`` (so the same model
trains on the cells); loading the official weights puts each folded bias in
that norm with unit scale, which is the same function.

Layouts: TFLite stores a conv's weight as OHWI (out, kh, kw, in), a depthwise
conv's as 1HWO, a transposed conv's as OHWI too; PyTorch wants OIHW,
(C, 1, kh, kw) and (in, out, kh, kw).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvNormAct, InvertedResidual, SqueezeExcitation, make_divisible
from .decoders import DecoderBlock
from .models import MODELS, register_builder
from .tflite_graph import TfliteGraph, read_tflite
from .validate import whole_number

# MediaPipe selfie segmentation's encoder (read off its graph). RE = ReLU, HS = hard-swish.
# The stem (3x3 conv, 16 ch, stride 2, hard-swish) is the stride-2 skip.
#  kernel, hidden, out_ch, SE, act, stride, tap (stride of the skip)
SELFIE_BLOCKS = [
    (3,  16,  16, True,  "RE", 2,  4),   # as MobileNetV3-Small, but with a 1x1 expand conv 16 -> 16
    (3,  72,  24, False, "RE", 2,  0),   # as MobileNetV3-Small
    (3,  88,  24, False, "RE", 1,  8),   # as MobileNetV3-Small        <- skip at stride 8
    (5,  96,  32, True,  "HS", 2,  0),   # V3-Small: 96 -> 40
    (5, 128,  32, True,  "HS", 1,  0),   # V3-Small: 240 -> 40
    (5, 128,  32, True,  "HS", 1,  0),   # V3-Small: 240 -> 40
    (5,  96,  32, True,  "HS", 1,  0),   # V3-Small: 120 -> 48
    (5,  96,  32, True,  "HS", 1, 16),   # V3-Small: 144 -> 48        <- stride 16, into the head
]                                        # (V3-Small's three stride-32 blocks are gone)
ACTIVATIONS = {"RE": nn.ReLU, "HS": nn.Hardswish}
ROW = "(kernel, hidden, out_ch, SE, act, stride, tap)"


class SameConv2d(nn.Conv2d):
    """A ``Conv2d`` padded as TensorFlow's ``padding="SAME"``: output side ``ceil(side / stride)``, and an
    odd amount of padding puts the extra row (column) at the bottom (right).

    For a 3x3 stride-2 conv on 256 pixels TensorFlow pads (0, 1), PyTorch's ``padding=1`` pads (1, 1): the
    same output size, every output pixel shifted by one input pixel. Weights trained one way are wrong
    the other way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for side, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):   # W, then H
            total = max((math.ceil(side / s) - 1) * s + k - side, 0)
            pad += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pad), self.weight, self.bias)


def same_padding(unit: ConvNormAct) -> ConvNormAct:
    """``unit`` with its strided conv replaced by a ``SameConv2d`` of the same shape (a stride-1 conv with
    an odd kernel already pads the same way in both frameworks)."""
    conv = unit[0]
    if conv.stride != (1, 1):
        unit[0] = SameConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                             groups=conv.groups, bias=conv.bias is not None)
    return unit


def sigmoid_se(channels: int) -> SqueezeExcitation:
    """MediaPipe's squeeze-excitation: pool -> 1x1 to channels/4 -> ReLU -> 1x1 -> **sigmoid** -> scale."""
    return SqueezeExcitation(channels, make_divisible(channels // 4), scale_activation=nn.Sigmoid)


def check_row(row, where: str = "row") -> tuple:
    """``row`` as a tuple of ``SELFIE_BLOCKS``' seven columns, or a ``ValueError`` naming it and the order."""
    if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != 7:
        raise ValueError(f"{where} of the encoder table is {row!r}: give 7 values, {ROW}, e.g. {SELFIE_BLOCKS[0]}")
    kernel, hidden, out_ch, se, act, stride, tap = row
    if act not in ACTIVATIONS:
        raise ValueError(f"{where} of the encoder table has act={act!r}: use one of {sorted(ACTIVATIONS)} "
                         f"(RE = ReLU, HS = hard-swish)")
    if not isinstance(se, bool):
        raise ValueError(f"{where} of the encoder table has SE={se!r}: give True or False (column 4 of {ROW})")
    for name, value, low in (("kernel", kernel, 1), ("hidden", hidden, 1), ("out_ch", out_ch, 1),
                             ("stride", stride, 1), ("tap", tap, 0)):
        whole_number(f"{where}'s {name}", value, low, fix=f"the columns are {ROW}")
    return tuple(row)


def selfie_block(row: tuple, in_ch: int, strided_conv: type[nn.Conv2d] = SameConv2d,
                 expand_same_width: bool = True) -> nn.Module:
    """One row of ``SELFIE_BLOCKS`` as the course's ``InvertedResidual``; strided convs padded ``SAME``
    unless ``strided_conv`` is ``nn.Conv2d`` (PyTorch's symmetric padding, see ``SelfieEncoder``).
    A row whose hidden width equals its input's gets MediaPipe's 1x1 expand conv anyway unless
    ``expand_same_width`` is False (then none, as in MobileNetV3-Small)."""
    kernel, hidden, out_ch, se, act, stride, _ = check_row(row)
    block = InvertedResidual(in_ch, out_ch, hidden, stride, kernel, act=ACTIVATIONS[act],
                             se=sigmoid_se if se else None)
    for unit in block.block:
        if isinstance(unit, ConvNormAct) and strided_conv is SameConv2d:
            same_padding(unit)
    if hidden != in_ch or not expand_same_width:
        return block
    expand = ConvNormAct(in_ch, hidden, 1, activation_layer=ACTIVATIONS[act])   # InvertedResidual skips it
    return nn.Sequential(expand, block)


class SelfieEncoder(nn.Module):
    """Stem + ``blocks`` (rows like ``SELFIE_BLOCKS``), returning the taps finest first.

    Honours the encoder contract of ``encoders.py`` down to stride 16: ``forward`` returns the maps at
    strides 2, 4, 8, 16 and ``out_channels`` their channel counts.

    ``strided_conv``: ``SameConv2d`` pads the stride-2 convs as TensorFlow does, which Google's weights
    need; ``nn.Conv2d`` keeps PyTorch's symmetric padding (the same output sizes), which ONNX Runtime
    and XNNPACK fold into the conv instead of copying the padded map first. ``stem_act``: the stem's
    activation (MediaPipe: hard-swish). ``expand_same_width``: see ``selfie_block``.

    Example:
        >>> [tuple(f.shape[1:]) for f in SelfieEncoder()(torch.zeros(1, 3, 256, 256))]
        [(16, 128, 128), (16, 64, 64), (24, 32, 32), (32, 16, 16)]
    """

    def __init__(self, in_channels: int = 3, blocks: Sequence[tuple] = SELFIE_BLOCKS, stem_channels: int = 16,
                 strided_conv: type[nn.Conv2d] = SameConv2d, stem_act: type[nn.Module] = nn.Hardswish,
                 expand_same_width: bool = True):
        super().__init__()
        whole_number("in_channels", in_channels)
        if strided_conv not in (SameConv2d, nn.Conv2d):
            raise TypeError(f"strided_conv={strided_conv!r}: give SameConv2d (TensorFlow's padding, for "
                            f"Google's weights) or nn.Conv2d (PyTorch's symmetric padding)")
        if not (isinstance(stem_act, type) and issubclass(stem_act, nn.Module)):
            raise TypeError(f"stem_act={stem_act!r}: give an activation class such as nn.Hardswish or nn.ReLU")
        if not isinstance(expand_same_width, bool):
            raise TypeError(f"expand_same_width={expand_same_width!r}: give True (MediaPipe) or False")
        self.stem = ConvNormAct(in_channels, stem_channels, 3, 2, activation_layer=stem_act)
        if strided_conv is SameConv2d:
            same_padding(self.stem)
        layers, ch, taps, stride = [], stem_channels, [0], 2
        blocks = [check_row(row, f"row {i}") for i, row in enumerate(blocks, start=1)]
        for i, row in enumerate(blocks, start=1):
            layers.append(selfie_block(row, ch, strided_conv, expand_same_width))
            ch, stride = row[2], stride * row[5]
            if row[-1]:
                if row[-1] != stride:
                    raise ValueError(f"row {i} of the encoder table taps stride {row[-1]}, but its output is at "
                                     f"stride {stride}")
                taps.append(i)
        self.blocks = nn.ModuleList(layers)
        self.taps = tuple(taps)
        self.out_channels = [stem_channels] + [blocks[i - 1][2] for i in taps[1:]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.stem(x)                                      # (B, 16, H/2, W/2)
        feats = [y]
        for i, block in enumerate(self.blocks, start=1):
            y = block(y)                                      # (B, C, H/s, W/s)
            if i in self.taps:
                feats.append(y)                               # s = 4, 8, 16
        return feats


class GatedHead(nn.Module):
    """LR-ASPP's head (Howard et al. 2019, Sec. 6.4): ``relu(bn(1x1 conv(x))) * sigmoid(1x1 conv(pool(x)))``.

    The pooled branch sees the whole image and says which of the 128 channels matter for it: global
    context for the price of a 1x1 conv on one pixel. The paper pools with a large kernel and a large
    stride; MediaPipe's graph (and torchvision's ``LRASPP``) pools globally, and so does this head.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.features = ConvNormAct(in_ch, out_ch, 1, activation_layer=nn.ReLU)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) * self.gate(x)                # (B, out, h, w)


class SkipGateBlock(nn.Module):
    """The selfie decoder's stage: upsample -> 1x1 project to the skip's width -> gate the skip -> refine.

    Recipe, with ``u = project(resize(x))`` and the skip ``s``:
    ``g = sigmoid(1x1(relu(1x1(pool(s + u)))))``, ``y = relu(bn(1x1(s * g + u)))``,
    ``out = y + relu(bn(3x3 depthwise(y)))``.
    Where lesson 04's ``DecoderBlock`` concatenates and runs an inverted residual expanded 4x, this
    adds (no wider tensor at all), gates the skip per channel from a pooled summary, and mixes with a
    1x1 conv and one depthwise conv at the skip's width.

    ``project_first=True`` runs the 1x1 projection *before* the resize (a 1x1 conv and a bilinear
    resize commute, up to rounding, since the resize's weights sum to 1): the same function for a
    quarter of that conv's FLOPs. MediaPipe's graph resizes first.
    """

    def __init__(self, in_ch: int, skip_ch: int, project_first: bool = False):
        super().__init__()
        if not isinstance(project_first, bool):
            raise TypeError(f"project_first={project_first!r}: give True or False")
        self.project = ConvNormAct(in_ch, skip_ch, 1, activation_layer=None)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(skip_ch, skip_ch, 1), nn.ReLU(),
                                  nn.Conv2d(skip_ch, skip_ch, 1), nn.Sigmoid())
        self.mix = ConvNormAct(skip_ch, skip_ch, 1, activation_layer=nn.ReLU)
        self.refine = ConvNormAct(skip_ch, skip_ch, 3, groups=skip_ch, activation_layer=nn.ReLU)
        self.project_first = project_first

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        resize = lambda t: F.interpolate(t, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        u = resize(self.project(x)) if self.project_first else self.project(resize(x))   # (B, C, H, W)
        y = self.mix(skip * self.gate(skip + u) + u)                                    # (B, C, H, W)
        return y + self.refine(y)


def transposed_up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """MediaPipe's output: a learned 2x2 transposed conv, stride 2 (``Convolution2DTransposeBias``)."""
    return nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)


class ShuffleUp(nn.Sequential):
    """A learned 2x upsample as a 1x1 conv to ``4 * out_ch`` channels -> ``PixelShuffle(2)``.

    The same function as ``transposed_up``: a 2x2 transposed conv at stride 2 writes each output
    pixel from the one input pixel above it, with one of four weight sets by its position in the 2x2
    block; the 1x1 conv computes all four, the shuffle puts them in place. XNNPACK runs a transposed
    conv with a generic kernel and this as a plain 1x1 conv (measured in
    ``benchmarks/selfie_students.py``). ``from_transposed`` copies a transposed conv's weights in.

    Example:
        >>> ShuffleUp(16, 1)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(self, in_ch: int, out_ch: int):
        whole_number("in_ch", in_ch)
        whole_number("out_ch", out_ch)
        super().__init__(nn.Conv2d(in_ch, 4 * out_ch, 1), nn.PixelShuffle(2))

    @torch.no_grad()
    def from_transposed(self, conv: nn.ConvTranspose2d) -> "ShuffleUp":
        """Copy a ``ConvTranspose2d(in, out, 2, stride=2)``'s weights: then both give the same output."""
        mine = self[0]
        if not isinstance(conv, nn.ConvTranspose2d) or conv.weight.shape != (
                mine.in_channels, mine.out_channels // 4, 2, 2) or conv.stride != (2, 2):
            raise ValueError(f"{conv!r}: give a ConvTranspose2d({mine.in_channels}, {mine.out_channels // 4}, "
                             f"2, stride=2)")
        w = conv.weight.permute(1, 2, 3, 0)                   # (out, 2, 2, in): channel o*4 + 2*dy + dx
        mine.weight.copy_(w.reshape(mine.out_channels, mine.in_channels, 1, 1))
        mine.bias.copy_(conv.bias.repeat_interleave(4))
        return self


class SelfieSegmenter(nn.Module):
    """MediaPipe's selfie segmentation architecture: ``SelfieEncoder`` -> ``GatedHead`` -> decoder stages up
    to stride 2 -> a learned 2x2 transposed conv to full size. Returns logits.

    Args:
        in_channels: image channels (3 for MediaPipe's RGB, 1 for the cells).
        out_channels: logit maps (1: person, or cell, against background).
        blocks: the encoder table, rows like ``SELFIE_BLOCKS``; its taps are the decoder's skips.
        head_channels: width of the LR-ASPP head at the last tap (MediaPipe: 128).
        decoder_channels: ``None`` for MediaPipe's decoder (``SkipGateBlock`` stages, each as wide as its
            skip); a tuple, one width per stage from stride 8 to stride 2, for lesson 04's stages instead
            (``decoders.DecoderBlock``: concatenate the skip, one inverted residual).
        expand: the inverted residuals' expansion when ``decoder_channels`` is given.
        project_first: MediaPipe's stages project before they resize (``SkipGateBlock``).

    Any input size works: TensorFlow's ``SAME`` padding rounds odd sides up, and the output is cut
    back to the input's size.

    Class attributes say how the layers are written: ``strided_conv``, ``stem_act`` and
    ``expand_same_width`` (see ``SelfieEncoder``), and ``output_up`` (``transposed_up``);
    ``LeanSelfieSegmenter`` changes them.

    Example:
        >>> SelfieSegmenter(in_channels=1)(torch.zeros(1, 1, 75, 90)).shape
        torch.Size([1, 1, 75, 90])
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, blocks: Sequence[tuple] = SELFIE_BLOCKS,
                 head_channels: int = 128, decoder_channels: Sequence[int] | None = None, expand: int = 4,
                 project_first: bool = False):
        super().__init__()
        whole_number("out_channels", out_channels)
        whole_number("head_channels", head_channels)
        whole_number("expand", expand, fix="the decoder's inverted-residual expansion")
        self.encoder = SelfieEncoder(in_channels, blocks, strided_conv=self.strided_conv, stem_act=self.stem_act,
                                     expand_same_width=self.expand_same_width)
        skips = self.encoder.out_channels[-2::-1]                          # 24, 16, 16: strides 8, 4, 2
        self.head = GatedHead(self.encoder.out_channels[-1], head_channels)
        if decoder_channels is None:
            widths = [head_channels, *skips]
            stages = [SkipGateBlock(a, b, project_first) for a, b in zip(widths, widths[1:])]
        else:
            widths = _decoder_widths(decoder_channels, len(skips), head_channels)
            stages = [DecoderBlock(a, s, b, expand) for a, s, b in zip(widths, skips, widths[1:])]
        self.decoder = nn.ModuleList(stages)
        self.out = self.output_up(widths[-1], out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self._config = {"in_channels": in_channels, "out_channels": out_channels,
                        "blocks": [list(r) for r in blocks], "head_channels": head_channels,
                        "decoder_channels": None if decoder_channels is None else list(widths[1:]),
                        "expand": expand, "project_first": project_first}

    strided_conv: type[nn.Conv2d] = SameConv2d       # TensorFlow's padding: Google's weights need it
    stem_act: type[nn.Module] = nn.Hardswish
    expand_same_width = True                           # MediaPipe's 1x1 16 -> 16 before its first block
    output_up = staticmethod(transposed_up)

    @property
    def config(self) -> dict:
        """The constructor arguments: what a checkpoint needs to rebuild this model."""
        return {**self._config, "blocks": [tuple(r) for r in self._config["blocks"]]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"expected a float tensor, {'RGB' if self.in_channels == 3 else 'images'} in [0, 1], "
                            f"got {kind}: use x.float() / 255 for 8-bit images")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}: "
                             f"check the channel count or add a batch dimension with x[None]")
        B, C, H, W = x.shape
        feats = self.encoder(x)                                            # strides 2, 4, 8, 16
        y = self.head(feats[-1])                                           # (B, 128, H/16, W/16)
        for block, skip in zip(self.decoder, feats[-2::-1]):
            y = block(y, skip)                                             # (B, C', 2h, 2w)
        y = self.out(y)                                                    # (B, out, 2h, 2w)
        return y if y.shape[-2:] == (H, W) else y[..., :H, :W]            # no copy when the sides are even


def _decoder_widths(decoder_channels, stages: int, head_channels: int) -> list[int]:
    if isinstance(decoder_channels, (str, bytes)) or not hasattr(decoder_channels, "__len__"):
        raise TypeError(f"decoder_channels={decoder_channels!r}: give None or a tuple of {stages} ints")
    if len(decoder_channels) != stages:
        raise ValueError(f"decoder_channels={tuple(decoder_channels)}: the encoder has {stages} skips "
                         f"(strides 8, 4, 2), so give {stages} widths")
    for i, c in enumerate(decoder_channels):
        whole_number(f"decoder_channels[{i}]", c)
    return [head_channels, *map(int, decoder_channels)]


class LeanSelfieSegmenter(SelfieSegmenter):
    """``SelfieSegmenter`` with its layers written for the runtimes rather than for Google's weights:
    PyTorch's symmetric padding on the strided convs (no padded copy of the map before each), a ReLU
    stem, no 1x1 expand conv at 128x128 before the first block (MobileNetV3-Small has none), and the
    learned 2x2 output as ``ShuffleUp`` (a 1x1 conv and a pixel shuffle, the same function as the
    transposed conv). The same constructor; Google's weights do not load into it.

    Example:
        >>> LeanSelfieSegmenter(in_channels=1, decoder_channels=(24, 16, 16))(torch.zeros(1, 1, 75, 90)).shape
        torch.Size([1, 1, 75, 90])
    """

    strided_conv = nn.Conv2d
    stem_act = nn.ReLU
    expand_same_width = False
    output_up = ShuffleUp


MODELS["SelfieSegmenter"] = SelfieSegmenter
MODELS["LeanSelfieSegmenter"] = LeanSelfieSegmenter


@register_builder("segmentation")
def selfie_segmenter(in_channels: int = 3, out_channels: int = 1) -> SelfieSegmenter:
    """MediaPipe's selfie segmentation architecture (``SELFIE_BLOCKS``, a 128-channel head), with
    batch norms, ready to train. ``mediapipe_selfie()`` is the same model with Google's weights.

    About 0.11 M parameters and 0.12 GFLOPs at 256x256 RGB, a fifth of ``default_student``'s 0.54.

    Example:
        >>> selfie_segmenter(in_channels=1)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """
    return SelfieSegmenter(in_channels, out_channels)


@register_builder("segmentation")
def selfie_student(in_channels: int = 3, out_channels: int = 1) -> SelfieSegmenter:
    """A student built from the selfie segmenter's anatomy: its encoder (MobileNetV3-Small cut at stride
    16), its LR-ASPP head and its learned 2x2 output from stride 2, with lesson 04's decoder stages
    (concatenate the skip, one inverted residual expanded 4x) at its widths (24, 16, 16).

    On the cells, MediaPipe's own gated-add decoder scored far below the default student after the
    same budget; the concatenating stages close most of that gap for over twice the FLOPs (0.27 GFLOPs at
    256x256 RGB, half the default student's). ``benchmarks/selfie_students.py`` measures all three.

    Example:
        >>> selfie_student(in_channels=1)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """
    return SelfieSegmenter(in_channels, out_channels, decoder_channels=(24, 16, 16), expand=4)


@register_builder("segmentation")
def lean_selfie_student(in_channels: int = 3, out_channels: int = 1) -> LeanSelfieSegmenter:
    """``selfie_student``'s layers (0.27 GFLOPs at 256x256 RGB) written the way ONNX Runtime and
    XNNPACK run them fastest (``LeanSelfieSegmenter``): PyTorch's padding on the strided convs, a ReLU
    stem, no extra expand conv at 128x128, and the 2x2 transposed output as a 1x1 conv and a pixel
    shuffle.

    What each change buys, and the cells IoU after lesson 04's budget: ``benchmarks/selfie_students.py``.

    Example:
        >>> lean_selfie_student(in_channels=1)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """
    return LeanSelfieSegmenter(in_channels, out_channels, decoder_channels=(24, 16, 16), expand=4)


# --- the official weights ----------------------------------------------------------------------


def _units(module: nn.Module):
    """``(conv, norm or None)`` for every convolution, in the order the modules were built (which is the
    order of the ``.tflite``'s ops, the parity test proves it)."""
    for child in module.children():
        if isinstance(child, ConvNormAct):
            yield child[0], child[1] if len(child) > 1 and isinstance(child[1], nn.BatchNorm2d) else None
        elif isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
            yield child, None
        else:
            yield from _units(child)


def _torch_weight(kind: str, w: np.ndarray) -> torch.Tensor:
    """TFLite's weight layout to PyTorch's: OHWI -> OIHW; depthwise 1HWO -> O1HW; transposed OHWI -> IOHW."""
    if kind == "DEPTHWISE_CONV_2D":
        return torch.from_numpy(w.transpose(3, 0, 1, 2).copy())
    if kind == "CONV_2D":
        return torch.from_numpy(w.transpose(0, 3, 1, 2).copy())
    return torch.from_numpy(w.transpose(3, 0, 1, 2).copy())


@torch.no_grad()
def _load_unit(conv: nn.Module, norm: nn.BatchNorm2d | None, kind: str, w: np.ndarray, b: np.ndarray | None,
               where: str) -> None:
    weight = _torch_weight(kind, w)
    if weight.shape != conv.weight.shape:
        raise ValueError(f"{where}: the file's {kind} weight {tuple(w.shape)} does not fit {type(conv).__name__} "
                         f"{tuple(conv.weight.shape)}: the file is not this architecture")
    conv.weight.copy_(weight)
    bias = torch.from_numpy(b) if b is not None else torch.zeros(weight.shape[1 if kind not in
                                                                             ("CONV_2D", "DEPTHWISE_CONV_2D") else 0])
    target = norm.bias if norm is not None else conv.bias
    if target is None or target.shape != bias.shape:
        raise ValueError(f"{where}: the file's bias {tuple(bias.shape)} has nowhere to go in this architecture")
    target.copy_(bias)
    if norm is not None:                     # the file's batch norm is folded into the conv: make ours the identity
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        norm.weight.fill_(math.sqrt(1.0 + norm.eps))


def load_tflite_weights(model: nn.Module, source: str | os.PathLike | TfliteGraph) -> nn.Module:
    """Copy a ``.tflite`` file's convolution weights into ``model``, conv by conv in execution order.

    Each weight is turned from TFLite's layout into PyTorch's and its shape checked; a folded bias goes
    into the conv's batch norm, which is set to the identity. Raises ``ValueError`` naming the first
    conv that does not fit (a different model's file), ``TypeError`` for a ``model`` that is not an
    ``nn.Module`` or a ``source`` that is neither a path nor a ``TfliteGraph``. Returns ``model`` in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={model!r}: give the nn.Module to load into, e.g. selfie_segmenter(); "
                        f"the file comes second: load_tflite_weights(model, path)")
    if isinstance(source, TfliteGraph):
        graph = source
    elif isinstance(source, (str, os.PathLike)):
        graph = read_tflite(source)
    else:
        raise TypeError(f"source={source!r}: give the .tflite file's path or a tflite_graph.TfliteGraph")
    convs, units = graph.conv_weights(), list(_units(model))
    if len(convs) != len(units):
        raise ValueError(f"{graph.path.name} has {len(convs)} convolutions, {type(model).__name__} has "
                         f"{len(units)}: the file is not this architecture (selfie_segmentation.tflite's weights "
                         f"fit only selfie_segmenter()'s architecture)")
    for i, ((op, w, b), (conv, norm)) in enumerate(zip(convs, units)):
        _load_unit(conv, norm, op.kind, w, b, f"{graph.path.name} op {op.index} (conv {i})")
    return model.eval()


def mediapipe_selfie(path: str | os.PathLike | TfliteGraph) -> SelfieSegmenter:
    """``selfie_segmenter()`` with Google's weights from MediaPipe's ``selfie_segmentation.tflite``, in
    eval mode. ``path``: the file, e.g. ``mediapipe.verify("selfie_segmentation")`` (the fetched file,
    checked against its pinned sha256).

    Input: RGB in [0, 1], ``(B, 3, H, W)``; ``torch.sigmoid(model(x))`` is the person probability.
    """
    with torch.random.fork_rng(devices=[]):   # the initial weights are all replaced: leave the caller's RNG alone
        torch.manual_seed(0)
        model = selfie_segmenter()
    return load_tflite_weights(model, path)
