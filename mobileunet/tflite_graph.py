"""Reading a ``.tflite`` file's graph: operators, shapes, options, constants and FLOPs (lesson 04).

Lesson 04's "Anatomy of a production model" opens MediaPipe's selfie
segmenter with this module. A ``.tflite`` file is a FlatBuffer (TFLite's
``schema.fbs``): a list of tensors (shape, type, the buffer that holds a
constant's bytes) and a list of operators, each naming its input and output
tensors and carrying its *options* (stride, padding, fused activation,
resize mode). The ``tflite`` package on PyPI is that schema compiled to
Python, so this module reads the file exactly as LiteRT does.

Why not LiteRT's interpreter (``get_tensor_details``, ``_get_ops_details``)?
It lists operators and shapes but not their options: it cannot say whether a
stride-2 conv pads TensorFlow's ``SAME`` way (the extra row at the bottom),
whether an activation is fused into a conv, or whether a bilinear resize uses
half-pixel centres, and a rebuild that guesses any of these is off by whole
pixels. Its ``_get_ops_details`` is a private method, too.

FLOPs are counted like ``profile.count_flops``: a multiply-add is 2 FLOPs, and
only convolutions count (activations, adds, multiplies, pools and resizes are
listed but left at 0).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INSTALL = 'pip install -e ".[mediapipe]" (or pip install tflite)'
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT", 6: "SIGMOID"}
CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D", "Convolution2DTransposeBias", "TRANSPOSE_CONV")
"""Operators that carry weights and FLOPs: standard, depthwise and transposed convolutions."""


@dataclass(frozen=True)
class Op:
    """One operator: its kind, tensors, NHWC shapes and the options a rebuild must honour."""

    index: int
    kind: str                              # CONV_2D, HARD_SWISH, ... or a custom op's name
    inputs: tuple[int, ...]                # tensor indices; -1 for an absent optional input
    outputs: tuple[int, ...]
    in_shape: tuple[int, ...]              # the first input's shape
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] | None = None  # (kh, kw) of a conv or pool
    stride: tuple[int, int] | None = None
    padding: str | None = None             # "SAME" or "VALID"
    fused: str | None = None               # activation fused into the op, e.g. "RELU6"
    half_pixel: bool | None = None         # RESIZE_BILINEAR's half_pixel_centers
    flops: int = 0


@dataclass
class TfliteGraph:
    """A ``.tflite`` file's first subgraph: ``ops`` in execution order, ``tensors``, ``constants``."""

    path: Path
    description: str
    ops: list[Op]
    tensors: list[dict]                              # {"name", "shape", "dtype"}
    constants: dict[int, np.ndarray] = field(repr=False)
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()

    @property
    def compute_ops(self) -> list[Op]:
        """The operators that compute: ``DEQUANTIZE`` (float16 weights -> float32 at load time) left out."""
        return [op for op in self.ops if op.kind != "DEQUANTIZE"]

    def constant(self, tensor: int) -> np.ndarray:
        """The float32 value of a constant tensor, followed through the ``DEQUANTIZE`` that widens it."""
        made_by = {o: op for op in self.ops for o in op.outputs}
        if tensor in made_by and made_by[tensor].kind == "DEQUANTIZE":
            tensor = made_by[tensor].inputs[0]
        name = self.tensors[tensor]["name"] if 0 <= tensor < len(self.tensors) else "?"
        if tensor not in self.constants:
            raise ValueError(f"tensor {tensor} ({name}) of {self.path.name} is computed, not a constant")
        value = self.constants[tensor]
        if value.dtype.kind != "f":                # int8/uint8 weights need their scale and zero point
            raise ValueError(f"tensor {tensor} ({name}) of {self.path.name} is {value.dtype.name}, not a float "
                             f"weight: an integer-quantised model, which this reader does not dequantise (it "
                             f"widens float16 only); give the float model, e.g. one fetched by bash course.sh models")
        return value.astype(np.float32)

    def conv_weights(self) -> list[tuple[Op, np.ndarray, np.ndarray | None]]:
        """``(op, weight, bias)`` of every convolution in execution order, in TFLite's layouts
        (conv and transposed conv OHWI, depthwise 1HWO)."""
        out = []
        for op in self.ops:
            if op.kind in CONVS:
                w_at, b_at = (1, 3) if op.kind == "TRANSPOSE_CONV" else (1, 2)   # TRANSPOSE_CONV: shape first
                bias = op.inputs[b_at] if len(op.inputs) > b_at and op.inputs[b_at] >= 0 else None
                out.append((op, self.constant(op.inputs[w_at]), None if bias is None else self.constant(bias)))
        return out

    def param_count(self) -> int:
        """Numbers the model carries: its float constants (weights and biases, not resize sizes)."""
        return sum(v.size for v in self.constants.values() if v.dtype.kind == "f")

    def flops(self) -> int:
        """FLOPs of one run (2 per multiply-add, convolutions only)."""
        return sum(op.flops for op in self.ops)


def _tflite():
    try:
        import tflite
    except ImportError as err:
        raise ImportError(f"reading a .tflite graph needs the tflite package: {INSTALL}") from err
    return tflite


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path={path!r}: give the .tflite file's path as a str or pathlib.Path")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing or not a file")
    return path


def read_tflite(path: str | os.PathLike) -> TfliteGraph:
    """Parse a ``.tflite`` file. ``ValueError`` when it is not a TFLite FlatBuffer.

    Example:
        >>> g = read_tflite("data/models/selfie_segmentation.tflite")      # doctest: +SKIP
        >>> len(g.compute_ops), g.flops()                                  # doctest: +SKIP
        (136, 118431488)
    """
    path = _check_path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path.name} is not a TFLite model (no 'TFL3' FlatBuffer identifier in its first "
                         f"8 bytes): give a .tflite file, e.g. one fetched by bash course.sh models")
    tfl = _tflite()
    try:
        return _parse(tfl, path, buf)
    except (struct.error, IndexError, KeyError, UnicodeDecodeError) as err:   # offsets past the end, bad indices
        raise ValueError(f"{path.name} is truncated or corrupt ({type(err).__name__}: {err}): fetch it again "
                         f"with bash course.sh models") from err


def _parse(tfl, path: Path, buf: bytes) -> TfliteGraph:
    model = tfl.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError(f"{path.name} has no subgraph: not a model LiteRT can run")
    g = model.Subgraphs(0)
    tensors, constants = _tensors(model, g)
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    kinds = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        kinds.append(custom.decode() if custom else names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    ops = [_op(tfl, i, g.Operators(i), kinds, tensors, path.name) for i in range(g.OperatorsLength())]
    description = (model.Description() or b"").decode(errors="replace")
    return TfliteGraph(path, description, ops, tensors, constants,
                       tuple(int(t) for t in g.InputsAsNumpy()), tuple(int(t) for t in g.OutputsAsNumpy()))


def _tensors(model, g) -> tuple[list[dict], dict[int, np.ndarray]]:
    tensors, constants = [], {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _DTYPES.get(t.Type())
        tensors.append({"name": t.Name().decode(), "shape": shape, "dtype": np.dtype(dtype).name if dtype else "?"})
        data = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() < model.BuffersLength() else 0
        if dtype is not None and not isinstance(data, int) and data.size:
            value = np.frombuffer(data.tobytes(), dtype=dtype)
            if value.size != int(np.prod(shape)):
                raise IndexError(f"tensor {i} holds {value.size} numbers for its shape {shape}")
            constants[i] = value.reshape(shape)
    return tensors, constants


def _options(tfl, op, kind: str, where: str) -> dict:
    """The options a rebuild needs, read from the op's options table (or a custom op's packed struct)."""
    table = {"CONV_2D": tfl.Conv2DOptions, "DEPTHWISE_CONV_2D": tfl.DepthwiseConv2DOptions,
             "AVERAGE_POOL_2D": tfl.Pool2DOptions, "MAX_POOL_2D": tfl.Pool2DOptions,
             "RESIZE_BILINEAR": tfl.ResizeBilinearOptions, "TRANSPOSE_CONV": tfl.TransposeConvOptions}.get(kind)
    if kind == "Convolution2DTransposeBias":          # MediaPipe's op: TfLiteTransposeConvParams as 3 int32
        padding, sw, sh = np.frombuffer(op.CustomOptionsAsNumpy().tobytes()[:12], np.int32)
        return {"padding": {1: "SAME", 2: "VALID"}.get(int(padding), "?"), "stride": (int(sh), int(sw))}
    if table is None or op.BuiltinOptions() is None:
        return {}
    o = table()
    o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    if kind == "RESIZE_BILINEAR":
        if o.AlignCorners():
            raise ValueError(f"{where} is a RESIZE_BILINEAR with align_corners=True, which this reader does not "
                             f"map to PyTorch (it expects half-pixel centres, F.interpolate(align_corners=False))")
        return {"half_pixel": bool(o.HalfPixelCenters())}
    out = {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW())}
    if hasattr(o, "FusedActivationFunction"):
        out["fused"] = _ACTIVATION.get(o.FusedActivationFunction(), "?")
    if kind.endswith("POOL_2D"):
        out["kernel"] = (o.FilterHeight(), o.FilterWidth())
    return out


def _op(tfl, index: int, op, kinds: list[str], tensors: list[dict], file: str = "the file") -> Op:
    kind = kinds[op.OpcodeIndex()]
    inputs = tuple(int(i) for i in op.InputsAsNumpy())
    outputs = tuple(int(i) for i in op.OutputsAsNumpy())
    shape = lambda i: tensors[i]["shape"] if i >= 0 else ()
    data_in = inputs[2] if kind == "TRANSPOSE_CONV" else inputs[0]
    opts = _options(tfl, op, kind, f"op {index} of {file}")
    if kind in CONVS:
        w = shape(inputs[1])                                # OHWI or 1HWO: kh, kw in the middle
        opts["kernel"] = (w[1], w[2])
    op = Op(index, kind, inputs, outputs, shape(data_in), shape(outputs[0]), **opts)
    return Op(**{**op.__dict__, "flops": conv_flops(op)})


def conv_flops(op: Op) -> int:
    """2 x multiply-adds of a convolution (0 for any other op), from its NHWC shapes and kernel."""
    if op.kind not in CONVS:
        return 0
    kh, kw = op.kernel
    if op.kind == "DEPTHWISE_CONV_2D":
        _, h, w, c = op.out_shape
        return 2 * h * w * c * kh * kw
    if op.kind == "CONV_2D":
        _, h, w, c = op.out_shape
        return 2 * h * w * c * kh * kw * op.in_shape[-1]
    _, h, w, c_in = op.in_shape                           # transposed: every input pixel meets the kernel once
    return 2 * h * w * c_in * kh * kw * op.out_shape[-1]


def op_counts(graph: TfliteGraph) -> list[dict]:
    """How many of each operator the graph runs, with their FLOPs: ``[{"op", "count", "MFLOPs"}]``."""
    rows: dict[str, dict] = {}
    for op in graph.ops:
        r = rows.setdefault(op.kind, {"op": op.kind, "count": 0, "MFLOPs": 0.0})
        r["count"] += 1
        r["MFLOPs"] += op.flops / 1e6
    return sorted(rows.values(), key=lambda r: (-r["MFLOPs"], -r["count"]))


def by_resolution(graph: TfliteGraph) -> list[dict]:
    """The compute ops grouped by the side of the map they write (256, 128, ... 1): how many, their channel
    widths, the convolutions' MFLOPs and their % of the total, and the MB of float32 activations the ops
    write (what memory traffic they cause). Side 1 collects the ops that write a 1x1 map: global pools and
    the 1x1 convs and sigmoids of the gates computed from them."""
    groups: dict[int, dict] = {}
    for op in graph.compute_ops:
        side = op.out_shape[1] if len(op.out_shape) == 4 else 1
        g = groups.setdefault(side, {"map side": side, "ops": 0, "convs": 0, "widths": set(), "MFLOPs": 0.0,
                                     "activations MB": 0.0})
        g["ops"] += 1
        g["convs"] += op.kind in CONVS
        g["widths"].add(op.out_shape[-1])
        g["MFLOPs"] += op.flops / 1e6
        g["activations MB"] += 4 * int(np.prod(op.out_shape)) / 1e6
    total = sum(g["MFLOPs"] for g in groups.values())
    rows = sorted(groups.values(), key=lambda g: -g["map side"])
    for g in rows:
        g["widths"] = ", ".join(map(str, sorted(g["widths"])))
        g["FLOPs %"] = 100 * g["MFLOPs"] / total
    return rows


def op_table(graph: TfliteGraph) -> list[dict]:
    """One row per compute op: index, kind, output shape, kernel, stride, padding, fused activation, MFLOPs."""
    return [{"#": op.index, "op": op.kind, "out (H, W, C)": op.out_shape[1:], "in C": op.in_shape[-1] if op.in_shape
             else "", "kernel": "x".join(map(str, op.kernel)) if op.kernel else "",
             "stride": op.stride[0] if op.stride else "", "padding": op.padding or "", "fused": op.fused or "",
             "MFLOPs": op.flops / 1e6} for op in graph.compute_ops]
