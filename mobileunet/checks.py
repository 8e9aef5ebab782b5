"""Checks for the lessons' exercises: each says what is wrong, not just "failed".

Every exercise in lessons 01-07 ends in a cell that calls one of these with the
learner's function or class, for example ``check_up_bilinear(UpBilinear)``. A
check builds its own inputs (the same in FAST and full mode), compares the
answer with the package's own implementation, and either prints one line that
starts with ``✓`` or raises ``CheckFailed`` naming the likely mistake: a wrong
shape, a parameter count that gives the cause away, a result off by a factor
``T**2``. An exercise still holding its stub (``python -m mobileunet.nbtools student-copies``)
is reported as not done yet.

Checks draw their random inputs inside ``torch.random.fork_rng``: running one
does not change the random numbers of the cells after it.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import copy_weights, DepthwiseSeparable, InvertedResidual, mobilenet_v2_block
from .data import border_weight_map
from .decoders import DecoderBlock
from .distill import HintAdapters, soft_target_kl
from .encoders import ENCODERS, MOBILENET_V2, MOBILENET_V3_LARGE, MOBILENET_V3_SMALL, tap_indices
from .export import FP32_MAX_ABS, OrtRunner
from .layers import DoubleConv, Up
from .losses import dice_loss
from .metrics import psnr
from .models import EffectStudent
from .profile import count_flops, count_params, receptive_field

EXERCISES = {
    "01.1": "an Up block with a bilinear resize",
    "01.2": "the receptive field of a conv stack",
    "02.1": "the soft Dice loss",
    "02.2": "the border weight map",
    "03.1": "FLOPs of a depthwise-separable conv",
    "03.2": "a MobileNetV2 block, any expansion",
    "04.1": "where to tap an encoder",
    "04.2": "a decoder stage",
    "05.1": "the temperature-softened KD loss",
    "05.2": "a hint adapter",
    "06.1": "the residual in logit space",
    "06.2": "PSNR",
    "07.1": "ONNX export with a parity check",
    "07.2": "int8 weights, one scale per channel",
}
"""Exercise id (lesson.number) -> title; the notebooks' exercise cells use the same ids."""


class CheckFailed(AssertionError):
    """An exercise's answer is not right yet; the message says what to fix."""


def _fail(ex: str, msg: str):
    raise CheckFailed(f"exercise {ex} ({EXERCISES[ex]}): {msg}")


def _passed(ex: str, msg: str) -> None:
    print(f"✓ {ex} {EXERCISES[ex]}: {msg}")


def _call(ex: str, fn: Callable, *args):
    """Run the learner's code: the stub's "your turn" error means not done yet; any other error is named."""
    try:
        return fn(*args)
    except NotImplementedError as err:
        if str(err).startswith("your turn") or not str(err):
            raise CheckFailed(f"exercise {ex} is not done yet: fill in the cell above, run it, "
                              f"then run this check again") from None
        _fail(ex, f"your code raised NotImplementedError: {err}")
    except Exception as err:
        hint = ("; torch.cat needs maps of the same height and width: bring the upsampled map to the "
                "skip's exact size first" if "Sizes of tensors must match" in str(err) else "")
        raise CheckFailed(f"exercise {ex} ({EXERCISES[ex]}): your code raised "
                          f"{type(err).__name__}: {str(err).rstrip('.')}{hint}") from err


def _seeded(check: Callable) -> Callable:
    """Run ``check`` on seed 0 without touching the notebook's random state."""
    @functools.wraps(check)
    def run(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return check(*args, **kwargs)
    return run


def _close(a, b, tol: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=False))


def _first_match(got, variants: dict[str, object], tol: float = 1e-5) -> str | None:
    """The message of the first known mistake whose result equals ``got``, as a sentence."""
    msg = next((msg for msg, value in variants.items() if _close(got, value, tol)), None)
    return msg and msg[0].upper() + msg[1:]


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so a missing or misplaced one shows in the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
    return model


def _same_module(ex: str, cls, args: tuple, ref: nn.Module, inputs: tuple, param_hints: dict[int, str],
                 value_hint: str | Callable, shape_hint: Callable[[tuple], str | None] = lambda shape: None) -> None:
    """Build ``cls(*args)`` and hold it against ``ref``: parameters, output shape, then the output
    itself once ``ref``'s weights are copied in. ``value_hint`` may be a function of
    ``(output, expected)`` that names a mistake or returns None."""
    mine = _call(ex, cls, *args)
    name = f"{getattr(cls, '__name__', 'your class')}{args}"
    if not isinstance(mine, nn.Module):
        _fail(ex, f"{name} made a {type(mine).__name__}, not an nn.Module: subclass nn.Module and "
                  f"call super().__init__() first")
    got, want = count_params(mine), count_params(ref)
    if got != want:
        _fail(ex, f"{name} has {got:,} parameters, expected {want:,}: "
                  f"{param_hints.get(got, 'compare your layers with the task above, one by one')}")
    with torch.no_grad():
        expected = _randomize_norms(ref).eval()(*inputs)
        out = _call(ex, mine.eval(), *inputs)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        _fail(ex, f"{name} gave {shape} for inputs {[tuple(t.shape) for t in inputs]}, expected "
                  f"{tuple(expected.shape)}. {shape_hint(shape) or ''}".rstrip())
    try:
        copy_weights(ref, mine)
    except ValueError as err:
        _fail(ex, f"same parameter count, but the layers come in another order or shape ({err}); "
                  f"build them in the order the task lists")
    with torch.no_grad():
        out = _call(ex, mine, *inputs)
    if not _close(out, expected, 1e-4):
        hint = value_hint(out, expected) if callable(value_hint) else value_hint
        _fail(ex, f"{name}: right shapes and parameters, but with mobileunet's weights copied in the "
                  f"output differs (by up to {(out - expected).abs().max().item():.3g}): {hint}")


# --- lesson 01 -------------------------------------------------------------------------------


@_seeded
def check_up_bilinear(cls: Callable[..., nn.Module]) -> None:
    """Exercise 01.1: ``cls(in_ch, skip_ch, out_ch)`` equals ``layers.Up(..., mode="bilinear")``."""
    ex, args = "01.1", (32, 16, 16)
    x, skip = torch.randn(2, 32, 9, 12), torch.randn(2, 16, 19, 24)
    ref = Up(*args, mode="bilinear")
    want = count_params(ref)
    hints = {count_params(Up(*args, mode="transpose")):
             "that is the transposed-conv Up; a bilinear resize has no weights (nn.Upsample or F.interpolate)",
             count_params(DoubleConv(48, 16)):
             "the DoubleConv's middle width should be (in_ch + skip_ch) // 2, not out_ch: with a free "
             "resize the first conv does the halving",
             want + 24 + 16: "a conv followed by BatchNorm needs no bias: bias=False"}
    _same_module(ex, cls, args, ref, (x, skip), hints,
                 "upsample by exactly 2 (align_corners=False), zero-pad with F.pad (dw // 2 on the left, the "
                 "rest on the right), concatenate [skip, x] in that order, then conv -> BN -> ReLU twice")
    _passed(ex, f"(2, 32, 9, 12) + skip (2, 16, 19, 24) -> (2, 16, 19, 24), {want:,} parameters, "
                f"the same output as mobileunet's Up(mode='bilinear')")


@_seeded
def check_receptive_field(fn: Callable) -> None:
    """Exercise 01.2: ``fn([(kernel, stride), ...])`` is the measured receptive field of that conv stack."""
    ex = "01.2"
    stacks = [[(3, 1), (3, 1), (3, 1)], [(3, 2), (3, 2), (3, 1)], [(7, 2), (3, 2), (3, 2), (3, 1)],
              [(3, 1), (2, 2), (3, 1), (2, 2), (3, 1)]]
    fields = []
    for layers in stacks:
        jump = math.prod(s for _, s in layers)
        convs = [nn.Conv2d(1 if i == 0 else 2, 2, k, s, padding=k // 2) for i, (k, s) in enumerate(layers)]
        # upsampling back by the total stride keeps the centre pixel where receptive_field looks for it
        want = receptive_field(nn.Sequential(*convs, nn.Upsample(scale_factor=jump)), 1, size=128)
        got = _call(ex, fn, list(layers))
        if got != want:
            spans = [math.prod(s for _, s in layers[:i]) for i in range(len(layers))]
            hint = _first_match(got, {
                "each layer adds (kernel - 1) times the input pixels one of its own input pixels spans, "
                "the product of the strides *before* it; you left the strides out":
                    1 + sum(k - 1 for k, _ in layers),
                "multiply by the strides of the layers before this one, not including its own":
                    1 + sum((k - 1) * j * s for (k, s), j in zip(layers, spans)),
                "start from 1: before any layer, a pixel sees itself": want - 1,
            }, 0)
            _fail(ex, f"for layers {layers} (kernel, stride) you returned {got!r}; measured: {want}. "
                      f"{hint or 'Grow the field layer by layer: rf += (k - 1) * span; span *= stride.'}")
        fields.append(want)
    _passed(ex, f"all {len(stacks)} stacks match the measured receptive field {tuple(fields)}")


# --- lesson 02 -------------------------------------------------------------------------------


@_seeded
def check_dice_loss(fn: Callable) -> None:
    """Exercise 02.1: ``fn(logits, mask)`` equals ``losses.dice_loss`` (per image, eps = 1, averaged)."""
    ex = "02.1"
    logits, mask = torch.randn(3, 1, 8, 8) * 3, (torch.rand(3, 1, 8, 8) > 0.5).float()
    mask[2] = 0                                           # an image with no cell at all
    want = dice_loss(logits, mask)
    got = _call(ex, fn, logits.clone().requires_grad_(), mask)
    if not isinstance(got, torch.Tensor):
        _fail(ex, f"you returned a {type(got).__name__}; a loss must be a tensor that gradients flow "
                  f"through: drop .item() or float()")
    if got.ndim != 0:
        _fail(ex, f"you returned shape {tuple(got.shape)}; a loss is one number: average the per-image "
                  f"losses with .mean()")
    if not _close(got, want):

        def one_minus_dice(p, t, eps=1.0, pooled=False):
            p, t = (p.flatten(), t.flatten()) if pooled else (p.flatten(1), t.flatten(1))
            return (1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)).mean()
        p = torch.sigmoid(logits)
        hint = _first_match(got.detach(), {
            "that is the Dice score; the loss is 1 - Dice": 1 - want,
            "apply torch.sigmoid to the logits first: Dice compares probabilities": one_minus_dice(logits, mask),
            "use the soft probabilities, not thresholded ones: a threshold has no gradient":
                one_minus_dice((p > 0.5).float(), mask),
            "compute Dice for each image (sum over x.flatten(1) along dim 1), then average over the "
            "batch; you pooled the whole batch": one_minus_dice(p, mask, pooled=True),
            "add eps = 1 to the numerator too: 2 |P n T| + eps over |P| + |T| + eps":
                (1 - 2 * (p * mask).flatten(1).sum(1) / ((p + mask).flatten(1).sum(1) + 1)).mean(),
        })
        _fail(ex, f"your loss is {got.item():.4f}, mobileunet.dice_loss gives {want.item():.4f}. "
                  f"{hint or 'Recipe: p = sigmoid(logits); per image 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1).'}")
    if not got.requires_grad:
        _fail(ex, "the value is right but no gradient flows to the logits: avoid .detach(), .item() "
                  "and thresholds inside the loss")
    _passed(ex, "equals mobileunet.dice_loss on 3 images (one without cells), and gradients flow")


@_seeded
def check_border_weights(fn: Callable) -> None:
    """Exercise 02.2: ``fn(labels, w0, sigma)`` equals ``data.border_weight_map``."""
    ex = "02.2"
    labels = np.zeros((24, 32), dtype=np.int64)
    labels[3:11, 3:14], labels[3:11, 16:28], labels[14:22, 6:20] = 1, 2, 3   # gaps of 2 and 3 pixels
    want = border_weight_map(labels, w0=10.0, sigma=5.0)
    got = _call(ex, fn, labels.copy(), 10.0, 5.0)
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    if got.shape != want.shape:
        _fail(ex, f"you returned shape {got.shape} for labels of shape {labels.shape}: one weight per pixel")
    bad = ~np.isclose(got, want, rtol=1e-4, atol=1e-4)
    if bad.any():
        fg = labels > 0
        w_c = border_weight_map(fg.astype(np.int64))         # one "cell": the class-balance term alone
        hint = _first_match(got, {
            "the class-balance term w_c is missing: 0.5 / (share of cell pixels) on cells, "
            "0.5 / (share of background pixels) elsewhere": want - w_c,
            "the distance term is missing: add w0 * exp(-(d1 + d2)**2 / (2 * sigma**2)) on background "
            "pixels": w_c}, 1e-4)
        if hint is None and not bad[~fg].any():
            hint = "Inside a cell w is w_c alone: the distance term applies to background pixels only"
        elif hint is None and not bad[fg].any():
            term, mine = (want - w_c)[~fg], (got - w_c)[~fg]
            ratio = mine[term > 1e-3] / term[term > 1e-3]
            hint = (f"The distance term is off by a factor {ratio.mean():.3g}: it is w0 * exp(...) with w0 = 10"
                    if np.allclose(ratio, ratio.mean(), rtol=1e-3) else
                    "The distance term differs on background pixels: d1 and d2 are the distances to the "
                    "nearest and second-nearest cell (ndimage.distance_transform_edt(labels != k) for each "
                    "cell k), and the exponent is -(d1 + d2)**2 / (2 * sigma**2)")
        r, c = np.argwhere(bad)[0]
        _fail(ex, f"at pixel ({r}, {c}) ({'cell' if fg[r, c] else 'background'}) you have "
                  f"{got[r, c]:.4f}, expected {want[r, c]:.4f}. {hint or ''}".rstrip())
    _passed(ex, f"equals mobileunet's border_weight_map on a {labels.shape[0]}x{labels.shape[1]} image "
                f"of 3 cells (largest weight {want.max():.2f}, in the 2-pixel gap)")


# --- lesson 03 -------------------------------------------------------------------------------


@_seeded
def check_separable_flops(fn: Callable) -> None:
    """Exercise 03.1: ``fn(c_in, c_out, k, h, w, stride)`` equals ``count_flops`` of a ``DepthwiseSeparable``."""
    ex = "03.1"
    cases = [(64, 128, 3, 56, 56, 1), (32, 16, 5, 15, 20, 2), (3, 8, 3, 7, 9, 2)]
    for c_in, c_out, k, h, w, s in cases:
        block, x = DepthwiseSeparable(c_in, c_out, stride=s, kernel=k), torch.zeros(1, c_in, h, w)
        want = count_flops(block, x)
        ho, wo = block(x).shape[-2:]
        got = _call(ex, fn, c_in, c_out, k, h, w, s)
        if not isinstance(got, (int, float)) or got != want:
            hint = _first_match(got, {
                "that counts multiply-adds; a multiply-add is 2 FLOPs": want // 2,
                "that is a standard conv's cost; the depthwise conv filters each channel on its own: "
                "k^2 * C_in multiply-adds per output pixel": 2 * k * k * c_in * c_out * ho * wo,
                "the depthwise conv is missing: add 2 * k^2 * C_in * H_out * W_out": 2 * c_in * c_out * ho * wo,
                "the pointwise 1x1 conv is missing: add 2 * C_in * C_out * H_out * W_out": 2 * k * k * c_in * ho * wo,
                "with stride s both convs run on the smaller output map: H_out = (H + 2 * (k // 2) - k) // s + 1":
                    2 * (k * k * c_in + c_in * c_out) * h * w,
            }, 0) if isinstance(got, (int, float)) else None
            if hint is None and isinstance(got, float) and not got.is_integer():
                hint = "FLOPs are a whole number: compute H_out and W_out with integer division (//)"
            shown = f"{got:,}" if isinstance(got, int) else repr(got)
            _fail(ex, f"for C_in={c_in}, C_out={c_out}, k={k}, {h}x{w}, stride {s} you returned {shown}; "
                      f"counted: {want:,} FLOPs ({ho}x{wo} output). {hint or ''}".rstrip())
    _passed(ex, f"{len(cases)} layers, strides 1 and 2: the formula equals the counted FLOPs")


@_seeded
def check_v2_block(cls: Callable[..., nn.Module]) -> None:
    """Exercise 03.2: ``cls(c_in, c_out, stride, t)`` equals ``blocks.mobilenet_v2_block`` for t = 6 and t = 1."""
    ex = "03.2"
    for c_in, c_out, s, t in [(16, 16, 1, 6), (16, 24, 2, 6), (16, 16, 1, 1)]:
        ref, hidden = mobilenet_v2_block(c_in, c_out, stride=s, expand=t), c_in * t
        want = count_params(ref)
        hints = {want + (hidden if t > 1 else 0) + hidden + c_out:
                 "a conv followed by BatchNorm needs no bias: bias=False",
                 want + 9 * hidden * (hidden - 1): "the 3x3 conv must be depthwise: groups=hidden",
                 want - 2 * c_out: "the projection is followed by a BatchNorm (and no activation)"}
        if t == 1:
            hints[want + c_in * hidden + 2 * hidden] = ("with t = 1 there is nothing to expand: leave the 1x1 "
                                                        "expand conv out (MobileNetV2's first block has none)")
        if c_out != c_in:
            hints[count_params(InvertedResidual(c_in, c_out, c_out * t, s))] = (
                "hidden = t * C_in: the block widens its input")
        x = torch.randn(2, c_in, 10, 12)

        def shape_hint(shape):
            if s == 2 and shape[-2:] == (10, 12):
                return "Stride 2 halves H and W: the stride goes on the depthwise 3x3 conv."

        def value_hint(out, expected):
            residual = c_in == c_out and s == 1
            if residual and _close(out, expected - x, 1e-4):
                return "add the input: the residual applies when stride is 1 and C_in == C_out"
            branch, ref_branch = (out - x, expected - x) if residual else (out, expected)
            if (branch >= -1e-6).all() and (ref_branch < 0).any():
                return ("the block's branch never goes below 0, so an activation follows the projection; "
                        "the bottleneck must stay linear (BatchNorm, no ReLU6)")
            return ("expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 (padding 1) -> BN -> ReLU6 -> project "
                    "1x1 -> BN, plus the input when stride is 1 and C_in == C_out")
        _same_module(ex, cls, (c_in, c_out, s, t), ref, (x,), hints, value_hint, shape_hint)
    _passed(ex, "t = 6 with and without the residual, stride 2, and t = 1 without an expand conv: "
                "the same parameters and outputs as mobileunet's mobilenet_v2_block")


# --- lesson 04 -------------------------------------------------------------------------------


def _feature_strides(encoder: str) -> list[int]:
    """The stride of each ``features[i]`` of a torchvision MobileNet, stem first, from ``encoders``' tables."""
    if encoder == "mobilenet_v2":
        return [2] + [s if i == 0 else 1 for _t, _c, n, s, _tap in MOBILENET_V2 for i in range(n)]
    table = MOBILENET_V3_SMALL if encoder == "mobilenet_v3_small" else MOBILENET_V3_LARGE
    return [2] + [row[5] for row in table]


@_seeded
def check_tap_indices(fn: Callable) -> None:
    """Exercise 04.1: ``fn(strides)`` picks the same ``features[i]`` as ``encoders.tap_indices``."""
    ex = "04.1"
    for name in ENCODERS:
        strides, want = _feature_strides(name), tap_indices(name)
        got = _call(ex, fn, list(strides))
        try:
            got = tuple(int(i) for i in got)
        except TypeError:
            _fail(ex, f"you returned {got!r}; return the five indices as a tuple or list")
        if got != want:
            total = np.cumprod(strides)
            first = tuple(int(np.argmax(total == s)) for s in (2, 4, 8, 16, 32))
            hint = ("Five taps, one for each of the strides 2, 4, 8, 16 and 32" if len(got) != 5 else
                    "Tap the *last* block at each stride: the deepest features before the resolution halves "
                    "again" if got == first else
                    "Index from 0: features[0] is the stem" if {g - w for g, w in zip(got, want)} in ({1}, {-1})
                    else "Multiply the strides as you go; tap index i when the product is 2, 4, 8, 16 or 32 "
                         "and the next block would halve it again (or there is no next block)")
            _fail(ex, f"{name}, strides per block {strides}: you returned {got}, expected {want}. {hint}")
    _passed(ex, "taps of MobileNetV2, V3-Small and V3-Large match tap_indices: "
                + ", ".join(str(tap_indices(n)) for n in ENCODERS))


@_seeded
def check_decoder_block(cls: Callable[..., nn.Module]) -> None:
    """Exercise 04.2: ``cls(in_ch, skip_ch, out_ch, expand)`` equals ``decoders.DecoderBlock``."""
    ex = "04.2"
    for args, x, skip in [((40, 24, 24, 4), torch.randn(2, 40, 9, 9), torch.randn(2, 24, 17, 17)),
                          ((16, 8, 16, 6), torch.randn(1, 16, 6, 8), torch.randn(1, 8, 12, 16))]:
        c_in, c_skip, c_out, t = args
        ref = DecoderBlock(*args)
        hints = {count_params(InvertedResidual(c_in + c_skip, c_out, (c_in + c_skip) * t)):
                 "expand relative to the block's output: hidden = out_ch * expand. Expanding the wide "
                 "concatenation is the MobileNetV2 habit that lesson 04 measured to be costly",
                 count_params(ref) + 4 * c_in * c_in + c_in:
                 "upsample with a free bilinear resize (F.interpolate), not a transposed conv"}
        _same_module(ex, cls, args, ref, (x, skip), hints,
                     "resize bilinearly (align_corners=False) to the skip's size, concatenate [x, skip] with "
                     "the upsampled x first, then one InvertedResidual(in_ch + skip_ch, out_ch, "
                     "hidden_ch=out_ch * expand)")
    _passed(ex, f"odd and even sizes ((2, 40, 9, 9) + skip (2, 24, 17, 17) -> (2, 24, 17, 17)), "
                f"{count_params(DecoderBlock(40, 24, 24, 4)):,} parameters, the same output as DecoderBlock")


# --- lesson 05 -------------------------------------------------------------------------------


@_seeded
def check_kd_loss(fn: Callable) -> None:
    """Exercise 05.1: ``fn(student_logits, teacher_logits, T)`` equals ``distill.soft_target_kl``."""
    ex = "05.1"
    s, t = torch.randn(2, 1, 6, 6) * 3, torch.randn(2, 1, 6, 6) * 3
    for T in (4.0, 1.0, 2.0):
        want = soft_target_kl(s, t, T)
        got = _call(ex, fn, s.clone().requires_grad_(), t, T)
        if not isinstance(got, torch.Tensor) or got.ndim != 0:
            _fail(ex, f"you returned {type(got).__name__} {tuple(getattr(got, 'shape', ()))}; return one "
                      f"number as a 0-d tensor that gradients flow through: average over pixels with .mean()")
        if not _close(got.detach(), want):
            target = torch.sigmoid(t / T)
            hint = _first_match(got.detach(), {
                f"off by a factor 1/T^2 = 1/{T**2:g}: multiply the KL by T**2, so the soft targets' pull "
                f"does not fade as T grows": want / T**2,
                "off by a factor T^2: multiply by T**2 once": want * T**2,
                "off by a factor 1/T: the factor is T**2, not T": want / T,
                "soften both with the temperature: sigmoid(logits / T)": soft_target_kl(s, t, 1.0) * T**2,
                "the temperature is missing: sigmoid(logits / T) for both models, then times T**2":
                    soft_target_kl(s, t, 1.0),
                "soften the student too: sigmoid(student_logits / T)": soft_target_kl(s * T, t, T),
                "the KL goes from the teacher to the student: p_t log(p_t / p_s) + (1 - p_t) log((1 - p_t) / "
                "(1 - p_s)), weighted by the teacher's probabilities": soft_target_kl(t, s, T),
                "that is the cross-entropy: subtract the teacher's own entropy, so the loss is 0 when the "
                "student equals the teacher": T**2 * F.binary_cross_entropy_with_logits(s / T, target),
                "average over pixels (.mean()), not sum": want * s.numel(),
            }) if T != 1.0 else None
            _fail(ex, f"at T = {T:g} your loss is {got.item():.5g}, soft_target_kl gives {want.item():.5g}. "
                      f"{hint or 'Recipe: T**2 * mean of the Bernoulli KL(sigmoid(t / T) || sigmoid(s / T)).'}")
        if not got.requires_grad:
            _fail(ex, "the value is right but no gradient flows to the student's logits: avoid .detach() "
                      "and .item()")
    zero = _call(ex, fn, t.clone(), t, 4.0)
    if abs(float(zero)) > 1e-6:
        _fail(ex, f"the loss is {float(zero):.3g} when the student equals the teacher; it must be 0")
    _passed(ex, "equals soft_target_kl at T = 1, 2 and 4 (the T^2 factor included), 0 when the student "
                "equals the teacher, and gradients flow")


@_seeded
def check_hint_adapter(cls: Callable[..., nn.Module]) -> None:
    """Exercise 05.2: ``cls(student_ch, teacher_ch)`` maps (student, teacher) maps like ``distill.HintAdapters``."""
    ex = "05.2"
    s_ch, t_ch = 8, 32
    ref = HintAdapters([s_ch], [t_ch])
    hints = {s_ch * t_ch: "keep the conv's bias (nn.Conv2d's default), as mobileunet's adapter does",
             9 * s_ch * t_ch + t_ch: "the adapter is a 1x1 conv: kernel_size=1",
             t_ch * s_ch + s_ch: "map the student's channels to the teacher's: nn.Conv2d(student_ch, teacher_ch, 1)"}
    mine = _call(ex, cls, s_ch, t_ch)
    if not isinstance(mine, nn.Module):
        _fail(ex, f"{getattr(cls, '__name__', cls)}(8, 32) is a {type(mine).__name__}, not an nn.Module")
    if count_params(mine) != count_params(ref):
        _fail(ex, f"{count_params(mine):,} parameters, expected {count_params(ref):,}: "
                  f"{hints.get(count_params(mine), 'one nn.Conv2d(student_ch, teacher_ch, 1) is all it needs')}")
    try:
        copy_weights(ref.convs[0], mine)
    except ValueError as err:
        _fail(ex, f"the module should hold just the 1x1 conv ({err})")
    s = torch.randn(2, s_ch, 12, 12)
    for t, how in ((torch.randn(2, t_ch, 30, 30), "shrink the teacher's map with mode='area' (each pixel the "
                    "average of the ones it covers)"),
                   (torch.randn(2, t_ch, 5, 5), "grow the teacher's map with mode='bilinear', align_corners=False")):
        with torch.no_grad():
            (a_ref, t_ref), = ref([s], [t])
            got = _call(ex, mine, s, t)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail(ex, f"forward returned {type(got).__name__}; return the pair (adapted student, teacher target)")
        adapted, target = got
        if tuple(adapted.shape) != tuple(a_ref.shape):
            _fail(ex, f"the adapted student map is {tuple(adapted.shape)}, expected {tuple(a_ref.shape)}: "
                      f"compare at the student's size; resize the teacher's map, not the student's")
        if tuple(target.shape) != tuple(t_ref.shape):
            _fail(ex, f"the teacher's map comes back {tuple(target.shape)}, expected {tuple(t_ref.shape)}: "
                      f"resize it to the student's size, F.interpolate(t, size=s.shape[-2:], ...)")
        if not _close(adapted, a_ref, 1e-4):
            _fail(ex, "with mobileunet's weights copied in, the adapted map differs: apply the 1x1 conv "
                      "to the student's map, nothing else")
        if not _close(target, t_ref, 1e-4):
            _fail(ex, f"teacher {tuple(t.shape)} -> {tuple(target.shape)}: the values differ; {how}")
    _passed(ex, f"{count_params(ref)} parameters (a 1x1 conv 8 -> 32); teacher maps shrunk and grown to "
                f"the student's 12x12 like mobileunet's HintAdapters")


# --- lesson 06 -------------------------------------------------------------------------------


@_seeded
def check_residual_output(fn: Callable) -> None:
    """Exercise 06.1: ``fn(x, net_out)`` is what ``EffectStudent(residual=True)`` returns."""
    ex = "06.1"
    residual, plain = EffectStudent(residual=True).eval(), EffectStudent(residual=False).eval()
    with torch.no_grad():
        residual.head.weight.mul_(10)                     # a net that changes the image visibly
    plain.load_state_dict(residual.state_dict())
    x = torch.rand(1, 3, 64, 64)
    x[..., 0, :8], x[..., 1, :8] = 0.0, 1.0               # black and white pixels, as photos have
    with torch.no_grad():
        want = residual(x)
        net_out = torch.logit(plain(x).double()).float()  # plain returns sigmoid(net(x))
    got = _call(ex, fn, x.clone(), net_out.clone())
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        _fail(ex, f"you returned {tuple(getattr(got, 'shape', ())) or type(got).__name__}, expected an "
                  f"image of shape {tuple(want.shape)}")
    if not _close(got, want, 1e-4):
        xc = x.clamp(1e-3, 1 - 1e-3)
        hint = _first_match(got, {
            "clamp x to [1e-3, 1 - 1e-3] before torch.logit: logit(0) is -inf, and black pixels stay "
            "black whatever the net says": torch.sigmoid(torch.logit(x) + net_out),
            "add in logit space, sigmoid(logit(x) + net_out): sigmoid(x + net_out) does not return x "
            "when the net outputs 0": torch.sigmoid(x + net_out),
            "squash with torch.sigmoid, not a clamp: a clamp has no gradient outside [0, 1]":
                (x + net_out).clamp(0, 1),
            "apply torch.sigmoid at the end: the output must be an image in (0, 1)": torch.logit(xc) + net_out,
            "add the input's logit: sigmoid(net_out) alone is the non-residual student": torch.sigmoid(net_out),
        }, 1e-4)
        _fail(ex, f"your image differs from EffectStudent(residual=True)'s by up to "
                  f"{(got - want).abs().max().item():.3g}. "
                  f"{hint or 'Recipe: sigmoid(logit(x.clamp(1e-3, 1 - 1e-3)) + net_out).'}")
    zero = _call(ex, fn, x.clone(), torch.zeros_like(net_out))
    if not _close(zero, x.clamp(1e-3, 1 - 1e-3), 1e-5):
        _fail(ex, "when the net outputs 0 the student must return its input (clamped to [1e-3, 1 - 1e-3]); "
                  "yours does not")
    _passed(ex, "equals EffectStudent(residual=True) on a 64x64 image with black and white pixels; "
                "a zero net returns the input")


@_seeded
def check_psnr(fn: Callable) -> None:
    """Exercise 06.2: ``fn(pred, target)`` equals ``metrics.psnr``: one value per image, in dB."""
    ex = "06.2"
    target = torch.rand(3, 3, 16, 16)
    pred = (target + torch.randn(3, 3, 16, 16) * torch.tensor([0.02, 0.05, 0.1]).view(3, 1, 1, 1)).clamp(0, 1)
    want = psnr(pred, target)
    got = _call(ex, fn, pred.clone(), target.clone())
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        _fail(ex, f"you returned {tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}; "
                  f"expected one PSNR per image, shape {tuple(want.shape)}: average the squared error over "
                  f"each image's pixels, (pred - target).pow(2).flatten(1).mean(1)")
    if not _close(got, want, 1e-4):
        mse = (pred - target).pow(2).flatten(1).mean(1)
        hint = _first_match(got, {
            "use log10, not the natural log": 10 * torch.log(1 / mse),
            "PSNR is 10 log10(1 / MSE), or 20 log10(1 / RMSE); you have 20 log10(1 / MSE)": 2 * want,
            "use the mean *squared* error (or 20 log10 of the RMSE)": want / 2,
            "square the differences: MSE, not the mean absolute error":
                10 * torch.log10(1 / (pred - target).abs().flatten(1).mean(1)),
            "the images are in [0, 1], so the peak is 1, not 255": want + 20 * math.log10(255),
            "you have the inverse: 10 log10(peak**2 / MSE)": -want,
        }, 1e-4)
        _fail(ex, f"you returned {[round(v, 3) for v in got.tolist()]} dB, metrics.psnr gives "
                  f"{[round(v, 3) for v in want.tolist()]} dB. {hint or ''}".rstrip())
    _passed(ex, "equals metrics.psnr on 3 images at 3 noise levels, one value per image")


# --- lesson 07 -------------------------------------------------------------------------------


@_seeded
def check_onnx_parity(fn: Callable) -> None:
    """Exercise 07.1: ``fn(model, x, path)`` writes one ``.onnx`` file and returns its max abs difference."""
    ex = "07.1"
    model = _randomize_norms(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.Conv2d(8, 1, 1))).eval()
    x = torch.rand(1, 1, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.onnx"
        with contextlib.redirect_stdout(io.StringIO()):     # the exporter's progress lines
            got = _call(ex, fn, model, x.clone(), path)
        if not path.is_file():
            _fail(ex, f"no file at the path you were given ({path.name}): pass it to torch.onnx.export")
        others = sorted(p.name for p in Path(tmp).iterdir() if p != path)
        if others:
            _fail(ex, f"the export also wrote {others}: pass external_data=False so the .onnx stands alone")
        try:
            run = OrtRunner(path)
        except Exception as err:
            _fail(ex, f"ONNX Runtime cannot load the file you wrote ({type(err).__name__}: {err}): "
                      f"write it with torch.onnx.export")
        with torch.no_grad():
            true = (run(x) - model(x)).abs().max().item()
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, float):
        _fail(ex, f"you returned a {type(got).__name__}; return the largest absolute difference as a "
                  f"float: (a - b).abs().max().item()")
    if abs(got - true) > 1e-6:
        _fail(ex, f"you returned {got:.3g}, but ONNX Runtime's output for your file differs from "
                  f"model(x) by {true:.3g}: run the exported file on the same x and compare with model(x)")
    if true > FP32_MAX_ABS:
        _fail(ex, f"the exported model differs from eager PyTorch by {true:.3g}, more than {FP32_MAX_ABS:g}: "
                  f"export the model in eval mode")
    _passed(ex, f"one self-contained .onnx; ONNX Runtime within {FP32_MAX_ABS:g} of eager PyTorch, "
                f"and the difference you report is the real one")


@_seeded
def check_int8_weights(fn: Callable) -> None:
    """Exercise 07.2: ``fn(w)`` is symmetric per-channel int8 fake quantization (scale = max|w_c| / 127)."""
    ex = "07.2"
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 0, 16).view(16, 1, 1, 1)   # channels of very different size
    scale = w.abs().amax(dim=(1, 2, 3)) / 127

    def fake_quant(scale_, axis=True):
        if axis:
            return torch.fake_quantize_per_channel_affine(w, scale_, torch.zeros(16, dtype=torch.int32), 0,
                                                          -127, 127)
        return torch.fake_quantize_per_tensor_affine(w, float(scale_), 0, -127, 127)
    want = fake_quant(scale)
    got = _call(ex, fn, w.clone())
    if not isinstance(got, torch.Tensor) or got.shape != w.shape:
        _fail(ex, f"you returned {tuple(getattr(got, 'shape', ())) or type(got).__name__}; return the "
                  f"dequantized weights, the same shape as w {tuple(w.shape)}")
    if not ((got - want).abs() <= 1e-3 * scale.view(16, 1, 1, 1)).all():     # any level off counts
        err = lambda v: (v - w).abs().mean().item()
        hint = _first_match(got, {
            f"one scale per output channel (dim 0): with one scale for the whole tensor the small channels "
            f"round to few levels (mean error {err(fake_quant(w.abs().max() / 127, axis=False)):.2g} "
            f"instead of {err(want):.2g})": fake_quant(w.abs().max() / 127, axis=False),
            "return the dequantized weights q * scale, not the integers q":
                (w / scale.view(16, 1, 1, 1)).round().clamp(-127, 127),
            "round to the nearest level (torch.round), not down: floor errs by up to a whole step":
                (w / scale.view(16, 1, 1, 1)).floor() * scale.view(16, 1, 1, 1),
            "round to the nearest level (torch.round), not towards 0: trunc errs by up to a whole step":
                (w / scale.view(16, 1, 1, 1)).trunc() * scale.view(16, 1, 1, 1),
            "symmetric int8 keeps 127 levels each side of 0: scale = max|w_c| / 127, not / 255":
                fake_quant(scale * 127 / 255),
            "symmetric int8 keeps 127 levels each side of 0: scale = max|w_c| / 127, not / 128":
                fake_quant(scale * 127 / 128),
        })
        _fail(ex, f"your weights differ from per-channel int8 by up to {(got - want).abs().max().item():.3g}. "
                  f"{hint or 'Recipe: scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127; '}"
                  f"{'' if hint else 'return (w / scale).round().clamp(-127, 127) * scale.'}")
    _passed(ex, "16 channels from 0.01 to 1 in size, each on its own grid of 255 levels: equals "
                "torch.fake_quantize_per_channel_affine")
