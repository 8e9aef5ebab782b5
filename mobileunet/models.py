"""UNet models and their builders. The blocks live in ``layers.py``.

Lesson 01 builds this UNet by hand and proves it equals ``UNet()`` here.
"""
from __future__ import annotations

import torch
from typing import Callable

from torch import nn

from .layers import UPSAMPLE_MODES, DoubleConv, Down, Up, UpNoSkip
from .validate import whole_number

BUILDERS: dict[str, tuple[str, Callable[..., nn.Module]]] = {}
"""The one registry of model builders: ``name: (task, builder)``. The command line, the effect
command and the tests read it (``builders``); ``register_builder`` fills it."""


def register_builder(task: str):
    """Decorator: record a builder function under its name for ``task`` ("segmentation" or "effect")."""
    if task not in ("segmentation", "effect"):
        raise ValueError(f"task={task!r}: use 'segmentation' or 'effect'")

    def add(fn):
        BUILDERS[fn.__name__] = (task, fn)
        return fn
    return add


def builders(task: str | None = None) -> dict[str, Callable[..., nn.Module]]:
    """``{name: builder}`` of the registered builders, all or those of one ``task``."""
    return {name: fn for name, (t, fn) in BUILDERS.items() if task is None or t == task}


class UNet(nn.Module):
    """The 2015 UNet: an encoder of Down blocks, a decoder of Up blocks, skips between.

    Channel widths are ``base * 2**level`` for ``level = 0..depth``; the defaults
    (``base=64, depth=4``) give the paper's 64-128-256-512-1024 layout, ~31 M
    parameters.

    Args:
        in_channels: image channels (1 for the cells, 3 for photos).
        out_channels: output maps; 1 logit map for binary segmentation.
        base: channels of the first level; every level below doubles it.
        depth: how many times the encoder halves the resolution.
        upsample: ``"transpose"`` (the paper's up-convolution), ``"bilinear"``
            or ``"nearest"``.
        skips: ``False`` drops every skip connection (lesson 02's ablation).

    Any input size works: the decoder pads each upsampled map to its skip's size.

    Example:
        >>> UNet(in_channels=1, out_channels=1, base=8)(torch.zeros(1, 1, 75, 90)).shape
        torch.Size([1, 1, 75, 90])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 64,
                 depth: int = 4, upsample: str = "transpose", skips: bool = True):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base", base)):
            whole_number(name, value)
        whole_number("depth", depth, 1, 8, fix="each level halves the image, and 8 levels already need 256x256")
        if base % 2:
            raise ValueError(f"base={base} is odd: the up-convolution halves channels, use an even base")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={upsample!r} is not one of {UPSAMPLE_MODES}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth, self.base, self.upsample, self.skips = depth, base, upsample, skips

        widths = [base * 2**i for i in range(depth + 1)]          # 64, 128, 256, 512, 1024
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(depth))
        up_block = Up if skips else UpNoSkip
        self.ups = nn.ModuleList(
            up_block(widths[i + 1], widths[i], widths[i], mode=upsample)
            for i in reversed(range(depth))
        )
        self.outc = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    @property
    def config(self) -> dict:
        """The constructor arguments: what a checkpoint needs to rebuild this model."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "base": self.base, "depth": self.depth, "upsample": self.upsample,
                "skips": self.skips}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}: "
                f"check the channel count or add a batch dimension with x[None]"
            )
        feats = [self.inc(x)]                                       # (B, base, H, W)
        for down in self.downs:
            feats.append(down(feats[-1]))                           # (B, 2C, H/2, W/2)
        x = feats.pop()                                             # the bottleneck
        for up in self.ups:
            x = up(x, feats.pop())                                  # (B, C/2, 2H, 2W)
        return self.outc(x)                                         # (B, out, H, W)


@register_builder("segmentation")
def unet_2015(in_channels: int = 1, out_channels: int = 1) -> UNet:
    """The paper's layout: 64-128-256-512-1024 channels, transposed-conv upsampling."""
    return UNet(in_channels, out_channels, base=64, depth=4)


@register_builder("segmentation")
def unet_teacher(in_channels: int = 1, out_channels: int = 1) -> UNet:
    """The course's segmentation teacher: the 2015 layout at half width (base 32).

    Lesson 02 trains it on the cells. Half the width is a quarter of the
    parameters and FLOPs (7.8 M, ~31 MB in fp32), which a 2-core laptop trains
    in minutes and which still is the big, slow model of the course.
    """
    return UNet(in_channels, out_channels, base=32, depth=4)


MODELS: dict[str, type[nn.Module]] = {"UNet": UNet}
"""Classes a checkpoint may name; ``checkpoint.load_checkpoint`` rebuilds from here."""



# --- MobileUNet: the course's student (lesson 04) --------------------------------------------

from .blocks import make_divisible  # noqa: E402
from .decoders import DecoderBlock, MobileDecoder  # noqa: E402
from .effects import lines_from_lightness, mix_channels, quantise_lightness  # noqa: E402
from .encoders import MobileNetEncoder  # noqa: E402


class MobileUNet(nn.Module):
    """A UNet with a MobileNet encoder and a decoder of MobileNet blocks: the course's student.

    The encoder (``encoders.MobileNetEncoder``) returns skips at strides 2..32;
    the decoder (``decoders.MobileDecoder``) climbs back one stage per entry of
    ``decoder_channels``; a 1x1 head makes the logits, bilinearly resized to
    the input's size when the decoder stops short of it. Any input size works.

    Args:
        encoder: ``"mobilenet_v2"``, ``"mobilenet_v3_small"`` or ``"mobilenet_v3_large"``.
        width_mult: the encoder's width multiplier (0.35-1.0).
            The defaults give ``default_student()``.
        decoder_channels: output channels of each decoder stage from stride 16
            up; 4 entries end at stride 2, 5 at full resolution.
        in_channels: image channels (1 for the cells, 3 for photos).
        out_channels: output maps; 1 logit map for binary segmentation.
        expand: the decoder's inverted-residual expansion (relative to each
            stage's output channels).
        pretrained: start the encoder from torchvision's ImageNet weights
            (width 1.0 only; needs them in torch's hub cache or a network). Not
            part of ``config``: a checkpoint brings its own weights.

    Example:
        >>> MobileUNet(in_channels=1)(torch.zeros(1, 1, 75, 90)).shape
        torch.Size([1, 1, 75, 90])
    """

    def __init__(self, encoder: str = "mobilenet_v3_small", width_mult: float = 1.0,
                 decoder_channels: tuple[int, ...] = (64, 32, 24, 16, 8), in_channels: int = 3,
                 out_channels: int = 1, expand: int = 4, pretrained: bool = False):
        super().__init__()
        whole_number("out_channels", out_channels)
        if isinstance(decoder_channels, (str, bytes)) or not hasattr(decoder_channels, "__len__"):
            raise TypeError(f"decoder_channels={decoder_channels!r}: give a tuple of ints, "
                            f"one per decoder stage, e.g. (64, 24, 16, 16, 8)")
        self.encoder = MobileNetEncoder(encoder, width_mult, in_channels, pretrained)
        self.decoder = MobileDecoder(self.encoder.out_channels, tuple(decoder_channels), expand)
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, kernel_size=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self._config = {"encoder": encoder, "width_mult": float(width_mult),
                        "decoder_channels": tuple(int(c) for c in decoder_channels),
                        "in_channels": in_channels, "out_channels": out_channels, "expand": expand}

    @property
    def config(self) -> dict:
        """The constructor arguments: what a checkpoint needs to rebuild this model."""
        return {**self._config, "decoder_channels": list(self._config["decoder_channels"])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}: "
                f"check the channel count or add a batch dimension with x[None]"
            )
        B, C, H, W = x.shape
        y = self.head(self.decoder(self.skips(x), (H, W))) # (B, out, H/s, W/s), s = out_stride
        if y.shape[-2:] != (H, W):
            y = nn.functional.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
        return y                                           # (B, out, H, W)

    def skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's skips, finest first: the encoder's features at strides 2, 4, 8, 16, 32."""
        return self.encoder(x)


def _scaled(channels: tuple[int, ...], width: float) -> tuple[int, ...]:
    return tuple(make_divisible(c * width) for c in channels)


@register_builder("segmentation")
def mobile_unet_v2(width: float = 0.5, in_channels: int = 3, out_channels: int = 1) -> MobileUNet:
    """MobileNetV2 encoder at ``width``; decoder (128, 48, 32, 32, 16) scaled by ``width``.

    Five decoder stages, the last at full resolution and thin (16 x width
    channels): lesson 04 measured it to keep touching cells apart better than
    stopping at stride 2 and resizing the logits.

    Example:
        >>> mobile_unet_v2(0.5).config["decoder_channels"]
        [64, 24, 16, 16, 8]
    """
    return MobileUNet("mobilenet_v2", width, _scaled((128, 48, 32, 32, 16), width),
                      in_channels, out_channels)


@register_builder("segmentation")
def mobile_unet_v3_small(width: float = 1.0, in_channels: int = 3, out_channels: int = 1) -> MobileUNet:
    """MobileNetV3-Small encoder at ``width``; decoder (64, 32, 24, 16, 8) scaled by ``width``.

    Example:
        >>> mobile_unet_v3_small(1.0).config["decoder_channels"]
        [64, 32, 24, 16, 8]
    """
    return MobileUNet("mobilenet_v3_small", width, _scaled((64, 32, 24, 16, 8), width),
                      in_channels, out_channels)


@register_builder("segmentation")
def mobile_unet_v3_large(width: float = 1.0, in_channels: int = 3, out_channels: int = 1) -> MobileUNet:
    """MobileNetV3-Large encoder at ``width``; decoder (112, 40, 24, 16, 8) scaled by ``width``."""
    return MobileUNet("mobilenet_v3_large", width, _scaled((112, 40, 24, 16, 8), width),
                      in_channels, out_channels)


@register_builder("segmentation")
def default_student(in_channels: int = 3, out_channels: int = 1) -> MobileUNet:
    """The course's default student: ``mobile_unet_v3_small(1.0)``, chosen in lesson 04.

    MobileNetV3-Small at width 1.0, tapped before its 576-channel last conv;
    decoder (64, 32, 24, 16, 8) with expansion 4, the last stage at full
    resolution. About 0.96 M parameters and 0.54 GFLOPs at 256x256, over 40x
    fewer FLOPs than the teacher; ``benchmarks/`` measures it at well under half
    the ONNX Runtime latency of segmentation_models_pytorch's MobileNetV2 Unet.
    In lesson 04, after the same training budget, it scored higher IoU than a
    MobileNetV2 UNet of the same FLOPs and latency, and nearly as high as the
    MobileNetV3-Large one at twice the FLOPs. Width 1.0 is the one torchvision
    publishes ImageNet weights for (``pretrained=True``).
    """
    return mobile_unet_v3_small(1.0, in_channels, out_channels)


MODELS["MobileUNet"] = MobileUNet


# --- the effect student (lesson 06) -------------------------------------------------------------


class EffectStudent(MobileUNet):
    """A MobileUNet that outputs an RGB image: ``sigmoid(logit(x) + net(x))`` or ``sigmoid(net(x))``.

    With ``residual=True`` the network predicts a change to the input, in logit
    space: at initialisation (a near-zero output) the student already returns
    its input, and an effect that keeps most colours only has to learn what it
    changes (residual learning, as in VDSR, Kim et al. 2016). Adding in logit
    space and squashing with a sigmoid keeps every output in (0, 1) with a
    gradient everywhere, where a clamp would stop learning at 0 and 1.

    MobileNet encoders stride at their first layer, so the decoder's skips run
    out at stride 2 and its full-resolution stage sees only upsampled features.
    With ``full_res_skip=True`` that last stage also takes the input image as
    its skip (3 more channels at full resolution), so pixel-sharp detail such as
    the cartoon's thin edge lines has a learned path, not just the residual.
    Needs 5 ``decoder_channels`` (the 5th is the full-resolution stage). Same
    other arguments as ``MobileUNet``; ``out_channels`` must equal ``in_channels``.

    Example:
        >>> EffectStudent(residual=True)(torch.full((1, 3, 64, 64), 0.5)).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(self, encoder: str = "mobilenet_v3_small", width_mult: float = 1.0,
                 decoder_channels: tuple[int, ...] = (64, 32, 24, 16, 8), in_channels: int = 3,
                 out_channels: int = 3, expand: int = 4, pretrained: bool = False, residual: bool = True,
                 full_res_skip: bool = False):
        if out_channels != in_channels:
            raise ValueError(f"out_channels={out_channels} != in_channels={in_channels}: an effect "
                             f"maps an image to an image of the same channels")
        for name, value in (("residual", residual), ("full_res_skip", full_res_skip)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}={value!r}: give True or False")
        super().__init__(encoder, width_mult, decoder_channels, in_channels, out_channels, expand, pretrained)
        if full_res_skip:
            if len(self.decoder.blocks) != 5:
                raise ValueError(f"full_res_skip=True needs 5 decoder_channels (the 5th stage runs at full "
                                 f"resolution), got {tuple(decoder_channels)}")
            last = self.decoder.blocks[-1]
            self.decoder.blocks[-1] = DecoderBlock(last.in_ch, in_channels, last.out_ch, expand)
        self.residual, self.full_res_skip = residual, full_res_skip
        self._config["residual"] = residual
        self._config["full_res_skip"] = full_res_skip

    def skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """With ``full_res_skip`` the input image itself, at stride 1, before the encoder's features."""
        feats = super().skips(x)
        return [x, *feats] if self.full_res_skip else feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)                                        # (B, 3, H, W)
        if self.residual:
            y = y + torch.logit(x.clamp(1e-3, 1 - 1e-3))
        return torch.sigmoid(y)                                       # (B, 3, H, W) in (0, 1)


EFFECT_DECODER = (64, 32, 16, 8, 4)
"""The effect student's decoder channels, from stride 16 to full resolution (see ``effect_student``)."""


@register_builder("effect")
def effect_student(residual: bool = True, full_res_skip: bool = True,
                   decoder_channels: tuple[int, ...] = EFFECT_DECODER) -> EffectStudent:
    """An RGB effect student: ``default_student``'s encoder (MobileNetV3-Small), a thinner decoder.

    The decoder is thinner near full resolution than ``default_student``'s
    (64, 32, 24, 16, 8): at 256x256 a MobileUNet's time goes to its
    high-resolution decoder stages, and the cartoon did not miss the width.
    ``full_res_skip=True`` feeds the input image to the last, full-resolution
    decoder stage. The measurements behind both choices are in
    ``docs/effect_student.md``; lesson 06 compares it with ``guided_effect_student``.

    Example:
        >>> effect_student().config["decoder_channels"]
        [64, 32, 16, 8, 4]
    """
    return EffectStudent("mobilenet_v3_small", 1.0, tuple(decoder_channels), 3, 3, residual=residual,
                         full_res_skip=full_res_skip)


MODELS["EffectStudent"] = EffectStudent


# --- the guided effect student (lesson 06) ------------------------------------------------------


def half_size(x: torch.Tensor) -> torch.Tensor:
    """The 2x2 average of ``(B, C, H, W)``: ``(B, C, ceil(H/2), ceil(W/2))``, an odd last row or column kept.

    ``ceil_mode`` only where a side is odd: ONNX Runtime runs the plain pool
    two to four times faster, with the same numbers (``benchmarks/effect_speed.py``).
    """
    odd = any(int(side) % 2 for side in x.shape[-2:])   # int(): a Python bool even while an exporter traces
    return nn.functional.avg_pool2d(x, 2, ceil_mode=odd)


def logit_residual(y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``sigmoid(y + logit(start))``, ``start`` clamped to [1e-3, 1 - 1e-3]: a correction ``y`` of an image.

    Written as ``p / (p + (1 - p) exp(-y))``, the same number with an exp and no
    log: ONNX Runtime's log is several times slower than its exp, and this form
    runs in about half the time (``benchmarks/effect_speed.py``). ``y`` is clamped to
    [-30, 30], where the sigmoid is already within 1e-10 of 0 or 1, so the
    exp cannot overflow into a NaN gradient.
    """
    p = start.clamp(1e-3, 1 - 1e-3)
    return p / (p + (1 - p) * torch.exp(-y.clamp(-30, 30)))


def box_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over each ``(2r+1) x (2r+1)`` window, the window cut to the image at its border."""
    return nn.functional.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_upsample(guide_lo: torch.Tensor, out_lo: torch.Tensor, guide: torch.Tensor | tuple[torch.Tensor, ...],
                    r: int = 1, eps: float = 1e-4) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The fast guided filter's lift (He & Sun 2015; Wu et al., CVPR 2018, Sec. 3): low-res output to full res.

    In each ``(2r+1)``-window of the low-resolution pair, each output channel is
    fitted as a linear function ``a * guide + b`` of the same guide channel
    (ridge ``eps``); ``a`` and ``b`` are averaged, resized bilinearly to the
    full-resolution guide and applied there: ``a * guide + b``. Where the guide
    has an edge the fit follows it, so the output's edges are the input's,
    at full resolution, although the network ran at a quarter of the pixels.
    ``guide`` may also be a tuple of full-resolution tensors whose channels,
    in order, are ``guide_lo``'s (an image and its luma): the output comes
    back in the same parts, with no full-resolution tensor joined or split
    (ONNX Runtime copies both).
    """
    a, b = _guided_coefficients(guide_lo, out_lo, r, eps)          # (B, C, h, w)
    parts = guide if isinstance(guide, tuple) else (guide,)
    out, c = [], 0
    for g in parts:
        n, size = g.shape[1], g.shape[-2:]
        a_up, b_up = (nn.functional.interpolate(t[:, c:c + n], size=size, mode="bilinear", align_corners=False)
                      for t in (a, b))                             # (B, n, H, W)
        out.append(a_up * g + b_up)
        c += n
    return tuple(out) if isinstance(guide, tuple) else out[0]


def _guided_coefficients(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float):
    """The guided filter's window-averaged ``a`` and ``b``: ``src ~ a * guide + b`` in each window (ridge ``eps``)."""
    mean_g, mean_s = box_filter(guide, r), box_filter(src, r)
    a = (box_filter(guide * src, r) - mean_g * mean_s) / (box_filter(guide * guide, r) - mean_g * mean_g + eps)
    b = mean_s - a * mean_g
    return box_filter(a, r), box_filter(b, r)


SMOOTH_BASE = {"passes": 3, "radius": 1, "eps": 0.01}
"""The self-guided filter a ``GuidedEffectStudent(smooth_base=True)`` starts from, at half resolution:
chosen by a grid over passes 1-4, radius 1-3 and eps 3e-3-0.1 against the teacher's smoothing of the
training pairs (``benchmarks/effect_ceiling.py``; docs/effect_student.md)."""


def self_guided_smooth(x: torch.Tensor, passes: int = 3, radius: int = 1, eps: float = 0.01) -> torch.Tensor:
    """An edge-preserving smoother in a few box filters: the guided filter of each channel by itself, repeated.

    In a flat window (variance well below ``eps``) a pixel becomes the window's
    mean; across an edge (variance above ``eps``) it keeps its value. He, Sun and
    Tang (ECCV 2010) show it behaves like a bilateral filter at a fraction of
    its cost; lesson 06 uses it as the start the effect student corrects.
    """
    whole_number("passes", passes, 1, 8, fix="the self-guided filter's passes")
    whole_number("radius", radius, 1, 8, fix="the self-guided filter's window radius")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"eps={eps!r}: the self-guided filter's ridge, a number in (0, 1), e.g. 0.01")
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    for _ in range(passes):
        mean = box_filter(x, radius)                               # the guide is the source: 2 box filters, not 4
        var = box_filter(x * x, radius) - mean * mean
        a = var / (var + eps)
        x = box_filter(a, radius) * x + box_filter(mean - a * mean, radius)
    return x


class GuidedEffectStudent(EffectStudent):
    """An ``EffectStudent`` that runs on a half-resolution copy and is lifted back by a guided filter.

    Recipe: ``x -> 2x2 average -> MobileUNet (residual in logit space) ->
    guided_upsample(guide=x)``, clamped to [0, 1]. A quarter of the pixels makes
    the network about four times cheaper, which buys a wider decoder at the
    same milliseconds; the guided lift puts the input's edges back at full
    resolution. A guided lift cannot draw a thin dark line *along* an edge
    (a linear function of the guide is monotone across it), so with
    ``exact_lines=True`` the network predicts two things, the effect before its
    lines (3 channels) and the lightness the lines are drawn from (1 channel,
    guided by the input's luma), and the cartoon's cheap line step
    (``effects.lines_from_lightness``) runs exactly on the second, at full
    resolution. With ``exact_quantise=True`` as well, the colour quantiser is
    kept exact too (``effects.quantise_lightness``, run on the half-resolution
    output before the lift): the network predicts the smoothed image before
    it, so what it learns is the bilateral smoothing and what the lines are
    drawn from.
    Arguments as ``EffectStudent``, plus ``radius`` and ``eps`` of the lift, and
    ``scale``: 4 runs the network on a quarter of the width and height instead
    of half (a sixteenth of the pixels) and resizes its correction to half
    resolution, where the start, the quantiser and the lift stay.
    Lesson 06 builds the data flow.

    Example:
        >>> GuidedEffectStudent(exact_lines=True)(torch.rand(1, 3, 75, 90)).shape
        torch.Size([1, 3, 75, 90])
    """

    def __init__(self, encoder: str = "mobilenet_v3_small", width_mult: float = 1.0,
                 decoder_channels: tuple[int, ...] = (96, 48, 32, 24, 16), in_channels: int = 3,
                 out_channels: int = 3, expand: int = 4, pretrained: bool = False, residual: bool = True,
                 full_res_skip: bool = True, radius: int = 1, eps: float = 1e-4, exact_lines: bool = False,
                 exact_quantise: bool = False, smooth_base: bool = False, scale: int = 2):
        super().__init__(encoder, width_mult, decoder_channels, in_channels, out_channels, expand, pretrained,
                         residual, full_res_skip)
        if scale not in (2, 4) or isinstance(scale, bool):
            raise ValueError(f"scale={scale!r}: the network runs at 1/2 (scale=2) or 1/4 (scale=4) of the "
                             f"input's resolution")
        whole_number("radius", radius, 1, 8, fix="the guided filter's window radius")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"eps={eps!r}: the guided filter's ridge, a number in (0, 1), e.g. 1e-4")
        if not isinstance(exact_lines, bool):
            raise TypeError(f"exact_lines={exact_lines!r}: give True or False")
        if exact_lines and in_channels != 3:
            raise ValueError("exact_lines=True draws the cartoon's lines on RGB images: use in_channels=3")
        if not isinstance(exact_quantise, bool):
            raise TypeError(f"exact_quantise={exact_quantise!r}: give True or False")
        if exact_quantise and not exact_lines:
            raise ValueError("exact_quantise=True needs exact_lines=True: the cartoon draws its lines after "
                             "quantising, so a learnt line would be quantised away")
        if not isinstance(smooth_base, bool):
            raise TypeError(f"smooth_base={smooth_base!r}: give True or False")
        if smooth_base and not (residual and exact_quantise):
            raise ValueError("smooth_base=True corrects a self-guided filter's image before the exact quantiser: "
                             "it needs residual=True and exact_quantise=True (and so exact_lines=True)")
        self.radius, self.eps, self.exact_lines, self.exact_quantise = radius, float(eps), exact_lines, exact_quantise
        self.smooth_base, self.scale = smooth_base, scale
        if exact_lines:
            self.head = nn.Conv2d(self.decoder.out_channels, out_channels + 1, kernel_size=1)
        self._config.update(radius=radius, eps=float(eps), exact_lines=exact_lines)
        if exact_quantise:                                  # only when set: older checkpoints rebuild unchanged
            self._config.update(exact_quantise=True)
        if smooth_base:
            self._config.update(smooth_base=True)
        if scale != 2:
            self._config.update(scale=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}: "
                             f"check the channel count or add a batch dimension with x[None]")
        guides = self._guides(x)
        return self._after(self._half(guides[0]), guides)

    def after_half_resolution(self, x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """The student's output for input ``x`` had its network drawn ``drawn`` at half resolution.

        ``drawn`` is shaped like ``half_resolution(x)``; the rest is the fixed
        part of the student (the exact quantiser, the guided lift, the exact line
        step), so ``after_half_resolution(x, half_resolution(x)) == model(x)``.
        ``benchmarks/effect_ceiling.py`` feeds it the teacher's own images.
        """
        guides = self._guides(x)
        if drawn.shape != (x.shape[0], guides[0].shape[1], *guides[0].shape[-2:]):
            raise ValueError(f"drawn has shape {tuple(drawn.shape)}; for this input it must be "
                             f"{(x.shape[0], guides[0].shape[1], *guides[0].shape[-2:])}, as half_resolution(x)")
        return self._after(drawn, guides)

    def _after(self, y: torch.Tensor, guides: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        C = self.in_channels
        if self.exact_quantise:                  # at half resolution: a quarter of the work, and it scored higher
            y = torch.cat([quantise_lightness(y[:, :C], straight_through=True), y[:, C:]], 1)
        if not self.exact_lines:
            return guided_upsample(guides[0], y, guides[1], self.radius, self.eps).clamp(0, 1)  # (B, C, H, W)
        rgb, light = guided_upsample(guides[0], y, guides[1], self.radius, self.eps)      # image, its lightness
        return rgb.clamp(0, 1) * lines_from_lightness(light.clamp(0, 1))  # (B, 3, H, W); the factor is in [0, 1]

    def _guides(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """The lift's guides at half and full resolution: the input, plus its luma when the lines are exact.

        At full resolution the two stay apart, ``(x, luma)``: ``guided_upsample`` takes them as parts.
        """
        x_lo = half_size(x)                                             # (B, C, H/2, W/2)
        if not self.exact_lines:
            return x_lo, x
        return torch.cat([x_lo, _luma(x_lo)], 1), (x, _luma(x))        # (B, C+1, h, w), parts of (B, C+1, H, W)

    def half_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """What the network draws at half resolution, before the cheap steps: ``(B, C or C+1, H/2, W/2)``.

        With ``exact_quantise`` it is the smoothed image (channels 0-2) and the
        lightness the lines are drawn from (channel 3), in [0, 1]: what
        ``effects.smoothing_stages`` gives for the teacher, pooled 2x2, which is
        what ``EffectConfig.hint`` trains it towards. With ``smooth_base`` the
        network's residual starts from ``self_guided_smooth`` of the input
        instead of the input itself.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}: "
                             f"check the channel count or add a batch dimension with x[None]")
        return self._half(self._guides(x)[0])

    def _half(self, guide_lo: torch.Tensor) -> torch.Tensor:
        x_net = guide_lo[:, :self.in_channels]
        if self.scale == 4:                      # the network on a quarter; its correction resized to half
            x_net = half_size(x_net)
        y = MobileUNet.forward(self, x_net)
        if self.scale == 4:
            y = nn.functional.interpolate(y, size=guide_lo.shape[-2:], mode="bilinear", align_corners=False)
        if not self.residual:
            return torch.sigmoid(y)
        return logit_residual(y, self._start(guide_lo))

    def _start(self, guide_lo: torch.Tensor) -> torch.Tensor:
        """What the residual corrects: the half-resolution guide, or with ``smooth_base`` the filter's image."""
        if not self.smooth_base:
            return guide_lo
        smooth = self_guided_smooth(guide_lo[:, :3], **SMOOTH_BASE)   # the defaults
        return torch.cat([smooth, _luma(smooth)], 1)


def _luma(t: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of ``(B, 3, H, W)`` RGB: ``(B, 1, H, W)``, the guide of the lines' lightness."""
    return mix_channels(t.new_tensor([[0.299, 0.587, 0.114]]), t)


MODELS["GuidedEffectStudent"] = GuidedEffectStudent

GUIDED_DECODER = (96, 48, 32, 24, 16)
"""The guided student's decoder channels: wider than ``EFFECT_DECODER``, at half resolution."""
LIGHT_DECODER = {"decoder_channels": (96, 48, 32, 24, 8), "expand": 2}
"""``guided_effect_student``'s lighter decoder: half the expansion in every stage and 8 channels in the
last, 0.10 instead of 0.27 GFLOPs (``effect --light-decoder``; docs/effect_student.md)."""


@register_builder("effect")
def guided_effect_student(residual: bool = True, exact_lines: bool = True, exact_quantise: bool = False,
                          decoder_channels: tuple[int, ...] = GUIDED_DECODER,
                          smooth_base: bool = False, expand: int = 4, scale: int = 2) -> GuidedEffectStudent:
    """Lesson 06's guided student: MobileNetV3-Small at half resolution, lifted by a guided filter.

    ``exact_lines=True`` keeps the cartoon's ink-line step exact, and
    ``exact_quantise=True`` its colour quantiser too (see ``GuidedEffectStudent``).
    ``expand`` is the decoder's inverted residuals' expansion (``LIGHT_DECODER`` halves it);
    ``scale=4`` runs the network at a quarter of the resolution (its correction resized to half).
    ``docs/effect_student.md`` has the measurements that chose it.

    Example:
        >>> guided_effect_student().config["exact_lines"]
        True
    """
    whole_number("expand", expand, 1, 8, fix="the decoder's expansion, e.g. 4 (or 2, lighter)")
    return GuidedEffectStudent("mobilenet_v3_small", 1.0, tuple(decoder_channels), 3, 3, expand, residual=residual,
                               full_res_skip=True, exact_lines=exact_lines, exact_quantise=exact_quantise,
                               smooth_base=smooth_base, scale=scale)


# --- MediaPipe's selfie segmenter, rebuilt (lesson 04, section 8) -------------------------------

from .selfie import (  # noqa: E402,F401  (builders that join the registry)
    lean_selfie_student, selfie_segmenter, selfie_student)
