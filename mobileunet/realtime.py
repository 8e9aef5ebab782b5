"""The real-time pipeline of lesson 08: frames in, region found, model applied, frames out.

YouTube's real-time effects run on the phone, frame by frame, inside a 33 ms
budget (30 fps): find the region to edit (a face), run the distilled student
on that crop only, and blend the result back with a feathered mask. This
module builds the same loop for a laptop CPU, offline:

* frame sources: ``VirtualCamera`` (a camera panning and zooming over a
  bundled photo while the light drifts), ``MovingCells`` (the cell slide
  drifting under the microscope), ``Webcam`` (OpenCV, only when present);
* regions: ``FaceDetector`` (scikit-image's bundled LBP frontal-face cascade,
  a centre box when it finds no face), ``blazeface.BlazeFaceDetector``
  (MediaPipe's neural detector, once fetched), or the whole frame;
* ``Pipeline`` runs capture -> detect -> pre-process -> model -> composite and
  times every stage of every frame; ``stage_table`` and ``plot_time_budget``
  say where the time goes against the budget;
* ``flicker`` measures temporal stability; ``animation_gif`` makes a small
  side-by-side clip to show inline.

Frames are ``(H, W, C)`` float32 arrays in [0, 1] with C = 1 or 3. A model is
any callable taking a ``(1, C, h, w)`` float tensor and returning one: an eager
``nn.Module``, an exported runtime wrapped to take tensors, or a plain effect.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .profile import Table

BUDGET_MS = 1000.0 / 30
"""One frame's time at 30 fps."""
STAGES = ("capture", "detect", "preprocess", "model", "composite")
"""The per-frame stages ``Pipeline`` times, in order."""

Model = Callable[[torch.Tensor], torch.Tensor]


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if min(h, w) < 16:
        raise ValueError(f"frame size {size!r} is too small: use at least 16 pixels a side")
    return int(h), int(w)


def _view(image: torch.Tensor, centre: tuple[float, float], scale: float,
          out: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Sample an ``out``-sized view of ``image`` (1, C, H, W) centred at ``centre`` (y, x in pixels),
    ``scale`` source pixels per output pixel; sub-pixel accurate, edges repeated."""
    _, _, H, W = image.shape
    h, w = out
    ys = centre[0] + (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) * scale
    xs = centre[1] + (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) * scale
    gy, gx = torch.meshgrid(2 * ys / (H - 1) - 1, 2 * xs / (W - 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]                      # (1, h, w, 2), x first
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)


def _to_frame(t: torch.Tensor) -> np.ndarray:
    """(1, C, h, w) tensor -> (h, w, C) float32 array clipped to [0, 1]."""
    return np.ascontiguousarray(t[0].permute(1, 2, 0).clamp(0, 1).numpy(), dtype=np.float32)


# --- frame sources ---------------------------------------------------------------------------


class VirtualCamera:
    """A camera moving over a still photo: pan, zoom in and out, light drifting, sensor noise.

    The path is smooth and loops every ``n_frames``: the view centre traces a
    small Lissajous curve around ``centre`` (fractions of the photo's height
    and width), the zoom swings between ``zoom[0]`` and ``zoom[1]``, the
    brightness by +-``light`` and each colour a little, and every frame gets
    its own Gaussian noise of std ``noise``. Frame ``t`` depends only on the
    photo, the arguments and ``t``: same seed, same pixels, in any order.

    Example:
        >>> cam = VirtualCamera("astronaut", size=64, n_frames=8)
        >>> cam[0].shape, len(cam)
        ((64, 64, 3), 8)
    """

    def __init__(self, photo: str | np.ndarray = "astronaut", size: int | Sequence[int] = 128,
                 n_frames: int = 60, centre: tuple[float, float] = (0.5, 0.5),
                 zoom: tuple[float, float] = (1.0, 1.5), pan: float = 0.06, light: float = 0.15,
                 noise: float = 0.01, seed: int = 0):
        if isinstance(photo, str):
            from .photos import load_photo

            photo = load_photo(photo)
        photo = _check_frame(np.asarray(photo), "photo")
        if n_frames < 2:
            raise ValueError(f"n_frames={n_frames}: a video needs at least 2 frames")
        if not (1.0 <= zoom[0] <= zoom[1]):
            raise ValueError(f"zoom={zoom}: need 1 <= zoom[0] <= zoom[1] (1 = the widest view)")
        if not (0 <= pan < 0.5 and 0 <= light < 1 and noise >= 0):
            raise ValueError(f"pan={pan}, light={light}, noise={noise}: need 0 <= pan < 0.5, "
                             f"0 <= light < 1, noise >= 0")
        self.size, self.n_frames = _size2(size), int(n_frames)
        self.centre, self.zoom, self.pan, self.light, self.noise, self.seed = centre, zoom, pan, light, noise, seed
        h, w = self.size
        H, W = photo.shape[:2]
        view = 0.8 * min(H / h, W / w)            # source pixels per output pixel at zoom 1
        image = torch.from_numpy(photo).permute(2, 0, 1)[None]
        shrink = min(1.0, zoom[1] / view)         # pre-shrink once: the closest view is 1:1, wider ones alias little
        if shrink < 1.0:
            image = F.interpolate(image, scale_factor=shrink, mode="bilinear", antialias=True,
                                  align_corners=False)
        self._image, self._view = image, view * shrink
        rng = np.random.default_rng(seed)
        self._phase = rng.uniform(0, 2 * np.pi, size=6)

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} is outside 0..{self.n_frames - 1}")
        _, C, H, W = self._image.shape
        s = 2 * np.pi * t / self.n_frames
        ph = self._phase
        z = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * 0.5 * (1 - np.cos(s))
        scale = self._view / z
        cy = (self.centre[0] + self.pan * np.sin(s + ph[0])) * (H - 1)
        cx = (self.centre[1] + self.pan * np.sin(2 * s + ph[1])) * (W - 1)
        # keep the view inside the photo
        hy, hx = (self.size[0] - 1) / 2 * scale, (self.size[1] - 1) / 2 * scale
        cy, cx = np.clip(cy, hy, H - 1 - hy), np.clip(cx, hx, W - 1 - hx)
        frame = _view(self._image, (float(cy), float(cx)), float(scale), self.size)
        gain = 1 + self.light * np.sin(s + ph[2])
        tint = 1 + 0.3 * self.light * np.sin(s + ph[3:3 + C])
        frame = frame * torch.tensor(gain * tint, dtype=torch.float32).view(1, C, 1, 1)
        if self.noise:
            g = torch.Generator().manual_seed(int(self.seed) * 100_003 + int(t))
            frame = frame + self.noise * torch.randn(frame.shape, generator=g)
        return _to_frame(frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[t] for t in range(self.n_frames))


class MovingCells:
    """The cells slide drifting under the microscope: generated cells (``data.make_cell_image``)
    seen through a window that wanders up to ``drift`` pixels, with lamp flicker and sensor noise.

    Frames are ``(H, W, 1)``; ``mask(t)`` is frame ``t``'s ground-truth cell mask.
    Deterministic in ``seed`` and ``t``.
    """

    def __init__(self, size: int | Sequence[int] = 128, n_frames: int = 60, drift: float = 12.0,
                 light: float = 0.05, noise: float = 0.02, seed: int = 0):
        from .data import make_cell_image

        if n_frames < 2:
            raise ValueError(f"n_frames={n_frames}: a video needs at least 2 frames")
        if drift < 0 or not 0 <= light < 1 or noise < 0:
            raise ValueError(f"drift={drift}, light={light}, noise={noise}: need drift >= 0, "
                             f"0 <= light < 1, noise >= 0")
        self.size, self.n_frames = _size2(size), int(n_frames)
        self.drift, self.light, self.noise, self.seed = drift, light, noise, seed
        m = int(np.ceil(drift)) + 2
        sample = make_cell_image((self.size[0] + 2 * m, self.size[1] + 2 * m), seed=seed)
        self._image = torch.from_numpy(sample.image)[None, None]
        self._mask = torch.from_numpy(sample.mask)[None, None]
        self._phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=3)

    def __len__(self) -> int:
        return self.n_frames

    def _centre(self, t: int) -> tuple[float, float]:
        s = 2 * np.pi * t / self.n_frames
        _, _, H, W = self._image.shape
        return ((H - 1) / 2 + self.drift * np.sin(s + self._phase[0]),
                (W - 1) / 2 + self.drift * np.sin(2 * s + self._phase[1]))

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} is outside 0..{self.n_frames - 1}")
        frame = _view(self._image, self._centre(t), 1.0, self.size)
        frame = frame * (1 + self.light * np.sin(2 * np.pi * t / self.n_frames * 3 + self._phase[2]))
        if self.noise:
            g = torch.Generator().manual_seed(int(self.seed) * 100_003 + int(t))
            frame = frame + self.noise * torch.randn(frame.shape, generator=g)
        return _to_frame(frame)

    def mask(self, t: int) -> np.ndarray:
        """The cells' mask under frame ``t``, ``(H, W)`` float32 of 0s and 1s."""
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} is outside 0..{self.n_frames - 1}")
        return _to_frame(_view(self._mask, self._centre(t), 1.0, self.size, mode="nearest"))[..., 0]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[t] for t in range(self.n_frames))


class Webcam:
    """Live frames from a camera through OpenCV; never required (``available()`` says if it can run).

    Each frame is centre-cropped to the aspect of ``size``, resized to it and
    converted to RGB floats. Iterating yields ``n_frames`` frames. Close it
    (or use ``with``) to free the camera.
    """

    def __init__(self, index: int = 0, size: int | Sequence[int] = 128, n_frames: int = 100):
        try:
            import cv2
        except ImportError as err:
            raise ImportError("a live webcam needs OpenCV: pip install opencv-python. "
                              "VirtualCamera and MovingCells work offline without it") from err
        self._cv2, self.size, self.n_frames = cv2, _size2(size), int(n_frames)
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise RuntimeError(f"no camera at index {index} (or no permission to open it): "
                               f"use VirtualCamera or MovingCells instead")

    @staticmethod
    def available(index: int = 0) -> bool:
        """True when OpenCV is installed and camera ``index`` opens."""
        try:
            Webcam(index, n_frames=1).close()
            return True
        except (ImportError, RuntimeError):
            return False

    def read(self) -> np.ndarray:
        """One frame, ``(H, W, 3)`` float32 RGB in [0, 1]."""
        ok, bgr = self._cap.read()
        if not ok:
            raise RuntimeError("the camera returned no frame")
        h, w = self.size
        H, W = bgr.shape[:2]
        k = min(H / h, W / w)
        ch, cw = int(h * k), int(w * k)
        crop = bgr[(H - ch) // 2:(H - ch) // 2 + ch, (W - cw) // 2:(W - cw) // 2 + cw]
        rgb = self._cv2.cvtColor(self._cv2.resize(crop, (w, h), interpolation=self._cv2.INTER_AREA),
                                 self._cv2.COLOR_BGR2RGB)
        return rgb.astype(np.float32) / 255.0

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.read() for _ in range(self.n_frames))

    def __len__(self) -> int:
        return self.n_frames

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "Webcam":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- regions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A box in a frame, in pixels, and what found it (``"face"``, ``"centre"``, ``"frame"``)."""

    top: int
    left: int
    height: int
    width: int
    source: str = "frame"

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    @classmethod
    def whole(cls, frame: np.ndarray) -> "Region":
        return cls(0, 0, frame.shape[0], frame.shape[1], "frame")


def centre_box(shape: Sequence[int], fraction: float = 0.6) -> Region:
    """A box of ``fraction`` of the frame's height and width in its middle: the fallback region."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: use a value in (0, 1]")
    H, W = shape[:2]
    h, w = max(1, round(H * fraction)), max(1, round(W * fraction))
    return Region((H - h) // 2, (W - w) // 2, h, w, "centre")


class FaceDetector:
    """The largest frontal face, found by scikit-image's bundled LBP cascade; else a centre box.

    The cascade (Viola-Jones style boosted LBP features, shipped with
    scikit-image as OpenCV's ``lbpcascade_frontalface``) needs no download.
    The face box is grown by ``margin`` on each side (hair, chin) and clipped
    to the frame. When no face is found, the region is ``centre_box(frame,
    fallback)``. A production pipeline uses a small neural detector instead
    (MediaPipe's BlazeFace, ~1 ms on a phone), runs it on a downscaled frame,
    tracks the box between detections and takes the blend mask from a face
    mesh or a segmentation model.
    """

    def __init__(self, margin: float = 0.25, fallback: float = 0.6, min_size: int = 32,
                 scale_factor: float = 1.25, step_ratio: float = 1.0, downscale: int = 1):
        import skimage.data
        from skimage.feature import Cascade

        if margin < 0 or min_size < 8 or scale_factor <= 1 or step_ratio <= 0:
            raise ValueError(f"margin={margin}, min_size={min_size}, scale_factor={scale_factor}, "
                             f"step_ratio={step_ratio}: need margin >= 0, min_size >= 8, "
                             f"scale_factor > 1, step_ratio > 0")
        if isinstance(downscale, bool) or not isinstance(downscale, int) or not 1 <= downscale <= 8:
            raise ValueError(f"downscale={downscale!r}: search a frame shrunk by a whole factor 1-8 "
                             f"(2 = a quarter of the pixels)")
        if min_size // downscale < 24:
            raise ValueError(f"min_size={min_size} at downscale={downscale} is {min_size // downscale} px in the "
                             f"shrunk frame, below the cascade's 24-pixel window: raise min_size or lower downscale")
        centre_box((1, 1), fallback)                  # validates fallback
        self.margin, self.fallback, self.min_size = margin, fallback, min_size
        self.scale_factor, self.step_ratio, self.downscale = scale_factor, step_ratio, downscale
        self._cascade = Cascade(skimage.data.lbp_frontal_face_cascade_filename())

    def faces(self, frame: np.ndarray) -> list[Region]:
        """Every face the cascade finds, largest first, without margin, in the frame's own pixels.

        With ``downscale=k`` the cascade searches the frame shrunk k times
        (k x k averages): about k² fewer windows, so a detection costs a
        fraction of a frame's budget instead of most of it.
        """
        frame = _check_frame(frame)
        grey = frame.mean(axis=-1) if frame.shape[-1] == 3 else frame[..., 0]
        k = self.downscale
        if k > 1:
            h, w = grey.shape[0] // k * k, grey.shape[1] // k * k
            grey = grey[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
        H, W = grey.shape
        found = self._cascade.detect_multi_scale(
            img=np.ascontiguousarray(grey, dtype=np.float64), scale_factor=self.scale_factor,
            step_ratio=self.step_ratio, min_size=(self.min_size // k, self.min_size // k), max_size=(H, W))
        boxes = [Region(d["r"] * k, d["c"] * k, d["height"] * k, d["width"] * k, "face") for d in found]
        return sorted(boxes, key=lambda b: b.height * b.width, reverse=True)

    def __call__(self, frame: np.ndarray) -> Region:
        faces = self.faces(frame)
        if not faces:
            return centre_box(frame.shape, self.fallback)
        return grow_box(faces[0], self.margin, frame.shape)


def grow_box(box: Region, margin: float, shape: Sequence[int]) -> Region:
    """``box`` grown by ``margin`` of its height and width on each side, clipped to a frame of ``shape``."""
    H, W = shape[:2]
    dy, dx = round(box.height * margin), round(box.width * margin)
    top, left = max(0, box.top - dy), max(0, box.left - dx)
    bottom, right = min(H, box.top + box.height + dy), min(W, box.left + box.width + dx)
    return Region(top, left, bottom - top, right - left, box.source)


# --- compositing ------------------------------------------------------------------------------


def feather_mask(height: int, width: int, feather: float = 0.15) -> np.ndarray:
    """A ``(height, width)`` blend mask: 1 inside, easing to 0 at the border over ``feather``
    of the shorter side (a smoothstep ramp). ``feather=0`` gives all ones."""
    if height < 1 or width < 1:
        raise ValueError(f"mask size {height}x{width}: both sides must be at least 1")
    if not 0 <= feather <= 0.5:
        raise ValueError(f"feather={feather}: use a fraction of the region's short side in [0, 0.5]")
    ramp_px = feather * min(height, width)
    if ramp_px == 0:
        return np.ones((height, width), np.float32)

    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5          # distance to the nearer edge
        u = np.clip(d / ramp_px, 0, 1)
        return u * u * (3 - 2 * u)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def composite(frame: np.ndarray, edited: np.ndarray, region: Region, mask: np.ndarray | float) -> np.ndarray:
    """``frame`` with ``region`` blended towards ``edited``: ``out = (1 - mask) * frame + mask * edited``.

    ``edited`` is ``(h, w, C)`` for the region's ``h x w``; ``mask`` is ``(h, w)``
    or a scalar in [0, 1]. A grey frame is made RGB when ``edited`` is RGB.
    Returns a new array; ``frame`` is left alone.
    """
    frame, edited = _check_frame(frame), np.asarray(edited, dtype=np.float32)
    h, w = region.height, region.width
    if edited.ndim != 3 or edited.shape[:2] != (h, w):
        raise ValueError(f"edited has shape {edited.shape}; the region needs ({h}, {w}, C)")
    mask = np.broadcast_to(np.asarray(mask, dtype=np.float32), (h, w)) if np.ndim(mask) == 0 else \
        np.asarray(mask, dtype=np.float32)
    if mask.shape != (h, w):
        raise ValueError(f"mask has shape {mask.shape}; the region needs ({h}, {w})")
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise ValueError(f"mask values lie in [{mask.min():.3g}, {mask.max():.3g}]; use [0, 1]")
    if region.top < 0 or region.left < 0 or region.top + h > frame.shape[0] or region.left + w > frame.shape[1]:
        raise ValueError(f"{region} does not fit in a {frame.shape[0]}x{frame.shape[1]} frame")
    C = edited.shape[-1]
    if frame.shape[-1] != C:
        if frame.shape[-1] == 1 and C == 3:
            frame = np.repeat(frame, 3, axis=-1)
        else:
            raise ValueError(f"edited has {C} channels, the frame {frame.shape[-1]}")
    out = frame.copy()
    sub = out[region.slices]
    m = mask[..., None]
    out[region.slices] = (1 - m) * sub + m * edited              # exact at mask 0 and 1
    return out


def replace_region(crop: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, float]:
    """For effect models: the model's output image is the edit, blended fully (before feathering)."""
    if output.shape[-1] != crop.shape[-1]:
        raise ValueError(f"the model returned {output.shape[-1]} channels for a {crop.shape[-1]}-channel "
                         f"crop: an image effect must keep the channels (for a mask, use MaskOverlay)")
    return np.clip(output, 0, 1), 1.0


@dataclass(frozen=True)
class MaskOverlay:
    """For segmentation models: tint the region where ``sigmoid(output)`` says "cell" (or "person").

    The edit is ``colour``; the blend weight is ``strength * probability``.
    """

    colour: tuple[float, float, float] = (1.0, 0.35, 0.1)
    strength: float = 0.6

    def __call__(self, crop: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if output.shape[-1] != 1:
            raise ValueError(f"MaskOverlay expects 1-channel logits, got {output.shape[-1]} channels")
        prob = 1 / (1 + np.exp(-output[..., 0]))
        tint = np.broadcast_to(np.asarray(self.colour, np.float32), crop.shape[:2] + (3,))
        return tint, (self.strength * prob).astype(np.float32)


def _blend_boxes(old: Region | None, new: Region, keep: float, shape: Sequence[int]) -> Region:
    """``keep`` of the old box and ``1 - keep`` of the new one (corners averaged), clipped to the frame."""
    if old is None or keep == 0 or old.source != new.source:
        return new
    H, W = shape[:2]
    mix = lambda a, b: keep * a + (1 - keep) * b  # noqa: E731
    top, left = mix(old.top, new.top), mix(old.left, new.left)
    bottom = mix(old.top + old.height, new.top + new.height)
    right = mix(old.left + old.width, new.left + new.width)
    top, left = max(0, round(top)), max(0, round(left))
    bottom, right = min(H, round(bottom)), min(W, round(right))
    return Region(top, left, max(1, bottom - top), max(1, right - left), new.source)


# --- the pipeline -----------------------------------------------------------------------------


@dataclass
class PipelineRun:
    """What ``Pipeline.run`` recorded: the frames in and out, each frame's region and stage times."""

    inputs: list[np.ndarray] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    timings: Table = field(default_factory=Table)

    def stage_ms(self, statistic: Callable[[np.ndarray], float] = np.mean) -> dict[str, float]:
        """Milliseconds of each stage over the frames: the mean (default; the stages add up to
        the mean frame), or any other ``statistic`` such as ``np.median``."""
        if not self.timings.rows:
            raise ValueError("this run recorded no frames")
        return {s: float(statistic(np.asarray(self.timings.column(f"{s}_ms")))) for s in STAGES}

    @property
    def total_ms(self) -> float:
        """Mean milliseconds of a whole frame (what sets the frame rate)."""
        return float(np.mean(self.timings.column("total_ms")))

    @property
    def fps(self) -> float:
        return 1000.0 / self.total_ms

    def tail(self, budget_ms: float = BUDGET_MS) -> dict:
        """The frame times that make a video stutter: median, p95, p99, worst, and the deadline misses.

        A frame misses its deadline when it takes longer than ``budget_ms``; at
        30 fps one miss is one frame shown twice. Means hide misses: a stage
        that costs 30 ms on one frame in five averages 6 ms.
        """
        if not self.timings.rows:
            raise ValueError("this run recorded no frames")
        if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not budget_ms > 0:
            raise ValueError(f"budget_ms={budget_ms!r}: a frame budget in milliseconds, e.g. 33.3 for 30 fps")
        ms = np.asarray(self.timings.column("total_ms"), dtype=np.float64)
        misses = int((ms > budget_ms).sum())
        return {"frames": len(ms), "median ms": float(np.median(ms)), "p95 ms": float(np.percentile(ms, 95)),
                "p99 ms": float(np.percentile(ms, 99)), "worst ms": float(ms.max()), "misses": misses,
                "miss rate": misses / len(ms)}

    def summary(self, name: str = "") -> dict:
        """One row: mean ms per stage and per frame, the slowest 5% of frames (``p95 ms``),
        the mean's share of the 33 ms budget, and whether it keeps 30 fps.

        Means, not medians, because a stage that runs every few frames (a detector
        with ``detect_every``) costs its average, and the stages add up to the
        mean frame. "Keeps 30 fps" is judged by the deadlines, not the mean: at
        most 1% of the frames over 33 ms (``tail``).
        """
        stages = self.stage_ms()
        missed = self.tail(BUDGET_MS)["miss rate"]
        return {"pipeline": name, "frames": len(self.timings), **{f"{s} ms": v for s, v in stages.items()},
                "total ms": self.total_ms, "p95 ms": float(np.percentile(self.timings.column("total_ms"), 95)),
                "budget": f"{100 * self.total_ms / BUDGET_MS:.0f}%",
                "30 fps": "yes" if missed <= 0.01 else f"no ({missed:.0%} late)"}


class Pipeline:
    """Find the region, run the model on it, composite it back: the on-device pattern.

    Per frame: ``detector(frame)`` gives a ``Region`` (``None``: the whole
    frame; re-detected every ``detect_every`` frames, the box reused between,
    and each new box blended with the last by ``smooth``, a simple tracker
    that stops the crop from jumping between detections);
    the crop is resized to ``size`` x ``size`` (``None``: kept as it is) and
    becomes a ``(1, C, size, size)`` tensor; ``model`` runs on it without
    gradients; its output is resized back to the region, turned into an edit
    and a blend weight by ``apply`` (``replace_region`` for effects,
    ``MaskOverlay()`` for segmentation logits) and blended in with a
    ``feather_mask``. An ``nn.Module`` is put in eval mode. Set the torch
    thread count before running.
    """

    def __init__(self, model: Model, detector: Callable[[np.ndarray], Region] | None = None,
                 size: int | None = 128, apply: Callable = replace_region, feather: float = 0.15,
                 detect_every: int = 1, smooth: float = 0.0):
        if not callable(model):
            raise TypeError(f"model must be callable on a (1, C, H, W) tensor, got {type(model).__name__}")
        if detector is not None and not callable(detector):
            raise TypeError(f"detector must be callable on a frame (or None), got {type(detector).__name__}")
        if size is not None and size < 16:
            raise ValueError(f"size={size}: the model input needs at least 16 pixels a side")
        if detect_every < 1:
            raise ValueError(f"detect_every={detect_every}: use 1 (every frame) or more")
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth < 1:
            raise ValueError(f"smooth={smooth!r}: the share of the previous box kept at each detection, "
                             f"0 (none) to below 1, e.g. 0.5")
        feather_mask(1, 1, feather)                     # validates feather
        if isinstance(model, nn.Module):
            model.eval()
        self.model, self.detector, self.size, self.apply = model, detector, size, apply
        self.feather, self.detect_every, self.smooth = feather, detect_every, float(smooth)
        self._region: Region | None = None
        self._count = 0

    def reset(self) -> None:
        """Forget the last region, so the next frame is detected afresh."""
        self._region, self._count = None, 0

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, Region, dict[str, float]]:
        """One frame through detect, pre-process, model and composite: (output, region, ms per stage)."""
        frame = _check_frame(frame)
        ms: dict[str, float] = {}
        t0 = time.perf_counter()
        if self.detector is None:
            region = Region.whole(frame)
        elif self._region is None or self._count % self.detect_every == 0:
            region = self._region = _blend_boxes(self._region, self.detector(frame), self.smooth, frame.shape)
        else:
            region = self._region
        self._count += 1
        t1 = time.perf_counter()
        crop = frame[region.slices]
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        if self.size is not None and crop.shape[:2] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=max(crop.shape[:2]) > self.size)
        x = x.contiguous()
        t2 = time.perf_counter()
        with torch.inference_mode():
            y = self.model(x)
        y = torch.as_tensor(y)
        t3 = time.perf_counter()
        if y.ndim != 4 or y.shape[0] != 1:
            raise ValueError(f"the model returned shape {tuple(y.shape)}; expected (1, C, H, W)")
        if y.shape[-2:] != crop.shape[:2]:
            y = F.interpolate(y.float(), size=crop.shape[:2], mode="bilinear", align_corners=False)
        edited, alpha = self.apply(crop, y[0].permute(1, 2, 0).float().numpy())
        mask = feather_mask(region.height, region.width, self.feather) * alpha
        out = composite(frame, edited, region, mask)
        t4 = time.perf_counter()
        for stage, a, b in (("detect", t0, t1), ("preprocess", t1, t2), ("model", t2, t3), ("composite", t3, t4)):
            ms[stage] = 1e3 * (b - a)
        return out, region, ms

    def run(self, source: Iterable[np.ndarray], n_frames: int | None = None, warmup: int = 2,
            keep: bool = True) -> PipelineRun:
        """Run the frames of ``source`` (all, or the first ``n_frames``); see ``run_pipelines``."""
        return run_pipelines({"": self}, source, n_frames, warmup, keep)[""]


def run_pipelines(pipelines: dict[str, Pipeline], source: Iterable[np.ndarray], n_frames: int | None = None,
                  warmup: int = 2, keep: bool = True) -> dict[str, PipelineRun]:
    """Run several pipelines on the same frames, interleaved frame by frame: ``{name: PipelineRun}``.

    Each frame is captured once (its time is charged to every pipeline) and
    then goes through each pipeline in turn, so load from other processes hits
    all of them alike. ``warmup`` untimed passes of the first frame come first
    (first calls allocate memory and pick kernels). ``keep=False`` stores no
    frames, only the timings.
    """
    if not pipelines or not all(isinstance(p, Pipeline) for p in pipelines.values()):
        raise TypeError("pipelines must be a non-empty dict of {name: Pipeline}")
    if n_frames is not None and n_frames < 1:
        raise ValueError(f"n_frames={n_frames}: use at least 1 (or None for every frame)")
    if warmup < 0:
        raise ValueError(f"warmup={warmup}: use 0 or more")
    runs = {name: PipelineRun() for name in pipelines}
    frames = iter(source)
    for p in pipelines.values():
        p.reset()
    i = 0
    while n_frames is None or i < n_frames:
        t0 = time.perf_counter()
        try:
            frame = next(frames)
        except StopIteration:
            break
        capture_ms = 1e3 * (time.perf_counter() - t0)
        if i == 0:
            for p in pipelines.values():
                for _ in range(warmup):
                    p.step(frame)
                p.reset()
        for name, p in pipelines.items():
            out, region, ms = p.step(frame)
            run = runs[name]
            run.regions.append(region)
            if keep:
                run.inputs.append(frame)
                run.outputs.append(out)
            row = {"frame": i, "region": region.source, "capture_ms": capture_ms,
                   **{f"{s}_ms": v for s, v in ms.items()}}
            row["total_ms"] = sum(row[f"{s}_ms"] for s in STAGES)
            run.timings.rows.append(row)
        i += 1
    if i == 0:
        raise ValueError("the source gave no frames")
    return runs


def stage_table(runs: dict[str, PipelineRun]) -> Table:
    """One row per run (``PipelineRun.summary``): mean ms per stage and per frame, p95, fps, budget share."""
    return Table([run.summary(name) for name, run in runs.items()])


FPS_BUDGETS = {"30 fps": BUDGET_MS, "60 fps": 1000.0 / 60}
"""The deadlines ``deadline_table`` counts misses against."""


def deadline_table(runs: dict[str, PipelineRun], budgets: dict[str, float] | None = None) -> Table:
    """One row per run: median, p95, p99 and worst frame, and the share of frames over each budget.

    ``budgets`` maps a label to milliseconds (default ``FPS_BUDGETS``: 33.3 ms
    for 30 fps, 16.7 ms for 60 fps). A pipeline keeps a frame rate when it
    misses (almost) no deadline, not when its mean frame fits.
    """
    budgets = FPS_BUDGETS if budgets is None else budgets
    rows = []
    for name, run in runs.items():
        first = run.tail(next(iter(budgets.values())))
        row = {"pipeline": name, **{k: first[k] for k in ("frames", "median ms", "p95 ms", "p99 ms", "worst ms")}}
        for label, ms in budgets.items():
            row[f"missed at {label}"] = run.tail(ms)["miss rate"]
        rows.append(row)
    return Table(rows)


def plot_timeline(run: PipelineRun, budget_ms: float = BUDGET_MS, title: str = ""):
    """Every frame of a run as a stacked bar of its stages, the budget as a line, misses marked below."""
    import matplotlib.pyplot as plt

    if not run.timings.rows:
        raise ValueError("this run recorded no frames")
    frames = np.arange(len(run.timings))
    fig, ax = plt.subplots(figsize=(9, 2.8))
    bottom = np.zeros(len(frames))
    colours = plt.get_cmap("tab10").colors
    for k, stage in enumerate(STAGES):
        ms = np.asarray(run.timings.column(f"{stage}_ms"), dtype=np.float64)
        ax.bar(frames, ms, bottom=bottom, width=1.0, color=colours[k], label=stage, linewidth=0)
        bottom += ms
    ax.axhline(budget_ms, color="k", ls="--", lw=1)
    missed = frames[bottom > budget_ms]
    if len(missed):
        ax.scatter(missed, np.full(len(missed), -0.04 * budget_ms), marker="^", color="red", s=14,
                   label=f"missed ({len(missed)})", clip_on=False)
    ax.set(xlabel="frame", ylabel="ms", title=title or f"each frame against the {budget_ms:.1f} ms budget",
           xlim=(-0.5, len(frames) - 0.5), ylim=(-0.08 * budget_ms, max(bottom.max(), budget_ms) * 1.1))
    ax.title.set_fontsize(9)
    ax.legend(ncol=len(STAGES) + 1, fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_time_budget(runs: dict[str, PipelineRun], budget_ms: float = BUDGET_MS):
    """Where the time goes: one stacked bar per run (mean ms per stage), the budget as a line."""
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("runs is empty: pass {name: PipelineRun}")
    names = list(runs)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(names) + 1.3))
    left = np.zeros(len(names))
    colours = plt.get_cmap("tab10").colors
    for k, stage in enumerate(STAGES):
        ms = np.array([runs[n].stage_ms()[stage] for n in names])
        ax.barh(names, ms, left=left, color=colours[k], label=stage)
        left += ms
    ax.axvline(budget_ms, color="k", ls="--", lw=1)
    ax.text(budget_ms, -0.6, f" {budget_ms:.0f} ms = 30 fps", fontsize=8, va="top")
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per frame")
    ax.legend(ncol=len(STAGES), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# --- temporal stability ----------------------------------------------------------------------


def _mean_change(frames: Sequence[np.ndarray]) -> float:
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(frames[:-1], frames[1:])]))


def flicker(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray]) -> float:
    """How much the output changes from frame to frame, relative to how much the input does.

    ``mean_t mean|out_t - out_{t-1}|  /  mean_t mean|in_t - in_{t-1}|``: 1 for a
    model that passes the input through, 0 for a constant output, above 1 when
    the model amplifies small changes (noise, light) into visible flicker.
    """
    if len(outputs) != len(inputs):
        raise ValueError(f"{len(outputs)} outputs for {len(inputs)} inputs: give the same frames")
    if len(inputs) < 2:
        raise ValueError("flicker needs at least 2 frames")
    for o, x in zip(outputs, inputs):
        if np.shape(o)[:2] != np.shape(x)[:2]:
            raise ValueError(f"an output of shape {np.shape(o)} for an input of shape {np.shape(x)}")
    change_in = _mean_change([np.asarray(x, np.float32) for x in inputs])
    if change_in == 0:
        raise ValueError("the input frames never change, so flicker relative to them is undefined")
    return _mean_change([np.asarray(o, np.float32) for o in outputs]) / change_in


def without_global_light(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each frame minus its own mean per channel: what is left when the whole scene's light changes."""
    return [np.asarray(f, np.float32) - np.asarray(f, np.float32).mean(axis=(0, 1), keepdims=True) for f in frames]


def structure_flicker(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray]) -> float:
    """``flicker`` after taking each frame's global brightness out of inputs and outputs alike.

    A drift of the scene's light changes every pixel a little and dominates
    plain ``flicker``, so every model scores about 1 and a stable effect
    cannot be told from the identity. With the light taken out, what remains
    is how the output's *structure* (edges, bands, lines) moves against the
    input's: 1 for the identity, below 1 for an effect that holds still, above
    1 for one that shimmers.
    """
    return flicker(without_global_light(outputs), without_global_light(inputs))


def stability_table(runs: dict[str, PipelineRun]) -> Table:
    """One row per run: frame-to-frame change of input and output, ``flicker`` and ``structure_flicker``."""
    rows = []
    for name, run in runs.items():
        if len(run.outputs) < 2:
            raise ValueError(f"run {name!r} kept fewer than 2 frames: run it with keep=True")
        rows.append({"pipeline": name, "input change": _mean_change(run.inputs),
                     "output change": _mean_change(run.outputs), "flicker": flicker(run.outputs, run.inputs),
                     "structure flicker": structure_flicker(run.outputs, run.inputs)})
    return Table(rows)


# --- animation --------------------------------------------------------------------------------


def animation_gif(videos: dict[str, Sequence[np.ndarray]], fps: float = 10, height: int = 128,
                  colours: int = 64, max_bytes: int = 300_000) -> bytes:
    """A looping GIF of the videos side by side, each labelled with its name; at most ``max_bytes``.

    Every video is a sequence of frames of the same length. Each frame gets its
    own palette of ``colours`` (2-256). When the GIF is too big it is made
    smaller (panels shrunk to 96 px, then every other frame dropped) until it fits.
    """
    from PIL import Image, ImageDraw

    if not videos:
        raise ValueError("videos is empty: pass {name: frames}")
    lengths = {len(v) for v in videos.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every video needs the same, non-zero number of frames, got {sorted(lengths)}")
    if height < 16 or fps <= 0 or not 2 <= colours <= 256:
        raise ValueError(f"height={height}, fps={fps}, colours={colours}: need height >= 16, fps > 0 "
                         f"and 2 <= colours <= 256")
    step, data = 1, b""
    for _ in range(8):
        panels = []
        n = len(next(iter(videos.values())))
        for t in range(0, n, step):
            row = []
            for name, frames in videos.items():
                im = np.asarray(frames[t], np.float32)
                im = np.repeat(im, 3, -1) if im.ndim == 3 and im.shape[-1] == 1 else im
                im = np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im
                pil = Image.fromarray((np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8))
                w = max(1, round(pil.width * height / pil.height))
                pil = pil.resize((w, height), Image.BILINEAR)
                ImageDraw.Draw(pil).text((3, 2), name, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
                row.append(pil)
            canvas = Image.new("RGB", (sum(p.width for p in row) + 2 * (len(row) - 1), height), (255, 255, 255))
            x = 0
            for p in row:
                canvas.paste(p, (x, 0))
                x += p.width + 2
            panels.append(canvas.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        buffer = io.BytesIO()
        panels[0].save(buffer, format="GIF", save_all=True, append_images=panels[1:], loop=0,
                       duration=round(1000 * step / fps), optimize=True)
        data = buffer.getvalue()
        if len(data) <= max_bytes:
            return data
        if height > 96:
            height = max(96, int(height * 0.8))
        else:
            step *= 2
    raise ValueError(f"could not fit the animation in {max_bytes} bytes ({len(data)} at the smallest): "
                     f"pass fewer frames or a smaller height")


def show_animation(videos: dict[str, Sequence[np.ndarray]], **kwargs):
    """``animation_gif`` as an IPython ``Image`` that a notebook shows inline (the GIF is embedded)."""
    from IPython.display import Image as IPyImage

    return IPyImage(data=animation_gif(videos, **kwargs), format="gif")


# --- input checks -----------------------------------------------------------------------------


def _check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"the {what} must be a NumPy array (H, W, C), got {type(frame).__name__}")
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3):
        raise ValueError(f"the {what} has shape {frame.shape}; expected (H, W), (H, W, 1) or (H, W, 3)")
    if not np.issubdtype(frame.dtype, np.floating):
        raise TypeError(f"the {what} is {frame.dtype}; use floats in [0, 1] "
                        f"(skimage.util.img_as_float32(frame))")
    return frame.astype(np.float32, copy=False)
