"""What a model costs: parameters, shapes, receptive field, FLOPs, memory, latency.

Lesson 01 traces the UNet's shapes with ``trace_shapes`` and measures its
receptive field with ``receptive_field``. Lesson 03 counts FLOPs
(``count_flops``), times layers (``measure_latency``) and compares what they
achieve with the CPU's measured peak (``peak_gflops``); lesson 04 and
``benchmarks/`` do the same for whole models.
"""
from __future__ import annotations

import contextlib
import copy
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .tables import format_cell, format_table


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def trace_shapes(model: nn.Module, x: torch.Tensor, depth: int = 1) -> list[dict]:
    """Run ``x`` through ``model`` and record each submodule's output shape.

    ``depth`` picks how deep in the module tree to look: 1 lists the model's
    direct children (``inc``, ``downs.0`` ... ``outc``). Returns rows of
    ``{"layer", "type", "out_shape", "params"}`` in call order.
    """
    rows, hooks = [], []
    targets = list(_modules_at(model, depth))
    for name, mod in targets:
        def hook(m, inp, out, name=name):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "?"
            rows.append({"layer": name, "type": type(m).__name__, "out_shape": shape,
                         "params": count_params(m)})
        hooks.append(mod.register_forward_hook(hook))
    _hooked_forward(model, x, hooks)
    return rows


def trace_u(model: nn.Module, input_shape: Sequence[int]) -> list[dict]:
    """The U's feature maps in the order data flows: rows of ``{"layer", "out_shape", "side"}``.

    ``side`` is ``"enc"``, ``"dec"`` or ``"out"``. For a model with an
    ``encoder`` (returning its skips) and a ``decoder`` of ``blocks``, such as
    ``MobileUNet``, the rows are the encoder's skips, each decoder stage and the
    output; for the UNet they are its blocks (``trace_shapes``). What
    ``plotting.draw_unet`` draws.
    """
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if encoder is None or not hasattr(decoder, "blocks"):      # the UNet of lessons 01-02
        rows = [r for r in trace_shapes(model, torch.zeros(input_shape)) if r["layer"] != "outc"]
        return [{**r, "side": "dec" if r["layer"].startswith("ups") else "enc"} for r in rows]
    rows: list[dict] = []
    hooks = [encoder.register_forward_hook(lambda m, i, feats: rows.extend(
        {"layer": f"encoder {k}", "out_shape": tuple(f.shape), "side": "enc"} for k, f in enumerate(feats)))]
    for k, block in enumerate(decoder.blocks):
        hooks.append(block.register_forward_hook(lambda m, i, y, k=k: rows.append(
            {"layer": f"decoder {k}", "out_shape": tuple(y.shape), "side": "dec"})))
    out = _hooked_forward(model, torch.zeros(input_shape), hooks)
    return rows + [{"layer": "output", "out_shape": tuple(out.shape), "side": "out"}]


def _modules_at(module: nn.Module, depth: int, prefix: str = ""):
    """Submodules ``depth`` levels down; a ModuleList is not a level of its own,
    and a leaf above that depth stands for itself."""
    for name, child in module.named_children():
        full = prefix + name
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _modules_at(child, depth, full + ".")
        elif depth == 1 or not any(True for _ in child.children()):
            yield full, child
        else:
            yield from _modules_at(child, depth - 1, full + ".")


def receptive_field(model: nn.Module, in_channels: int, size: int = 256) -> int:
    """Measured receptive field: how wide a patch of input one output pixel sees.

    Backpropagates from the centre output pixel to the input and measures the
    extent of the non-zero gradient. Needs ``size`` larger than the field
    itself (else the answer is clipped at ``size``). BatchNorm runs in eval mode
    so the batch does not mix pixels.
    """
    x = torch.randn(1, in_channels, size, size, requires_grad=True)
    with eval_mode(model):
        out = model(x)
        c = size // 2
        out[0, 0, c, c].backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(seen.any(1)).flatten()
    return int(rows.max() - rows.min() + 1)


# --- cost: FLOPs, activation memory ------------------------------------------------------


def count_flops(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass of ``model`` on ``x``, counted by torch's ``FlopCounterMode``.

    ``x`` is the input, or a tuple of inputs for a module that takes several
    (a decoder block takes ``(x, skip)``).

    A multiply-add counts as 2 FLOPs. Only matmuls and convolutions are
    counted (BatchNorm, activations, resizes and adds are left out: they are
    a few percent of the arithmetic, though not always of the time).
    Runs in eval mode without gradients.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*x) if isinstance(x, tuple) else model(x)
    return int(counter.get_total_flops())


def flops_by_layer_type(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs split into ``conv kxk``, ``depthwise kxk``, ``conv 1x1`` and ``linear``.

    Counted with forward hooks on the leaf ``Conv2d``/``Linear`` modules using
    the same formula as ``FlopCounterMode`` (2 x multiply-adds).
    """
    out: dict[str, int] = {}
    hooks = []

    def hook(m, inp, y):
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = y.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            macs = y.numel() * m.in_features
        key = layer_type(m)
        out[key] = out.get(key, 0) + 2 * macs

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    _hooked_forward(model, x, hooks)
    return out


def layer_type(m: nn.Module) -> str:
    """``"depthwise 3x3"``, ``"conv 1x1"``, ``"conv 3x3"``, ``"linear"`` or the class name."""
    if isinstance(m, nn.Conv2d):
        k = "x".join(map(str, m.kernel_size))
        if m.groups > 1 and m.groups == m.in_channels:
            return f"depthwise {k}"
        return f"conv {k}"
    return "linear" if isinstance(m, nn.Linear) else type(m).__name__


def activation_memory(model: nn.Module, x: torch.Tensor) -> dict:
    """Bytes of the feature maps a forward pass makes, leaf module by leaf module.

    ``total_mb`` sums every leaf module's output (roughly what training keeps
    for the backward pass); ``largest_mb`` is the biggest single map and
    ``largest_layer`` its module, usually a full-resolution one.
    """
    sizes: list[tuple[str, int]] = []
    hooks = []
    for name, m in model.named_modules():
        if not any(True for _ in m.children()):
            def hook(mod, inp, y, name=name):
                if isinstance(y, torch.Tensor):
                    sizes.append((name, y.numel() * y.element_size()))
            hooks.append(m.register_forward_hook(hook))
    _hooked_forward(model, x, hooks)
    name, largest = max(sizes, key=lambda s: s[1]) if sizes else ("", 0)
    return {"total_mb": sum(s for _, s in sizes) / 2**20, "largest_mb": largest / 2**20,
            "largest_layer": name}


class eval_mode:
    """``with eval_mode(model):`` the model in eval mode inside, its own mode restored after (even on an error).

    Example:
        >>> m = nn.BatchNorm2d(2).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was)
        return False


def _hooked_forward(model: nn.Module, x: torch.Tensor, hooks: list) -> torch.Tensor:
    """One forward pass in eval mode without gradients; the forward ``hooks`` are removed after, whatever happens."""
    try:
        with eval_mode(model), torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


# --- latency -------------------------------------------------------------------------------


@dataclass
class Table:
    """Rows of measurements (one dict per row) that print as markdown and plot easily."""

    rows: list[dict] = field(default_factory=list)

    def column(self, name: str) -> list:
        return [r.get(name) for r in self.rows]

    def where(self, **match) -> "Table":
        """The rows whose fields equal ``match``, e.g. ``table.where(runtime="onnxruntime")``."""
        return Table([r for r in self.rows if all(r.get(k) == v for k, v in match.items())])

    def to_markdown(self, columns: Sequence[str] | None = None) -> str:
        """An aligned markdown table; floats to 3 significant digits, big ints with commas."""

        columns = list(columns or (self.rows[0].keys() if self.rows else []))
        return format_table([{c: _fmt(r.get(c, "")) for c in columns} for r in self.rows], columns)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _fmt(v) -> str:
    """A latency table's cell: 3 significant digits below 100, whole numbers with separators above."""
    return format_cell(v, lambda x: ".3g" if abs(x) < 100 else ",.0f", commas_from=0)


RUNTIMES = ("eager", "eager-cl", "onnxruntime")
"""``eager``: torch NCHW; ``eager-cl``: torch channels_last; ``onnxruntime``: ORT CPU, fp32."""


def measure_latency(models: dict[str, nn.Module], input_shape: Sequence[int],
                    threads: Sequence[int] = (1,), runtimes: Sequence[str] = ("eager",),
                    warmup: int = 3, repeats: int = 15, seed: int = 0,
                    max_seconds: float | None = None, extra: dict | None = None,
                    example: torch.Tensor | None = None) -> Table:
    """Median wall time of one forward pass, models interleaved round-robin.

    Every (model, runtime) pair runs once per round, ``repeats`` rounds after
    ``warmup`` calls each, so a burst of load from another process hits all
    models alike instead of one. Eager torch runs under ``torch.no_grad`` with
    ``torch.set_num_threads``; ONNX Runtime gets a session per thread count
    (the model is exported once per input shape).

    ``max_seconds`` caps each thread count's timed rounds: after at least 3
    rounds, no new round starts once that much time has gone (a busy machine
    can make a big model very slow). ``runs`` in each row says how many ran.

    Returns a ``Table`` with one row per (model, runtime, threads): ``model``,
    ``runtime``, ``threads``, ``input``, ``median_ms``, ``iqr_ms`` (spread of
    the middle half), ``min_ms`` and ``runs``.

    ``extra`` adds runners timed in the same rounds: ``{(model, runtime): make}``
    where ``make(threads)`` returns a no-argument callable, e.g. an exported
    artefact from ``export.timed`` (lesson 07).

    The models run on seeded Gaussian noise of ``input_shape``, or on
    ``example`` (a tensor of that shape) when given. A model whose time depends
    on its input should get a real one: the effect student's branches
    (``torch.where``) are slower on noise than on a photo, and the whole
    student with them (``benchmarks/effect_speed.py``).
    """
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise ValueError(f"runtime {rt!r} is not one of {RUNTIMES}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats}, warmup={warmup}: need repeats >= 1 and warmup >= 0")
    if example is None:
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    elif not isinstance(example, torch.Tensor) or tuple(example.shape) != tuple(input_shape):
        raise ValueError(f"example must be a tensor of input_shape {tuple(input_shape)}, got "
                         f"{tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__}")
    else:
        x = example.detach().float().contiguous()
    onnx = {name: onnx_bytes(m, x) for name, m in models.items()} if "onnxruntime" in runtimes else {}
    shape = "x".join(map(str, input_shape))
    table = Table()
    old_threads = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            runners = {(name, rt): _runner(m, x, rt, n, onnx.get(name))
                       for name, m in models.items() for rt in runtimes}
            runners.update({key: make(n) for key, make in (extra or {}).items()})
            for fn in runners.values():
                for _ in range(warmup):
                    fn()
            times: dict = {key: [] for key in runners}
            start = time.perf_counter()
            for round_ in range(repeats):
                if max_seconds is not None and round_ >= 3 and time.perf_counter() - start > max_seconds:
                    break
                for key, fn in runners.items():
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(1e3 * (time.perf_counter() - t0))
            for (name, rt), ts in times.items():
                q1, med, q3 = np.percentile(ts, [25, 50, 75])
                table.rows.append({"model": name, "runtime": rt, "threads": n, "input": shape,
                                   "median_ms": float(med), "iqr_ms": float(q3 - q1),
                                   "min_ms": float(min(ts)), "runs": len(ts)})
    finally:
        torch.set_num_threads(old_threads)
    return table


def _runner(model: nn.Module, x: torch.Tensor, runtime: str, threads: int, onnx_model: bytes | None):
    if runtime == "onnxruntime":
        session = ort_session(onnx_model, threads)
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)
    model = model.eval()
    if runtime == "eager-cl":
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.no_grad():
            return model(x)
    return run


EXPORTERS = ("torchscript", "dynamo")


def onnx_bytes(model: nn.Module, x: torch.Tensor, exporter: str = "torchscript") -> bytes:
    """The model in eval mode as ONNX bytes, weights inline, for static input shape ``x.shape``.

    ``exporter="torchscript"`` is torch's tracing exporter: measured here, it
    exports a MobileUNet 3-4x faster than the ``torch.export``-based
    ``"dynamo"`` exporter and ONNX Runtime runs both graphs equally fast, so
    latency tables use it. It is deprecated; where it is gone, the dynamo one
    is used instead. Lesson 07 exports for deployment with the dynamo exporter.
    """
    import warnings

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r} is not one of {EXPORTERS}")
    with warnings.catch_warnings(), eval_mode(model), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            buffer = io.BytesIO()
            try:
                torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=18)
                return buffer.getvalue()
            except (TypeError, RuntimeError, AttributeError):   # no TorchScript exporter any more
                pass
        program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=18)   # export.ONNX_OPSET
        return program.model_proto.SerializeToString()


def ort_session(onnx_model: bytes | str | Path, threads: int = 1, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and full graph optimisation.

    With ``profile_prefix`` the session records ONNX Runtime's profile of every run
    (``session.end_profiling()`` writes it to a file starting so; ``ort_op_times`` reads it).
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("ONNX Runtime is missing: pip install 'mobileunet[export]' "
                          "(or onnxruntime)") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    src = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def ort_op_times(onnx_model: bytes | str | Path, x: torch.Tensor, runs: int = 20, threads: int = 1) -> list[dict]:
    """Where ONNX Runtime spends a run: per operator type, its nodes and their kernel time.

    ``runs`` profiled runs of ``onnx_model`` on ``x`` (ONNX Runtime's own
    profiler, ``SessionOptions.enable_profiling``, on the optimised graph);
    each node's time is its median over the runs, which drops the first,
    cold one. Rows ``{"op", "nodes", "ms"}``, slowest first; the kernel times
    add up to less than a timed run, which also pays for moving between nodes.
    """
    import json
    import statistics
    import tempfile

    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ValueError(f"runs={runs!r}: give a positive int, e.g. 20")
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(onnx_model, threads, profile_prefix=str(Path(tmp) / "ort"))
        feed = {session.get_inputs()[0].name: x.detach().float().numpy()}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault((e["args"]["op_name"], e["name"]), []).append(e["dur"] / 1e3)
    by_op: dict = {}
    for (op, _), ms in per_node.items():
        nodes, total = by_op.get(op, (0, 0.0))
        by_op[op] = (nodes + 1, total + statistics.median(ms))
    return [{"op": op, "nodes": n, "ms": ms} for op, (n, ms) in sorted(by_op.items(), key=lambda kv: -kv[1][1])]


def peak_gflops(threads: int = 1, repeats: int = 10) -> dict[str, float]:
    """Measured fp32 GFLOP/s of the kernels that come closest to the CPU's peak.

    ``matmul``: a 1024^3 sgemm; ``conv3x3``: a dense 3x3 conv, 128 -> 128
    channels on 64x64, in eager torch (oneDNN); ``conv3x3_ort``: the same conv
    in ONNX Runtime, when it is installed. ``peak`` is the largest: the
    yardstick for "achieved GFLOP/s as a share of peak". Best of ``repeats``
    runs; on a busy machine every number comes out lower.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    conv_flops = 2 * 9 * 128 * 128 * 64 * 64
    try:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        conv = nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
        x = torch.randn(1, 128, 64, 64)
        out = {"matmul": 2 * 1024**3 / _best(lambda: a @ b, repeats),
               "conv3x3": conv_flops / _best(lambda: conv(x), repeats)}
        try:
            session = ort_session(onnx_bytes(conv, x), threads)
        except ImportError:
            session = None
        if session is not None:
            feed = {session.get_inputs()[0].name: x.numpy()}
            out["conv3x3_ort"] = conv_flops / _best(lambda: session.run(None, feed), repeats)
    finally:
        torch.set_num_threads(old)
    out = {k: v / 1e9 for k, v in out.items()}
    out["peak"] = max(out.values())
    return out


def _best(fn, repeats: int) -> float:
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return best


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory instead of returning it to the OS.

    Eager torch frees and re-allocates its large activations on every call;
    by default glibc hands big blocks back to the kernel (``mmap``/``munmap``)
    and page-faults them in again, which can double an eager latency. This
    turns that off for the whole process (no effect on ONNX Runtime, which
    plans its own memory). Returns False where it cannot (not glibc). Called
    by the benchmark, never on import.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def with_throughput(table: Table, flops: dict[str, int], peak: float | dict[int, float]) -> Table:
    """``table`` (from ``measure_latency``) with each row's GFLOPs, achieved GFLOP/s and % of peak.

    ``flops`` maps each model name to its FLOPs (``count_flops``); ``peak`` is
    ``peak_gflops(n)["peak"]``, or a dict of it per thread count.
    """
    rows = []
    for r in table.rows:
        p = peak[r["threads"]] if isinstance(peak, dict) else peak
        achieved = flops[r["model"]] / 1e9 / (r["median_ms"] / 1e3)
        rows.append({**r, "gflops": flops[r["model"]] / 1e9, "gflop_per_s": achieved,
                     "pct_of_peak": 100 * achieved / p})
    return Table(rows)
