"""The model benchmark: the student beside its teacher and peers, measured in one run.

``python -m mobileunet bench`` (or ``python benchmarks/bench_models.py``)
measures every model at each input size, batch 1, fp32, at each thread count,
in eager torch and ONNX Runtime, models interleaved round-robin (see
``profile.measure_latency``). The default student also runs exported
(``export.py``, lesson 07): ExecuTorch/XNNPACK fp32 and int8 and ONNX Runtime
int8, in the same rounds; lowering it costs tens of seconds per size. Each
row carries parameters, FLOPs, the median
latency and the achieved GFLOP/s, also as a share of this machine's measured
peak. Results go to ``benchmarks/results/`` as JSON, a markdown table and a
plot, with the machine described beside them.

Nothing is downloaded: every model has random weights, which do not change
the cost of a forward pass.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import export as ex, peers
from .models import default_student, mobile_unet_v2, mobile_unet_v3_small, unet_teacher
from .profile import (Table, count_flops, count_params, keep_freed_memory, measure_latency,
                      peak_gflops, with_throughput)


STUDENT = "default student (V3-Small w1.0)"
EXPORTED = ("executorch", "executorch-int8", "onnxruntime-int8")
"""The student's exported runtimes: ExecuTorch XNNPACK fp32 and int8 (PT2E), ONNX Runtime int8 (QDQ)."""


def _smp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("segmentation_models_pytorch") is not None


def candidates(quick: bool = False) -> dict[str, Callable[..., nn.Module]]:
    """Name -> builder(in_channels=, out_channels=) of every model the benchmark runs."""
    models: dict[str, Callable[..., nn.Module]] = {STUDENT: default_student}
    if not quick:
        models.update({f"MobileUNet-V3-Small w{w}": (lambda w=w, **kw: mobile_unet_v3_small(w, **kw))
                       for w in (0.5, 0.75)})
        models["MobileUNet-V2 w0.5"] = lambda **kw: mobile_unet_v2(0.5, **kw)
    models["UNet teacher (base 32)"] = unet_teacher
    models["LRASPP-MobileNetV3-L"] = peers.lraspp_mobilenet_v3
    if not quick:
        models["DeepLabV3-MobileNetV3-L"] = peers.deeplabv3_mobilenet_v3
    if _smp_available():
        models["smp Unet-MobileNetV2"] = peers.smp_unet_mobilenet_v2
    return models


@dataclass
class BenchConfig:
    """What one benchmark run measures."""
    sizes: tuple[int, ...] = (256, 512)
    threads: tuple[int, ...] = (1, 2)
    runtimes: tuple[str, ...] = ("eager", "onnxruntime")
    exported: tuple[str, ...] = EXPORTED     # the student's exported runtimes; () skips them
    warmup: int = 3
    repeats: int = 12
    max_seconds: float = 90.0          # per size and thread count: fewer rounds on a slow machine
    quick: bool = False
    in_channels: int = 3
    out_dir: str = "benchmarks/results"
    name: str = "models"


def quick_config() -> BenchConfig:
    """One size, fewer models and repeats: a one-minute look."""
    return BenchConfig(sizes=(256,), threads=(1, 2), warmup=2, repeats=6, quick=True, name="models_quick")


def machine_info() -> dict:
    """What the numbers depend on: CPU model, cores, threads, library versions, load."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx2", "fma",
                        "neon", "asimd", "asimddp") if f in flags]
    info = {"cpu": cpu, "cpu_simd": simd, "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    for mod in ("torchvision", "onnxruntime", "onnx", "segmentation_models_pytorch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    if hasattr(os, "getloadavg"):
        info["load_avg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def run_bench(cfg: BenchConfig) -> dict:
    """Measure every candidate at every size; returns ``{"machine", "config", "peak", "rows"}``."""
    start = time.perf_counter()
    machine = machine_info()
    machine["malloc_keeps_freed_memory"] = keep_freed_memory()
    peak = {n: peak_gflops(n) for n in cfg.threads}
    builders = candidates(cfg.quick)
    rows: list[dict] = []
    for size in cfg.sizes:
        torch.manual_seed(0)
        models = {name: build(in_channels=cfg.in_channels, out_channels=1).eval()
                  for name, build in builders.items()}
        x = torch.zeros(1, cfg.in_channels, size, size)
        cost = {name: (count_params(m), count_flops(m, x)) for name, m in models.items()}
        print(f"[bench] {size}x{size}: {len(models)} models x {cfg.runtimes} x threads {cfg.threads}",
              flush=True)
        extra = exported_runners(models[STUDENT], size, cfg.exported, machine)
        table = measure_latency(models, tuple(x.shape), cfg.threads, cfg.runtimes,
                                cfg.warmup, cfg.repeats, max_seconds=cfg.max_seconds, extra=extra)
        table = with_throughput(table, {k: f for k, (_, f) in cost.items()},
                                {n: p["peak"] for n, p in peak.items()})
        rows += [{**r, "params": cost[r["model"]][0]} for r in table.rows]
    if hasattr(os, "getloadavg"):
        machine["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    machine["bench_seconds"] = round(time.perf_counter() - start, 1)
    return {"machine": machine, "config": asdict(cfg), "peak_gflops": peak, "rows": rows}


def exported_runners(model: nn.Module, size: int, runtimes: tuple[str, ...], machine: dict) -> dict:
    """``{(STUDENT, runtime): make(threads)}`` for ``measure_latency(extra=...)``: the student exported
    at ``size`` (int8 calibrated on photos); ``{}`` and a note in ``machine`` when export is unavailable."""
    import tempfile


    if not runtimes:
        return {}
    spec = {"executorch": ("pte", False), "executorch-int8": ("pte", True), "onnxruntime-int8": ("onnx", True)}
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    x = torch.rand(1, model.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    out = {}
    try:
        calibration = ex.calibration_frames(model, size, n=8)
        for rt in runtimes:
            fmt, int8 = spec[rt]
            e = ex.export(model, folder / f"{rt}-{size}.{fmt}", fmt, int8=int8, size=size, calibration=calibration)
            machine.setdefault("export_seconds", {})[f"{rt} {size}"] = round(e.seconds, 1)
            out[(STUDENT, rt)] = ex.timed(e.path, x)
    except ImportError as err:
        machine["exported_skipped"] = str(err)
        print(f"[bench] exported runtimes skipped: {err}", flush=True)
        return {}
    return out


def summary_table(result: dict, size: int = 256) -> Table:
    """One row per model: params, GFLOPs and the median ms of each runtime and thread count."""
    out: dict[str, dict] = {}
    for r in result["rows"]:
        if r["input"].endswith(f"x{size}x{size}"):
            row = out.setdefault(r["model"], {"model": r["model"], "params (M)": r["params"] / 1e6,
                                              "GFLOPs": r["gflops"]})
            row[f"{_rt(r['runtime'])} {r['threads']}t ms"] = r["median_ms"]
    return Table(list(out.values()))


def _rt(runtime: str) -> str:
    return {"onnxruntime": "ORT", "onnxruntime-int8": "ORT int8", "executorch": "ET fp32",
            "executorch-int8": "ET int8"}.get(runtime, runtime)


def full_table(result: dict) -> Table:
    """Every measurement: model, input, runtime, threads, ms, GFLOP/s and share of peak."""
    return Table([{"model": r["model"], "input": r["input"].split("x", 2)[-1], "runtime": _rt(r["runtime"]),
                   "threads": r["threads"], "median ms": r["median_ms"], "IQR ms": r["iqr_ms"], "runs": r["runs"],
                   "GFLOP/s": r["gflop_per_s"], "% of peak": r["pct_of_peak"]}
                  for r in result["rows"]])


def machine_line(result: dict) -> str:
    m = result["machine"]
    peak = ", ".join(f"{n} thread{'s' if int(n) > 1 else ''}: {p['peak']:.0f}"
                     for n, p in result["peak_gflops"].items())
    simd = "/".join(m.get("cpu_simd", [])) or "?"
    return (f"{m['cpu']} ({simd}), {m['cores']} cores; torch {m['torch']}, onnxruntime {m.get('onnxruntime', '-')}, "
            f"torchvision {m.get('torchvision', '-')}; measured fp32 peak GFLOP/s ({peak}); "
            f"load average {m.get('load_avg_start')} -> {m.get('load_avg_end')}; {m['date']}; "
            f"{m['bench_seconds']:.0f} s")


def student_ratios(result: dict, size: int = 256, runtime: str = "onnxruntime") -> list[dict]:
    """The default student against the teacher and smp's Unet: how many times fewer/faster."""
    def pick(model, threads):
        for r in result["rows"]:
            if r["model"] == model and r["runtime"] == runtime and r["threads"] == threads \
                    and r["input"].endswith(f"x{size}x{size}"):
                return r
    out = []
    for threads in result["config"]["threads"]:
        s = pick(STUDENT, threads)
        for other in ("UNet teacher (base 32)", "smp Unet-MobileNetV2"):
            o = pick(other, threads)
            if s and o:
                out.append({"vs": other, "threads": threads, "params x": o["params"] / s["params"],
                            "FLOPs x": o["gflops"] / s["gflops"],
                            "latency x": o["median_ms"] / s["median_ms"]})
    return out


def export_ratios(result: dict) -> list[dict]:
    """The student's int8 against fp32 in each runtime, per size and thread count (lesson 07's target:
    ExecuTorch int8 at least 1.8x as fast as ExecuTorch fp32 at 1 thread)."""
    ms = {(r["input"].split("x", 2)[-1], r["threads"], r["runtime"]): r["median_ms"]
          for r in result["rows"] if r["model"] == STUDENT}
    out = []
    for (size, threads, rt), t in ms.items():
        fp32 = {"executorch-int8": "executorch", "onnxruntime-int8": "onnxruntime"}.get(rt)
        if fp32 and (size, threads, fp32) in ms:
            out.append({"input": size, "threads": threads, "runtime": _rt(fp32), "fp32 ms": ms[size, threads, fp32],
                        "int8 ms": t, "int8 speed-up x": ms[size, threads, fp32] / t})
    return out


def write_results(result: dict, out_dir: str | Path, name: str) -> list[Path]:
    """``NAME.json``, ``NAME.md`` (summary per size, then every row) and ``NAME.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    parts = [f"# Model benchmark\n\nMachine: {machine_line(result)}\n\n"
             f"Batch 1, fp32, random weights, median of up to {result['config']['repeats']} interleaved "
             f"runs (column `runs` below). `t` = threads; ORT = ONNX Runtime (CPU provider); "
             f"eager = PyTorch, NCHW; ET = ExecuTorch with XNNPACK (default student only; int8 = PT2E, "
             f"ORT int8 = static QDQ, both calibrated on photos).\n"]
    for size in result["config"]["sizes"]:
        parts.append(f"\n## {size}x{size}\n\n{summary_table(result, size).to_markdown()}\n")
    ratios = student_ratios(result)
    if ratios:
        parts.append(f"\n## The default student, 256x256, ONNX Runtime\n\n{Table(ratios).to_markdown()}\n")
    quant = export_ratios(result)
    if quant:
        parts.append(f"\n## The default student exported: int8 against fp32\n\n{Table(quant).to_markdown()}\n")
    parts.append(f"\n## Every measurement\n\n{full_table(result).to_markdown()}\n")
    paths[1].write_text("".join(parts))
    fig = plot_results(result)
    fig.savefig(paths[2], dpi=90)
    return paths


def plot_results(result: dict):
    """Latency against FLOPs, one panel per input size: FLOPs do not predict latency."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["config"]["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4), squeeze=False)
    style = {"onnxruntime": "o", "eager": "s", "executorch": "^", "executorch-int8": "v",
             "onnxruntime-int8": "D"}
    threads = min(result["config"]["threads"])    # one thread: the least disturbed by other load
    for ax, size in zip(axes[0], sizes):
        for rt, marker in style.items():
            rows = [r for r in result["rows"] if r["runtime"] == rt and r["threads"] == threads
                    and r["input"].endswith(f"x{size}x{size}")]
            if not rows:
                continue
            ax.scatter([r["gflops"] for r in rows], [r["median_ms"] for r in rows], marker=marker,
                       label=f"{_rt(rt)}, {threads} thread{'s' if threads > 1 else ''}")
            if rt == "onnxruntime":
                for r in rows:
                    ax.annotate(r["model"], (r["gflops"], r["median_ms"]), fontsize=7,
                                xytext=(4, 2), textcoords="offset points")
        ax.set(xscale="log", yscale="log", xlabel="GFLOPs", ylabel="median ms",
               title=f"{size}x{size}, batch 1, fp32")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
