"""The teacher of lesson 06: a deliberately slow, deterministic cartoon effect.

It stands in for the large generative model of YouTube's real-time effects:
something expensive that runs offline to make before/after pairs, which a
MobileNet UNet then learns to produce in one fast pass. The recipe is
Winnemöller, Olsen and Gooch, "Real-Time Video Abstraction" (SIGGRAPH 2006),
built from scikit-image:

1. **edge-preserving smoothing**: the bilateral filter, repeated (Sec. 3.1),
   flattens texture but keeps edges; the repeats are what make the effect
   slow. ``bilateral`` runs scikit-image's compiled loop with its spatial
   weights centred (scikit-image's own table is sheared off the centre; see
   there). The image is reflected at its border: scikit-image pads with black
   by default, and four passes of that draw a dark frame;
2. **soft colour quantisation** of the luminance in CIELAB into ``levels``
   bands (Sec. 3.3), with smooth steps instead of hard ones, so there is no
   jump for a student to chase;
3. **dark edge lines** from a difference of Gaussians of the luminance,
   softly thresholded with ``tanh`` (Sec. 3.2).

The paper's steps are continuous where it says so (the soft thresholds); ours
are too, and the quantiser's steps are made continuous as well: a student
trained with L1 cannot draw an exact discontinuity.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from .validate import whole_number

EFFECT_VERSION = 3
"""Bump when ``cartoon``'s code changes what it draws: cached teacher pairs carry it in their hash.
2: the bilateral passes reflect the image at its border (1 padded with black).
3: the bilateral's spatial weights are centred (``bilateral``; 2 used scikit-image's sheared table)."""


@dataclass(frozen=True)
class CartoonParams:
    """The cartoon effect's knobs; the defaults cost about a second per 256x256 frame on one core.

    Args:
        n_smooth: bilateral passes (each ~0.25 s at 256x256 on one core).
        sigma_spatial: bilateral spatial sigma, pixels.
        sigma_color: bilateral colour sigma, RGB units in [0, 1].
        levels: luminance bands of the quantiser.
        sharpness: steepness of each band's step (larger = harder, closer to a posterise).
        edge_sigma: the smaller Gaussian of the DoG, pixels (the other is 1.6x).
        edge_tau: DoG weight of the larger Gaussian; below 1 keeps flat areas line-free.
        edge_phi: steepness of the line's soft threshold.
        centred: the bilateral's spatial weights centred (``bilateral``); ``False`` reads them as
            scikit-image does, sheared off the centre: the teacher of ``EFFECT_VERSION`` 2, kept so
            ``benchmarks/effect_teachers.py`` can compare the two.
    """
    n_smooth: int = 4
    sigma_spatial: float = 2.0
    sigma_color: float = 0.1
    levels: int = 8
    sharpness: float = 6.0
    edge_sigma: float = 1.0
    edge_tau: float = 0.98
    edge_phi: float = 40.0
    centred: bool = True

    def __post_init__(self):
        for name in ("n_smooth", "levels"):
            value = getattr(self, name)
            whole_number(f"CartoonParams.{name}", value)
        if not isinstance(self.centred, bool):
            raise TypeError(f"CartoonParams.centred={self.centred!r}: give True or False")
        for f in (f for f in fields(self) if f.name != "centred"):  # the numbers
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"CartoonParams.{f.name}={value!r}: must be a positive, finite number")
        if self.edge_tau > 1:
            raise ValueError(f"CartoonParams.edge_tau={self.edge_tau}: use a value in (0, 1]; above 1 "
                             f"flat areas turn dark")

    def to_dict(self) -> dict:
        """The fields, ``centred`` only when False (so pair caches and manifests of the default keep their hash)."""
        out = asdict(self)
        if out["centred"]:
            del out["centred"]
        return out

    def digest(self) -> str:
        """A short hash of the parameters and ``EFFECT_VERSION``: what a pair cache keys on."""
        text = json.dumps({"effect": "cartoon", "version": EFFECT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def soft_quantise(x: np.ndarray, levels: int, sharpness: float) -> np.ndarray:
    """A continuous staircase on [0, 1]: flat inside each of ``levels`` bands, a steep smooth step between.

    Example:
        >>> soft_quantise(np.array([0.0, 0.5, 1.0]), levels=4, sharpness=6.0).round(3).tolist()
        [0.0, 0.5, 1.0]
    """
    t = np.clip(x, 0.0, 1.0) * levels
    k = np.minimum(np.floor(t), levels - 1)
    frac = t - k                                                   # position inside the band, 0..1
    step = 0.5 + 0.5 * np.tanh(sharpness * (frac - 0.5)) / np.tanh(sharpness / 2)
    return (k + step) / levels


def bilateral(image: np.ndarray, sigma_spatial: float, sigma_color: float, centred: bool = True) -> np.ndarray:
    """One pass of the bilateral filter over an ``(H, W, C)`` float64 image, its border reflected.

    The weights are ``skimage.restoration.denoise_bilateral``'s: a Gaussian of
    the distance (``sigma_spatial``) over a ``max(5, 2 * ceil(3 * sigma_spatial) + 1)``
    window, times a Gaussian (``sigma_color``) of the colour distance divided by
    C. So is the compiled loop that applies them; only the spatial table
    differs. scikit-image (0.24 to 0.26, checked) lays that table out on
    ``np.arange(-w // 2, w // 2 + 1)``, which is w + 1 points for an odd window
    w (-7..6 for w = 13), and reads it w entries per row: its spatial weights
    are a Gaussian sheared off the centre, and each pass averages pixels a few
    away (about 2 down and 5 left at sigma 2), so texture moves. Here the table
    is centred, as the bilateral filter has it (Tomasi & Manduchi 1998);
    ``centred=False`` reads it as scikit-image does (the teacher of
    ``EFFECT_VERSION`` 2, which lesson 06 shows). Where scikit-image's private
    loop is not there to call, ``bilateral_reference`` (the same sums in NumPy,
    about 3x slower) runs instead.

    Example:
        >>> flat = np.full((9, 9, 3), 0.5); flat[4, 4] += 1e-3
        >>> out = bilateral(flat, 1.0, 0.1)
        >>> bool(np.allclose(out[3, 4], out[5, 4]) and np.allclose(out[4, 3], out[4, 5]))
        True
    """
    image = np.ascontiguousarray(image, dtype=np.float64)
    win = max(5, 2 * math.ceil(3 * sigma_spatial) + 1)
    spatial = _spatial_table(win, sigma_spatial, centred)
    lo, hi = float(image.min()), float(image.max())
    if hi == lo:
        return image.copy()
    try:
        from skimage.restoration._denoise import _compute_color_lut
        from skimage.restoration._denoise_cy import _denoise_bilateral
        shifted = image - lo if lo < 0 else image
        top = hi - lo if lo < 0 else hi
        out = np.empty_like(image)
        _denoise_bilateral(shifted, top, win, sigma_color, sigma_spatial, 10000, "reflect", 0.0,
                           _compute_color_lut(10000, sigma_color, top, dtype=np.float64), spatial,
                           np.empty(image.shape[2]), out)
        return out + lo if lo < 0 else out
    except (ImportError, TypeError, ValueError):                    # a scikit-image without that loop
        return bilateral_reference(image, sigma_spatial, sigma_color, centred)


def _spatial_table(win: int, sigma: float, centred: bool) -> np.ndarray:
    """The ``(win * win,)`` spatial weights, row by row: centred, or as scikit-image lays them out."""
    grid = np.arange(-(win // 2), win // 2 + 1) if centred else np.arange(-win // 2, win // 2 + 1)
    rr, cc = np.meshgrid(grid, grid, indexing="ij")
    table = np.exp(-0.5 * (rr * rr + cc * cc) / sigma**2).ravel()  # win * win, or (win + 1)^2 entries
    return np.ascontiguousarray(table[:win * win])                  # scikit-image reads the first win * win


def bilateral_reference(image: np.ndarray, sigma_spatial: float, sigma_color: float,
                        centred: bool = True) -> np.ndarray:
    """``bilateral`` in plain NumPy, one shifted copy of the image per window offset (the tests compare them)."""
    image = np.asarray(image, dtype=np.float64)
    win = max(5, 2 * math.ceil(3 * sigma_spatial) + 1)
    spatial, R = _spatial_table(win, sigma_spatial, centred).reshape(win, win), win // 2
    H, W, C = image.shape
    padded = np.pad(image, ((R, R), (R, R), (0, 0)), mode="reflect")
    total, weights = np.zeros_like(image), np.zeros((H, W, 1))
    for dy in range(-R, R + 1):
        for dx in range(-R, R + 1):
            other = padded[R + dy:R + dy + H, R + dx:R + dx + W]
            colour = np.square(other - image).sum(-1, keepdims=True) / (C * sigma_color) ** 2
            w = spatial[dy + R, dx + R] * np.exp(-0.5 * colour)
            total += w * other
            weights += w
    return total / weights


def _smooth_hwc(image: np.ndarray, p: CartoonParams) -> tuple[np.ndarray, np.ndarray]:
    """Step 1, the expensive one: the smoothed image, and the image after two passes (the lines' source)."""
    smooth = image.astype(np.float64)
    for i in range(p.n_smooth):
        smooth = bilateral(smooth, p.sigma_spatial, p.sigma_color, p.centred)
        if i == min(1, p.n_smooth - 1):
            edges_from = smooth                                    # the paper takes lines after 1-2 passes
    return smooth, edges_from


def _cartoon_hwc(image: np.ndarray, p: CartoonParams) -> np.ndarray:
    from skimage.color import lab2rgb, rgb2lab
    from skimage.filters import gaussian

    smooth, edges_from = _smooth_hwc(image, p)
    lab = rgb2lab(smooth)
    lab[..., 0] = 100.0 * soft_quantise(lab[..., 0] / 100.0, p.levels, p.sharpness)
    out = lab2rgb(lab)
    lum = rgb2lab(edges_from)[..., 0] / 100.0
    dog = gaussian(lum, p.edge_sigma) - p.edge_tau * gaussian(lum, 1.6 * p.edge_sigma)
    lines = np.where(dog > 0, 1.0, 1.0 + np.tanh(p.edge_phi * dog))   # 1 = no line, towards 0 = ink
    return np.clip(out * lines[..., None], 0.0, 1.0).astype(np.float32)


def line_factor(image: torch.Tensor, params: CartoonParams | None = None) -> torch.Tensor:
    """Step 3 of the effect in torch: the ink-line factor (1 = no line, towards 0 = ink) of ``(B, 3, H, W)`` images.

    The same arithmetic as ``cartoon``'s lines, differentiable and exportable:
    ``lines_from_lightness(cielab_lightness(image))``. ``cartoon`` takes the
    lines from the image after two bilateral passes. Returns ``(B, 1, H, W)``.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) RGB images, got {tuple(image.shape)}")
    return lines_from_lightness(cielab_lightness(image), params)


def mix_channels(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(k, C)`` matrix times each pixel's ``C`` channels: ``(B, C, H, W)`` to ``(B, k, H, W)``.

    One MatMul, which ONNX Runtime runs 1.5-3x faster than the same einsum or a
    weighted channel sum (``benchmarks/effect_speed.py``).
    """
    B, C, H, W = image.shape
    return (matrix @ image.reshape(B, C, H * W)).reshape(B, matrix.shape[0], H, W)


def cielab_lightness(image: torch.Tensor) -> torch.Tensor:
    """CIELAB lightness L / 100 of ``(B, 3, H, W)`` sRGB images in [0, 1] (D65), as ``skimage.color.rgb2lab``."""
    c = image.clamp(0, 1)
    linear = torch.where(c > 0.04045, torch.exp(2.4 * torch.log((c + 0.055) / 1.055)), c / 12.92)
    w = torch.tensor([0.212671, 0.71516, 0.072169], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    y = (linear * w).sum(1, keepdim=True)
    f = torch.where(y > 0.008856, torch.exp(torch.log(y.clamp_min(1e-12)) / 3), 7.787 * y + 16 / 116)
    return (116 * f - 16) / 100                                     # (B, 1, H, W)


_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_RGB_FROM_XYZ = tuple(map(tuple, np.linalg.inv(np.array(_XYZ_FROM_RGB)).tolist()))
"""Its inverse, as scikit-image computes it (a constant: exporters have no matrix inverse to run)."""
_D65_WHITE = (0.95047, 1.0, 1.08883)


def quantise_lightness(image: torch.Tensor, params: CartoonParams | None = None,
                       straight_through: bool = False) -> torch.Tensor:
    """Step 2 of the effect in torch: ``(B, 3, H, W)`` sRGB in [0, 1] with its CIELAB lightness quantised.

    The same numbers as ``cartoon``'s ``rgb2lab``, ``soft_quantise`` of L,
    ``lab2rgb``, in one pass that never builds a and b: moving L to L' while
    a and b stay moves the three CIELAB ``f`` values of X, Y and Z by the same
    ``(L' - L) / 116``. With ``straight_through=True`` the step's value is the
    same but its gradient is the identity's (a straight-through estimator):
    the staircase is flat inside each band, so its own gradient would tell a
    student almost nothing about where to move. ``models.GuidedEffectStudent``
    (``exact_quantise=True``) predicts the smoothed image and leaves this to it.
    """
    p = params or CartoonParams()
    c = image.clamp(0, 1)
    linear = torch.where(c > 0.04045, torch.exp(2.4 * torch.log((c + 0.055) / 1.055)), c / 12.92)
    white = image.new_tensor(_D65_WHITE)
    xyz = mix_channels(image.new_tensor(_XYZ_FROM_RGB) / white[:, None], linear)   # X/Xn, Y/Yn, Z/Zn
    f = torch.where(xyz > 0.008856, torch.exp(torch.log(xyz.clamp_min(1e-12)) / 3), 7.787 * xyz + 16 / 116)
    lightness = (116 * f[:, 1:2] - 16) / 100                        # (B, 1, H, W), L / 100
    t = lightness.clamp(0, 1) * p.levels
    k = torch.floor(t).clamp_max(p.levels - 1)
    step = 0.5 + 0.5 * torch.tanh(p.sharpness * (t - k - 0.5)) / math.tanh(p.sharpness / 2)
    shift = ((k + step) / p.levels - lightness) * (100 / 116)       # the move of every f value
    if straight_through:
        shift = shift.detach()
    f = f + shift
    f = torch.maximum(f, image.new_tensor([-math.inf, -math.inf, 0.0]).view(1, 3, 1, 1))  # lab2rgb clips Z at 0
    xyz = torch.where(f > 0.2068966, f * f * f, (f - 16 / 116) / 7.787)
    linear = mix_channels(image.new_tensor(_RGB_FROM_XYZ) * white, xyz)
    rgb = torch.where(linear > 0.0031308, 1.055 * torch.exp(torch.log(linear.clamp_min(1e-12)) / 2.4) - 0.055,
                      12.92 * linear)
    return rgb.clamp(0, 1)


def lines_from_lightness(lightness: torch.Tensor, params: CartoonParams | None = None) -> torch.Tensor:
    """The line factor from a ``(B, 1, H, W)`` lightness map (L / 100): DoG, then ``tanh`` soft threshold.

    Gaussians as ``scipy.ndimage``'s (``nearest`` border, 4-sigma truncation),
    the threshold as ``cartoon``'s. A student that keeps this cheap step exact
    (``models.GuidedEffectStudent(exact_lines=True)``) predicts the lightness
    and leaves the lines to this function. Written for ONNX Runtime's speed on
    one core, with the same numbers as two separate blurs and ``cartoon``'s
    ``where``: the map is padded once and copied into two channels, both
    Gaussians run as one depthwise pair of 1-D convolutions (the smaller kernel
    zero-padded to the larger's width), and ``1 + tanh(phi * min(dog, 0))`` is
    the threshold without a branch (it is 1 wherever ``dog > 0``). Measured
    with ``benchmarks/effect_speed.py``.
    """
    import torch.nn.functional as F

    p = params or CartoonParams()
    sigmas = (p.edge_sigma, 1.6 * p.edge_sigma)
    R = int(4.0 * sigmas[1] + 0.5)
    x = torch.arange(-R, R + 1, dtype=lightness.dtype, device=lightness.device)
    taps = []
    for sigma in sigmas:
        r = int(4.0 * sigma + 0.5)
        k = torch.where(x.abs() <= r, torch.exp(-x**2 / (2 * sigma**2)), torch.zeros_like(x))
        taps.append(k / k.sum())
    k = torch.stack(taps)                                           # (2, 2R+1)
    t = F.pad(lightness, (R, R, R, R), mode="replicate").repeat(1, 2, 1, 1)   # (B, 2, H + 2R, W + 2R)
    t = F.conv2d(t, k.view(2, 1, 1, -1), groups=2)                  # (B, 2, H + 2R, W)
    t = F.conv2d(t, k.view(2, 1, -1, 1), groups=2)                  # (B, 2, H, W)
    dog = t[:, :1] - p.edge_tau * t[:, 1:]
    return 1.0 + torch.tanh(p.edge_phi * dog.clamp_max(0))


def cartoon(image, params: CartoonParams | None = None):
    """The teacher effect on RGB floats in [0, 1]; same type and layout back.

    Accepts a NumPy ``(H, W, 3)`` array, or a torch ``(3, H, W)`` or
    ``(B, 3, H, W)`` tensor (each image of a batch is done on its own).
    Deterministic: the same input gives the same output, bit for bit.

    Example:
        >>> cartoon(np.full((32, 32, 3), 0.5, np.float32)).shape
        (32, 32, 3)
    """
    p = params or CartoonParams()
    if not isinstance(p, CartoonParams):
        raise TypeError(f"params must be a CartoonParams, got {type(p).__name__}")
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) RGB tensor, got {tuple(image.shape)}")
        _check_range(image.detach().cpu().numpy(), "tensor", "x.float() / 255")
        if image.ndim == 4:
            return torch.stack([cartoon(im, p) for im in image])
        out = _cartoon_hwc(image.detach().cpu().permute(1, 2, 0).numpy(), p)
        return torch.from_numpy(out).permute(2, 0, 1).to(image.dtype)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a NumPy array or a torch tensor, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}: drop an alpha "
                         f"channel with image[..., :3], or give grey images three channels")
    _check_range(image, "array", "skimage.util.img_as_float(image)")
    return _cartoon_hwc(image, p)


def smoothing_stages(images: torch.Tensor, params: CartoonParams | None = None) -> torch.Tensor:
    """What the teacher's expensive step hands its cheap ones, for ``(B, 3, H, W)`` images: ``(B, 4, H, W)``.

    Channels 0-2: the image after all the bilateral passes (what the quantiser
    takes); channel 3: the CIELAB lightness / 100 of the image after two passes
    (what the lines are drawn from). ``quantise_lightness`` and
    ``lines_from_lightness`` turn them into ``cartoon``'s output exactly, so they
    are the teacher's intermediate results a student can be taught from (lesson
    06's hints, as in FitNets).
    """
    from skimage.color import rgb2lab

    p = params or CartoonParams()
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) RGB tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    _check_range(images.detach().cpu().numpy(), "tensor", "x.float() / 255")
    out = []
    for image in images.detach().cpu().permute(0, 2, 3, 1).numpy():
        smooth, edges_from = _smooth_hwc(image, p)
        out.append(np.concatenate([smooth, rgb2lab(edges_from)[..., :1] / 100.0], -1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().clamp(0, 1).contiguous()


def _check_range(image: np.ndarray, kind: str, fix: str) -> None:
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"the {kind} is {image.dtype}; the effect takes floats in [0, 1]: use {fix}")
    if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"the {kind} has values in [{image.min():.3g}, {image.max():.3g}], outside "
                         f"[0, 1]: scale it to [0, 1] first")
