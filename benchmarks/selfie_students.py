"""MediaPipe's selfie segmenter, read, rebuilt, and trained on the cells beside the course's students.

    python benchmarks/selfie_students.py        # about 12 minutes on 2 busy cores: 4 models x 3 seeds, 3 passes
    python benchmarks/selfie_students.py --steps 30 --seeds 0 --rounds 10 --passes 1    # a quick look

Four parts, written to ``benchmarks/results/selfie_students.{json,md}`` (lesson 04's last section prints them):

* **anatomy**: the ``.tflite`` graph (``tflite_graph.read_tflite``): operators, FLOPs and activations
  by map size (deterministic: ``--anatomy-only`` rewrites it, and the markdown, from the stored json);
* **parity**: the PyTorch rebuild with Google's weights (``selfie.mediapipe_selfie``) against LiteRT
  on bundled photos, max abs difference of the probabilities;
* **cells**: ``default_student``, ``selfie_segmenter`` (MediaPipe's architecture, trained from scratch),
  ``selfie_student`` and ``lean_selfie_student`` trained with lesson 04's budget (300 steps, batch 8,
  64x64 crops of 240 128x128 images, border-weighted BCE, lr 3e-3; one CPU thread), each with ``--seeds``;
  validation IoU and instance F1 on 60 images, of the eager model and of its int8 ExecuTorch export
  (PT2E, calibrated on 16 unlabelled cells images, run from the ``.pte``);
* **latency**: the four (RGB, random weights: a forward pass costs the same) in ONNX Runtime and in
  ExecuTorch/XNNPACK fp32 and int8 (``export.export``; int8 calibrated on 8 photos), and the selfie
  ``.tflite`` in LiteRT, 1 thread, 256x256, every runner once per round (``profile.measure_latency``),
  ``--passes`` times.

Needs the model (``bash course.sh models``), LiteRT and the tflite parser (the ``mediapipe`` extra) and
ExecuTorch (the ``export`` extra); without them it says so and exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mobileunet import export as ex
from mobileunet import mediapipe as mp
from mobileunet import models
from mobileunet.bench import machine_info
from mobileunet.data import cells_splits
from mobileunet.env import set_seed
from mobileunet.losses import weighted_bce_loss
from mobileunet.metrics import instance_f1, iou
from mobileunet.profile import count_flops, count_params, measure_latency
from mobileunet.selfie import mediapipe_selfie
from mobileunet.tables import format_table, write_results
from mobileunet.tflite_graph import by_resolution, op_counts, read_tflite
from mobileunet.train import TrainConfig, evaluate, train

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 256
STUDENTS = ("default_student", "selfie_segmenter", "selfie_student", "lean_selfie_student")
LITERT = "MediaPipe selfie segmentation (.tflite)"
EXPORTED = {"executorch": False, "executorch-int8": True}      # runtime: int8?
RUNTIME_ORDER = ("onnxruntime", *EXPORTED, "litert")
LATENCY_COLUMNS = ["pass", "model", "runtime", "median_ms", "iqr_ms", "min_ms", "runs"]
PHOTOS = ("astronaut", "grace_hopper", "chelsea", "coffee", "rocket")


def photo_input(name: str) -> np.ndarray:
    """A bundled photo resized (stretched) to 256x256: (1, 256, 256, 3) RGB float32 in [0, 1]."""
    from skimage.transform import resize

    from mobileunet.photos import load_photo

    return resize(load_photo(name), (SIZE, SIZE), anti_aliasing=True).astype(np.float32)[None]


def parity(path: Path) -> list[dict]:
    model, run = mediapipe_selfie(path), mp.TfliteRunner(path, threads=1)
    rows = []
    for name in PHOTOS:
        x = photo_input(name)
        want = run(x)[0, ..., 0]
        with torch.no_grad():
            got = torch.sigmoid(model(torch.from_numpy(x).permute(0, 3, 1, 2)))[0, 0].numpy()
        rows.append({"photo": name, "max abs diff": float(np.abs(got - want).max()),
                     "person share (LiteRT)": float((want > 0.5).mean()),
                     "person share (rebuild)": float((got > 0.5).mean())})
    return rows


def train_cells(steps: int, seeds: list[int]) -> list[dict]:
    train_set, val_set = cells_splits(240, 60, size=128)
    rows = []
    for name in STUDENTS:
        for seed in seeds:
            set_seed(seed)
            model = models.builders("segmentation")[name](in_channels=1, out_channels=1)
            cfg = TrainConfig(steps=steps, batch_size=8, crop=64, loss=weighted_bce_loss, eval_every=steps,
                              seed=seed, device="cpu", desc=f"{name} seed {seed}")
            hist = train(model, train_set, val_set, cfg)
            scores, q = evaluate(model, val_set), int8_scores(model, val_set)
            rows.append({"model": name, "seed": seed, "val IoU": scores["iou"],
                         "instance F1": scores["instance_f1"], "int8 IoU": q["iou"], "int8 instance F1": q["f1"],
                         "train s": round(hist["seconds"], 1)})
    return rows


def int8_scores(model: torch.nn.Module, val_set) -> dict:
    """IoU and instance F1 of ``model`` exported to an int8 ``.pte`` (PT2E, calibrated on unlabelled
    cells), run by ExecuTorch on each validation image."""
    images, masks = val_set.images, val_set.masks
    with tempfile.TemporaryDirectory() as tmp:
        e = ex.export(model, Path(tmp) / "int8.pte", "pte", int8=True, size=tuple(images.shape[-2:]))
        run = ex.load_runner(e.path, threads=1)
        probs = torch.cat([torch.sigmoid(run(f)) for f in images.split(1)])
    return {"iou": iou(probs, masks), "f1": instance_f1(probs, val_set.labels)["instance_f1"]}


def mean_rows(rows: list[dict]) -> list[dict]:
    out = []
    for name in STUDENTS:
        mine = [r for r in rows if r["model"] == name]
        out.append({"model": name, "seeds": len(mine), "mean val IoU": float(np.mean([r["val IoU"] for r in mine])),
                    "lowest IoU": min(r["val IoU"] for r in mine), "highest IoU": max(r["val IoU"] for r in mine),
                    "mean instance F1": float(np.mean([r["instance F1"] for r in mine])),
                    "mean int8 IoU": float(np.mean([r["int8 IoU"] for r in mine])),
                    "lowest int8 IoU": min(r["int8 IoU"] for r in mine),
                    "mean int8 instance F1": float(np.mean([r["int8 instance F1"] for r in mine]))})
    return out


def latency(path: Path, rounds: int, passes: int) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    nets = {name: models.builders("segmentation")[name](in_channels=3, out_channels=1).eval() for name in STUDENTS}
    x = torch.zeros(1, 3, SIZE, SIZE)
    facts = {name: {"params": count_params(m), "gflops": count_flops(m, x) / 1e9} for name, m in nets.items()}
    rgb = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    extra = {(LITERT, "litert"): mp.timed(path, rgb), **exported(nets, facts)}
    rows = []
    for p in range(1, passes + 1):
        print(f"[selfie_students] latency pass {p}/{passes}", flush=True)
        t = measure_latency(nets, (1, 3, SIZE, SIZE), threads=(1,), runtimes=("onnxruntime",), warmup=5,
                            repeats=rounds, max_seconds=120, extra=extra)
        rows += [{"pass": p, **r} for r in t.rows]
    return rows, facts


def exported(nets: dict, facts: dict) -> dict:
    """``{(model, runtime): make(threads)}``: each model as an ExecuTorch/XNNPACK ``.pte``, fp32 and int8
    (calibrated on 8 photos), for ``measure_latency(extra=...)``; what XNNPACK left out goes in ``facts``."""
    folder = Path(tempfile.mkdtemp(prefix="selfie-students-"))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    calibration = ex.calibration_frames(nets[STUDENTS[0]], SIZE, n=8)
    out = {}
    for name, model in nets.items():
        for rt, int8 in EXPORTED.items():
            e = ex.export(model, folder / f"{name}-{rt}.pte", "pte", int8=int8, size=SIZE, calibration=calibration)
            facts[name][f"{rt} outside delegate"] = e.outside_delegate
            out[(name, rt)] = ex.timed(e.path, x)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Each (model, runtime)'s median over LiteRT's, per pass, then their range across passes."""
    ms = {(r["pass"], r["model"], r["runtime"]): r["median_ms"] for r in rows}
    passes = sorted({r["pass"] for r in rows})
    out = []
    for name in STUDENTS:
        for rt in RUNTIME_ORDER[:-1]:
            xs = [ms[p, name, rt] / ms[p, LITERT, "litert"] for p in passes]
            out.append({"model": name, "runtime": rt, f"x {LITERT} (LiteRT)": float(np.median(xs)),
                        "lowest x": min(xs), "highest x": max(xs), "passes": len(xs)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model (lesson 04: 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per model (default 0 1 2)")
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per pass")
    parser.add_argument("--passes", type=int, default=3, help="times the latency table is measured")
    parser.add_argument("--anatomy-only", action="store_true",
                        help="recount the graph into the stored results, rewrite the markdown; train nothing")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 3 or args.passes < 1:
        parser.error("need --steps >= 1, --rounds >= 3 and --passes >= 1")
    missing = [] if mp.available("selfie_segmentation") else [f"selfie_segmentation.tflite ({mp.FETCH})"]
    for module, install in (("ai_edge_litert", mp.INSTALL), ("tflite", mp.INSTALL), ("executorch", ex.INSTALL)):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} ({install})")
    if missing:
        print(f"cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    if args.anatomy_only:
        return rewrite_anatomy()
    command = "python benchmarks/selfie_students.py" + "".join(
        f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if v != parser.get_default(k))
    start, machine = time.perf_counter(), machine_info()
    machine["litert"] = __import__("ai_edge_litert").__version__
    machine["executorch"] = version("executorch")
    path = mp.verify("selfie_segmentation")
    anatomy = read_anatomy(path)
    same = parity(path)
    cells = train_cells(args.steps, args.seeds)
    timing, facts = latency(path, args.rounds, args.passes)
    machine["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    out = {"command": command, "seconds": round(time.perf_counter() - start), "machine": machine,
           "budget": f"{args.steps} steps, batch 8, 64x64 crops of 240 128x128 cells images, border-weighted BCE, "
                     f"lr 3e-3, 1 thread; 60 validation images", "anatomy": anatomy, "parity": same,
           "cells": cells, "cells_mean": mean_rows(cells), "facts": facts, "latency": timing,
           "ratios": ratios(timing)}
    md = markdown(out)
    write_results(RESULTS, "selfie_students", out, md)
    return 0


def read_anatomy(path: Path) -> dict:
    graph = read_tflite(path)
    return {"description": graph.description, "compute ops": len(graph.compute_ops), "gflops": graph.flops() / 1e9,
            "params": graph.param_count(), "constants": sum(v.size for v in graph.constants.values()),
            "op_counts": op_counts(graph), "by_resolution": by_resolution(graph)}


def rewrite_anatomy() -> int:
    """The stored run's anatomy recounted from the file (the measurements untouched), markdown rewritten."""
    stored = RESULTS / "selfie_students.json"
    if not stored.is_file():
        print(f"cannot rewrite: {stored} is missing; run python benchmarks/selfie_students.py", file=sys.stderr)
        return 1
    out = json.loads(stored.read_text())
    out["anatomy"] = read_anatomy(mp.verify("selfie_segmentation"))
    stored.write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "selfie_students.md").write_text(markdown(out))
    print(markdown(out))
    return 0


def summary(out: dict) -> list[dict]:
    """One row per (model, runtime): params, GFLOPs, median ms over the passes, its ratio to LiteRT's
    (median of the passes' ratios), mean IoU and instance F1 of the model that runtime runs (int8 rows:
    the int8 export's)."""
    by = {r["model"]: r for r in out["cells_mean"]}
    ratio = {(r["model"], r["runtime"]): r for r in out["ratios"]}
    rows = []
    for name, rt in [(n, rt) for n in STUDENTS for rt in RUNTIME_ORDER[:-1]] + [(LITERT, "litert")]:
        ms = [r["median_ms"] for r in out["latency"] if (r["model"], r["runtime"]) == (name, rt)]
        if not ms:
            continue
        cells, q = by.get(name, {}), "int8 " if rt.endswith("int8") else ""
        facts = out["facts"].get(name, {"params": out["anatomy"]["params"], "gflops": out["anatomy"]["gflops"]})
        x = ratio.get((name, rt), {})
        rows.append({"model": name, "runtime": rt, "params": facts["params"], "GFLOPs": facts["gflops"],
                     "median ms": float(np.median(ms)), "x LiteRT": x.get(f"x {LITERT} (LiteRT)", 1.0),
                     "x range": f"{x['lowest x']:.2f}-{x['highest x']:.2f}" if x else "",
                     "cells IoU": cells.get(f"mean {q}val IoU" if not q else "mean int8 IoU", ""),
                     "instance F1": cells.get(f"mean {q}instance F1", "")})
    return rows


def markdown(out: dict) -> str:
    m, a = out["machine"], out["anatomy"]
    return (
        f"# MediaPipe's selfie segmenter: anatomy, rebuild, and students on the cells\n\n"
        f"Command: `{out['command']}` ({out['seconds']} s). {m['cpu']} ({', '.join(m.get('cpu_simd', [])) or '-'}), "
        f"{m['cores']} cores, torch {m['torch']}, onnxruntime {m.get('onnxruntime', '-')}, executorch "
        f"{m.get('executorch', '-')}, LiteRT {m['litert']}; load average {m.get('load_avg_start')} "
        f"-> {m.get('load_avg_end')}; {m['date']}.\n\n"
        f"## Summary (1 thread, 256x256; ms: median of the passes' medians; IoU: mean over seeds)\n\n"
        f"{format_table(summary(out), floatfmt='.3g')}\n\n"
        f"Cells budget: {out['budget']}. x LiteRT: the row's median over LiteRT's in the same pass, the "
        f"median of the passes (x range: lowest-highest). IoU and F1 of the int8 rows: the trained models "
        f"exported to int8 ExecuTorch and run from the .pte on the same validation images. params and "
        f"GFLOPs of the students for RGB input, of the .tflite from its graph (convolutions only, 2 FLOPs "
        f"per multiply-add).\n\n"
        f"## Ratios of medians across passes\n\n{format_table(out['ratios'], floatfmt='.2f')}\n\n"
        f"## Anatomy: `{a['description']}`\n\n{a['compute ops']} compute ops, {a['gflops']:.3f} GFLOPs, "
        f"{a['params']:,} parameters: its float weights and biases (`mediapipe_peers.md` counts "
        f"{a.get('constants', a['params']):,}, every constant tensor, which adds the "
        f"{a.get('constants', a['params']) - a['params']} int32 numbers of the bilinear resizes' output sizes). "
        f"MFLOPs count "
        f"the convolutions only; map side 1 collects the ops that write a 1x1 map (global pools, and the 1x1 "
        f"convs and sigmoids of the gates computed from them).\n\n"
        f"{format_table(a['by_resolution'], floatfmt='.3g')}\n\n"
        f"{format_table(a['op_counts'], floatfmt='.3g')}\n\n"
        f"## Parity: rebuild (PyTorch) against LiteRT, person probability\n\n"
        f"{format_table(out['parity'], floatfmt='.3g')}\n\n"
        f"## Cells, every seed\n\n{format_table(out['cells'], floatfmt='.3f')}\n\n"
        f"## Latency, every pass\n\n"
        f"{format_table(out['latency'], LATENCY_COLUMNS, floatfmt='.3g')}\n")


if __name__ == "__main__":
    raise SystemExit(main())
