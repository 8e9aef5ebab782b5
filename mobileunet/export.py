"""Export a trained model for on-device use (ONNX Runtime, ExecuTorch/XNNPACK; fp32 and int8) and prove parity.

Lesson 07 walks through each step; ``python -m mobileunet export`` runs them on
a checkpoint. Every artefact is checked against eager PyTorch on the same
inputs: the largest absolute difference of the outputs, and the task metric
on the validation split (IoU for a segmentation model, PSNR for an
image-to-image effect). Tolerances: fp32 within ``FP32_MAX_ABS`` (1e-4); int8
loses at most ``INT8_IOU_POINTS`` (1 IoU point) or ``INT8_PSNR_DB`` (1 dB).

The calls are the ones that work with torch 2.14 and executorch 1.5
(``docs/export.md``): ``torch.onnx.export(dynamo=True, external_data=False)``;
``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK
partitioner; int8 by PT2E (``XNNPACKQuantizer``, per-channel) or by ONNX
Runtime's static QDQ quantization, both calibrated on real course images.
onnx, onnxruntime and executorch are optional: ``pip install -e ".[export]"``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import math
import operator
import os
import tempfile
import time
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from .data import CellsDataset
from .decoders import DecoderBlock
from .metrics import iou, psnr as psnr_per_image
from .photos import TRAIN_PHOTOS, VAL_PHOTOS, load_photo
from .profile import ort_session
from .validate import is_whole

FORMATS = ("onnx", "pte")
MULTIPLE = 32                 # five stride-2 stages: H and W must divide by 2**5
FP32_MAX_ABS = 1e-4
INT8_IOU_POINTS = 1.0
INT8_PSNR_DB = 1.0
INT8_EAGER_PSNR_DB = 30.0   # an effect exported without the teacher's targets: this close to eager
INSTALL = 'pip install -e ".[export]"'


def require(module: str):
    """Import an optional export dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ImportError(f"{top} is missing (needed to export, lesson 07): {INSTALL}") from err


@contextlib.contextmanager
def native_quiet():
    """Silence ExecuTorch's C++ notes (cpuinfo, threadpool): they reach the process's file
    descriptors through C stdio, or, inside Jupyter, Python's ``sys.stdout``/``sys.stderr``.
    Python output and warnings still come through; exceptions propagate."""
    import ctypes
    import logging
    import os
    import re
    import sys

    pytree = logging.getLogger("torch.utils._pytree")      # a deprecation note executorch triggers
    level, saved = pytree.level, []
    pytree.setLevel(logging.ERROR)
    captured = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    real = {name: getattr(sys, name) for name in captured}
    try:
        for stream in real.values():
            with contextlib.suppress(Exception):
                stream.flush()
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(null.fileno(), fd)
            with contextlib.redirect_stdout(captured["stdout"]), contextlib.redirect_stderr(captured["stderr"]):
                yield
    finally:
        with contextlib.suppress(Exception):                  # C stdio buffers: flush them into /dev/null
            ctypes.CDLL(None).fflush(None)
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        pytree.setLevel(level)
        native_note = re.compile(r"^\[\w+\.(?:cpp|cc|h):\d+\] ")
        for name, buffer in captured.items():                 # pass everything else through
            kept = [line for line in buffer.getvalue().splitlines(keepends=True) if not native_note.match(line)]
            if kept:
                real[name].write("".join(kept))


def frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as ``(H, W)``, each a positive multiple of 32, or a ValueError that says how to fix it."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    for name, v in (("height", h), ("width", w)):
        if not is_whole(v) or v < MULTIPLE or v % MULTIPLE:
            fix = max(MULTIPLE, MULTIPLE * round(v / MULTIPLE)) if isinstance(v, (int, float)) else 256
            raise ValueError(f"{name} {v!r} is not a positive multiple of {MULTIPLE} (the model halves it "
                             f"five times): export at {fix} and pad or resize frames to it")
    return h, w


def example_input(model: nn.Module, size: int | tuple[int, int]) -> torch.Tensor:
    """A zero frame ``(1, model.in_channels, H, W)``: what ``torch.export`` traces with."""
    return torch.zeros(1, getattr(model, "in_channels", 3), *frame_size(size))


def with_upsampling(model: nn.Module, mode: str) -> nn.Module:
    """A copy of ``model`` whose decoder resizes with ``mode`` (``"bilinear"`` or ``"nearest"``), same weights."""
    import copy


    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode {mode!r}: use 'bilinear' or 'nearest'")
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, DecoderBlock) or isinstance(m, nn.Upsample):
            m.mode = mode
            if isinstance(m, nn.Upsample):
                m.align_corners = False if mode == "bilinear" else None
    return model.eval()


# --- real images: calibration and validation -------------------------------------------------


def cells_frames(split: str, n_images: int, frame: int, image_size: int = 128,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of the cells data ``(images, masks)``, each ``frame`` x ``frame``.

    When ``frame`` is a multiple of ``image_size``, each frame tiles k x k
    images of the split (k = frame / image_size), so a 256-pixel frame holds
    four 128-pixel validation images and the IoU covers the same pixels as the
    checkpoint's manifest; otherwise the images are generated at ``frame``.
    """
    k = frame // image_size if frame % image_size == 0 else 0
    if k == 0:
        ds = CellsDataset(split, n_images, frame, seed)
        return ds.images, ds.masks
    if n_images < k * k:
        raise ValueError(f"{n_images} images of {image_size} px cannot fill one {frame} px frame: "
                         f"use at least {k * k}")
    ds = CellsDataset(split, (n_images // (k * k)) * k * k, image_size, seed)

    def tile(t: torch.Tensor) -> torch.Tensor:               # (F*k*k, C, s, s) -> (F, C, k*s, k*s)
        F_, C = len(t) // (k * k), t.shape[1]
        t = t.reshape(F_, k, k, C, image_size, image_size).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(F_, C, frame, frame)
    return tile(ds.images), tile(ds.masks)


def photo_frames(n: int, size: int | tuple[int, int], split: str = "val") -> torch.Tensor:
    """``n`` RGB frames in [0, 1] cut from the course's bundled photos (``photos.load_photo``), for 3-channel models.

    ``split="val"``: the held-out photos (``photos.VAL_PHOTOS``), for parity
    checks; ``"train"``: the training photos, for int8 calibration, so the
    held-out photos stay unseen. Centre squares, a little more zoomed in on
    each pass over the photos, resized to ``size``.
    """
    from skimage.transform import resize


    if split not in ("val", "train"):
        raise ValueError(f"split={split!r}: use 'val' (held-out photos) or 'train'")
    h, w = frame_size(size)
    photos = [load_photo(name) for name in (VAL_PHOTOS if split == "val" else TRAIN_PHOTOS)]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        H, W = img.shape[:2]
        s = min(H, W) * (1.0 - 0.1 * (i // len(photos) % 5))            # zoom in a little each pass
        y, x = int((H - s) / 2), int((W - s) / 2)
        out.append(resize(img[y:y + int(s), x:x + int(s)], (h, w), anti_aliasing=True))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().contiguous()


def calibration_frames(model: nn.Module, size: int | tuple[int, int], n: int = 16,
                       seed: int = 0) -> torch.Tensor:
    """Real images to calibrate int8 with: the cells' unlabelled split (1 channel) or photos (3)."""
    c = getattr(model, "in_channels", 3)
    h, w = frame_size(size)
    if c == 1 and h == w:
        side = 128 if h % 128 == 0 else h
        return cells_frames("unlabelled", n * (h // side) ** 2, h, side, seed)[0]
    frames = photo_frames(n, (h, w), split="train")
    return frames[:, :1] if c == 1 else frames if c == 3 else frames[:, :1].repeat(1, c, 1, 1)


# --- ONNX and ONNX Runtime -------------------------------------------------------------------


def export_onnx(model: nn.Module, path: str | Path, size: int | tuple[int, int] = 256,
                dynamic: bool = False) -> Path:
    """``torch.onnx.export(dynamo=True, external_data=False)`` at ``ONNX_OPSET``: one self-contained file.

    ``dynamic=True`` lets height and width be any multiple of 32 (``32 * Dim``;
    a plain ``Dim`` fails on five stride-2 stages).
    """
    require("onnx"), require("onnxscript")
    x, path = example_input(model, size), Path(path)
    shapes = None
    if dynamic:
        from torch.export import Dim
        shapes = ({2: MULTIPLE * Dim("h32", min=1, max=128), 3: MULTIPLE * Dim("w32", min=1, max=128)},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=shapes, opset_version=ONNX_OPSET)
    return path


ONNX_OPSET = 18
"""The ONNX opset of every export. The dynamo exporter's default here is 20, and from opset 19 ONNX
Runtime runs ``AveragePool`` (the guided effect student's box filters) with a generic kernel: measured
on this course's CPU, a 7x7 box filter of a 4x128x128 map took 3.7 ms at opset 20 and 0.08 ms at 18,
and the whole guided student 35 ms against 11 (docs/export.md)."""


def quantize_onnx(src: str | Path, dst: str | Path, calibration: torch.Tensor) -> Path:
    """ONNX Runtime static int8: ``quant_pre_process`` then ``quantize_static`` (QDQ, per-channel weights)."""
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    name = OrtRunner(src).input_name
    frames = [{name: f[None].numpy()} for f in calibration]

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter(frames)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        q.quantize_static(str(pre), str(dst), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return dst


class OrtRunner:
    """An ONNX Runtime CPU session with ``threads`` threads; call it with a torch tensor or a numpy array."""

    def __init__(self, path: str | Path, threads: int = 1):

        self.path, self.threads = Path(path), threads
        self.session = ort_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        is_torch = isinstance(x, torch.Tensor)
        y = self.session.run(None, {self.input_name: x.numpy() if is_torch else x})[0]
        return torch.from_numpy(y) if is_torch else y


# --- ExecuTorch, XNNPACK -------------------------------------------------------------------


def quantize_pt2e(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """int8 by PT2E: export -> ``prepare_pt2e(XNNPACKQuantizer, per-channel)`` -> calibrate -> ``convert_pt2e``."""
    xq = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e")
    graph = torch.export.export(model.eval(), (calibration[:1],)).module()
    quantizer = xq.XNNPACKQuantizer().set_global(xq.get_symmetric_quantization_config(is_per_channel=True))
    prepared = pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for frame in calibration.split(1):        # observers record each activation's range
            prepared(frame)
    return pt2e.convert_pt2e(prepared)


def lower_xnnpack(model: nn.Module, x: torch.Tensor):
    """``torch.export`` at ``x``'s static shape, then ``to_edge_transform_and_lower`` to XNNPACK."""
    exir = require("executorch.exir")
    xnn = require("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (x,))
        return exir.to_edge_transform_and_lower(program, partitioner=[xnn.XnnpackPartitioner()])


def outside_delegate(edge) -> dict[str, int]:
    """Operators left outside the XNNPACK delegate, with counts: ``{}`` means all of the work is delegated.

    Casts of 0-d constants, which ExecuTorch leaves to its portable kernels,
    are not counted: they never touch a frame.
    """
    out: Counter = Counter()
    for node in edge.exported_program().graph_module.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem \
                or "call_delegate" in str(node.target):
            continue
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.numel() <= 1 \
                and all(a.op == "placeholder" for a in node.all_input_nodes):
            continue
        out[getattr(node.target, "__name__", str(node.target))] += 1
    return dict(out)


def delegated_pieces(edge) -> int:
    """How many separate subgraphs XNNPACK runs: 1 when nothing cuts the graph."""
    return sum("call_delegate" in str(n.target) for n in edge.exported_program().graph_module.graph.nodes)


def export_pte(model: nn.Module, path: str | Path, size: int | tuple[int, int] = 256,
               int8: bool = False, calibration: torch.Tensor | None = None) -> tuple[Path, dict[str, int], int]:
    """A static-shape ``.pte`` lowered to XNNPACK; returns ``(path, outside_delegate, delegated_pieces)``."""
    x, path = example_input(model, size), Path(path)
    if int8:
        calibration = calibration if calibration is not None else calibration_frames(model, size)
        model = quantize_pt2e(model, calibration)
    with native_quiet():
        edge = lower_xnnpack(model if int8 else model.eval(), x)
        report, pieces = outside_delegate(edge), delegated_pieces(edge)   # to_executorch rewrites the graph
        path.write_bytes(edge.to_executorch().buffer)
    return path, report, pieces


_LOADED: "weakref.WeakSet[PteRunner]" = weakref.WeakSet()


class PteRunner:
    """An ExecuTorch program's ``forward``, run on ``threads`` threads; call it with a tensor or an array.

    ExecuTorch has one threadpool per process, which XNNPACK captures when a
    program is loaded. Loading a runner with another thread count resets that
    pool; runners loaded before it are released first (calling one then raises
    a RuntimeError that says to load it again) instead of running on a freed pool.
    """

    def __init__(self, path: str | Path, threads: int | None = 1):
        runtime = require("executorch.runtime")
        from executorch.extension.pybindings import portable_lib

        self.path = Path(path)
        with native_quiet():
            if threads and portable_lib._threadpool_get_thread_count() != threads:
                for old in list(_LOADED):              # ExecuTorch uses every core by default
                    old.method = None
                portable_lib._unsafe_reset_threadpool(threads)
            self.threads = portable_lib._threadpool_get_thread_count()
            self.method = runtime.Runtime.get().load_program(self.path).load_method("forward")
        _LOADED.add(self)

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if self.method is None:
            raise RuntimeError(f"{self.path.name} was loaded for {self.threads} threads and ExecuTorch's "
                               f"threadpool was reset since: load it again with PteRunner(path, threads)")
        is_torch = isinstance(x, torch.Tensor)
        y = self.method.execute([(x if is_torch else torch.from_numpy(x)).contiguous()])[0].clone()
        return y if is_torch else y.numpy()


def load_runner(path: str | Path, threads: int = 1) -> OrtRunner | PteRunner:
    """``OrtRunner`` for ``.onnx``, ``PteRunner`` for ``.pte``."""
    suffix = Path(path).suffix
    if suffix not in (".onnx", ".pte"):
        raise ValueError(f"{path}: expected a .onnx or .pte file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no exported model at {path}: run export first")
    return OrtRunner(path, threads) if suffix == ".onnx" else PteRunner(path, threads)


def timed(path: str | Path, x: torch.Tensor) -> Callable[[int], Callable[[], object]]:
    """``threads -> (() -> output)`` for ``profile.measure_latency(extra=...)``: the artefact run on ``x``."""
    def make(threads: int):
        run = load_runner(path, threads)
        return lambda: run(x)
    return make


# --- one call: export, then check ----------------------------------------------------------


@dataclass
class Exported:
    """What ``export`` wrote: the file, its size, whether it stands alone, what XNNPACK left out."""
    path: Path
    format: str
    int8: bool
    size: tuple[int, int]
    bytes: int
    seconds: float
    single_file: bool
    outside_delegate: dict | None = None      # .pte only: operators XNNPACK left out, with counts
    delegated_pieces: int | None = None       # .pte only: subgraphs XNNPACK runs (1 = one piece)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"


def export(model: nn.Module, out: str | Path, fmt: str = "onnx", int8: bool = False,
           size: int | tuple[int, int] = 256, dynamic: bool = False,
           calibration: torch.Tensor | None = None) -> Exported:
    """Write ``model`` as ``fmt`` (``"onnx"`` or ``"pte"``), fp32 or int8, to ``out``.

    int8 calibrates on ``calibration`` frames (default: ``calibration_frames``,
    real course images). ``dynamic`` (ONNX only) accepts any multiple of 32.

    Example:
        >>> e = export(UNet(base=8, upsample="bilinear"), "unet.onnx", size=64)   # doctest: +SKIP
        >>> e.single_file, e.bytes > 0
        (True, True)
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"export takes an nn.Module, got {type(model).__name__}: load a checkpoint "
                        f"with mobileunet.load_checkpoint first")
    out = Path(out)
    if out.suffix != f".{fmt}":
        raise ValueError(f"{out}: a {fmt} export should be named *.{fmt}")
    if dynamic and min(frame_size(size)) < 2 * MULTIPLE:
        raise ValueError(f"dynamic=True needs an example frame of at least {2 * MULTIPLE} px (size={size}): "
                         f"torch.export fixes a dimension of one block of {MULTIPLE}; export from size=64 or more")
    if dynamic and fmt == "pte":
        raise ValueError("a .pte is lowered for one static shape (XNNPACK's bilinear resize needs it): "
                         "drop dynamic, or export ONNX")
    size = frame_size(size)
    model = model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = pieces = None
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as work:   # then one rename into place
        new = Path(work) / out.name
        if fmt == "onnx":
            if int8:
                calibration = calibration if calibration is not None else calibration_frames(model, size)
                quantize_onnx(export_onnx(model, Path(work) / "fp32.onnx", size, dynamic), new, calibration)
            else:
                export_onnx(model, new, size, dynamic)
        else:
            _, report, pieces = export_pte(model, new, size, int8, calibration)
        for side in Path(work).glob(out.name + "?*"):     # side files (model.onnx.data) first, the model last
            os.replace(side, out.parent / side.name)
        os.replace(new, out)
    siblings = [p for p in out.parent.glob(out.name + "*") if p != out]   # e.g. model.onnx.data
    return Exported(out, fmt, int8, size, out.stat().st_size, time.perf_counter() - start,
                    not siblings, report, pieces)


def _mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB over the images of two ``(B, C, H, W)`` batches in [0, 1] (``metrics.psnr``)."""
    return float(psnr_per_image(a.clamp(0, 1), b.clamp(0, 1)).mean())


@torch.no_grad()
def check_parity(model: nn.Module, run: Callable, images: torch.Tensor, int8: bool,
                 masks: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> dict:
    """Eager ``model`` against the exported ``run`` on the same ``images``, one frame at a time.

    Returns ``max abs diff`` and the task metric for both: IoU of the logits
    against ``masks`` (segmentation), else PSNR against ``targets`` (an
    effect; without targets, PSNR of the export against eager). ``ok`` applies
    the tolerance: fp32 within ``FP32_MAX_ABS``; int8 losing at most
    ``INT8_IOU_POINTS`` IoU points or ``INT8_PSNR_DB`` dB, or, without
    targets, at least ``INT8_EAGER_PSNR_DB`` dB from eager.
    """
    model = model.eval()
    ref = torch.cat([model(f) for f in images.split(1)])
    got = torch.cat([torch.as_tensor(run(f)) for f in images.split(1)])
    row = {"max abs diff": (ref - got).abs().max().item()}
    if masks is not None:
        e, x = iou(ref, masks, from_logits=True), iou(got, masks, from_logits=True)
        row.update(metric="IoU", eager=e, exported=x, change=100 * (x - e), unit="points")
        metric_ok = row["change"] >= -INT8_IOU_POINTS
    elif targets is not None:
        e, x = _mean_psnr(ref, targets), _mean_psnr(got, targets)
        row.update(metric="PSNR", eager=e, exported=x, change=x - e, unit="dB")
        metric_ok = row["change"] >= -INT8_PSNR_DB
    else:
        row.update(metric="PSNR vs eager", eager=math.inf, exported=_mean_psnr(got, ref), change=None, unit="dB")
        metric_ok = row["exported"] >= INT8_EAGER_PSNR_DB
    row["tolerance"] = (f"IoU -{INT8_IOU_POINTS:g} point" if masks is not None else
                        f"PSNR -{INT8_PSNR_DB:g} dB" if targets is not None else
                        f"PSNR vs eager >= {INT8_EAGER_PSNR_DB:g} dB") if int8 else f"max abs {FP32_MAX_ABS:g}"
    row["ok"] = metric_ok if int8 else row["max abs diff"] <= FP32_MAX_ABS
    return row
