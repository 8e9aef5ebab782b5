"""Google's production on-device models beside the course's default student, on this CPU.

    python benchmarks/mediapipe_peers.py               # about a minute: 256x256, 1 and 2 threads, 3 passes
    python benchmarks/mediapipe_peers.py --rounds 20   # a quicker look

Two tables, each measured interleaved (every runner once per round, so load
from other programs hits all of them alike; ``profile.measure_latency``):

* segmentation at 256x256: MediaPipe's selfie segmentation in LiteRT (XNNPACK)
  against the default student (MobileUNet V3-Small w1.0, random weights: the
  cost of a forward pass does not depend on them) in ONNX Runtime and, when
  ExecuTorch is installed, in ExecuTorch/XNNPACK (the kernels LiteRT uses, so
  that pair compares the models more than the runtimes);
* face detection on a 256x256 frame of the astronaut: BlazeFace (the network
  alone on its 128x128 input, and the whole detector: letterbox, network,
  decoding, weighted NMS) against the course's LBP cascade, full size and on
  the half-size frame lesson 08 schedules.

Each table is measured ``--passes`` times; the markdown gives per pass and
thread count the median and IQR of every runner and the ratios of medians,
and across passes the range of each ratio. Writes
``benchmarks/results/mediapipe_peers.{json,md}``. Needs the models
(``bash course.sh models``) and LiteRT (the ``mediapipe`` extra); without
them it says so and exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobileunet import mediapipe as mp
from mobileunet.bench import STUDENT, exported_runners, machine_info
from mobileunet.models import default_student
from mobileunet.profile import count_flops, count_params, measure_latency
from mobileunet.tables import format_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 256
SELFIE = "MediaPipe selfie segmentation"
STUDENT_ORT, STUDENT_ET = f"{STUDENT}, ONNX Runtime", f"{STUDENT}, ExecuTorch XNNPACK"
BF_NET, BF_DET = "BlazeFace network (128x128 input)", "BlazeFace detector (256x256 frame)"
CASCADE, CASCADE_HALF = "LBP cascade (256x256 frame)", "LBP cascade, half-size frame (lesson 08)"


def face_frame() -> np.ndarray:
    """The astronaut, resized to 256x256: one face, about 48 pixels across."""
    import skimage.data
    from skimage.transform import resize
    from skimage.util import img_as_float32

    return resize(img_as_float32(skimage.data.astronaut()), (SIZE, SIZE), anti_aliasing=True).astype(np.float32)


def segmentation_runners(machine: dict) -> tuple[dict, dict, dict]:
    """``(models, extra, facts)`` for ``measure_latency``: the student (ORT from ``models``, ExecuTorch from
    ``extra`` when it exports) and the selfie model (``extra``); ``facts`` holds params and GFLOPs."""
    torch.manual_seed(0)
    student = default_student(in_channels=3, out_channels=1).eval()
    x = torch.zeros(1, 3, SIZE, SIZE)
    facts = {STUDENT_ORT: {"params": count_params(student), "gflops": count_flops(student, x) / 1e9}}
    extra = {}
    for (_, rt), make in exported_runners(student, SIZE, ("executorch",), machine).items():
        extra[(STUDENT_ET, rt)] = make
        facts[STUDENT_ET] = facts[STUDENT_ORT]
    rgb = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    path = mp.verify("selfie_segmentation")
    extra[(SELFIE, "litert")] = mp.timed(path, rgb)
    facts[SELFIE] = {"params": mp.TfliteRunner(path).param_count(), "gflops": ""}       # not counted
    return {STUDENT_ORT: student}, extra, facts


def detection_runners() -> tuple[dict, dict]:
    from mobileunet.blazeface import BlazeFaceDetector, letterbox
    from mobileunet.realtime import FaceDetector

    frame = face_frame()
    x, _ = letterbox(frame)
    cascade, half = FaceDetector(), FaceDetector(downscale=2, min_size=48, scale_factor=1.4)

    def net(threads):
        det = BlazeFaceDetector(threads=threads)
        return lambda: det.raw(x)

    def detector(threads):
        det = BlazeFaceDetector(threads=threads)
        return lambda: det(frame)

    extra = {(BF_NET, "litert"): net, (BF_DET, "litert + numpy"): detector,
             (CASCADE, "scikit-image"): lambda threads: (lambda: cascade(frame)),
             (CASCADE_HALF, "scikit-image"): lambda threads: (lambda: half(frame))}
    found = {"BlazeFace": [r.__dict__ for r in BlazeFaceDetector().faces(frame)],
             "cascade": [r.__dict__ for r in cascade.faces(frame)],
             "cascade, half size": [r.__dict__ for r in half.faces(frame)]}
    return extra, found


def ratio_rows(rows: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """``slower median / faster median`` for each (numerator, denominator) pair, per pass and thread count."""
    ms = {(r["pass"], r["threads"], r["model"]): r["median_ms"] for r in rows}
    out = []
    for (p, n, name), t in sorted(ms.items()):
        for num, den in pairs:
            if name == num and (p, n, den) in ms:
                out.append({"pass": p, "threads": n, "ratio": f"{num} / {den}", "x": t / ms[p, n, den]})
    return out


def spread(ratios: list[dict]) -> list[dict]:
    """Each ratio across passes: median, lowest and highest."""
    groups: dict = {}
    for r in ratios:
        groups.setdefault((r["ratio"], r["threads"]), []).append(r["x"])
    return [{"ratio": k[0], "threads": k[1], "median x": float(np.median(v)), "lowest x": min(v),
             "highest x": max(v), "passes": len(v)} for k, v in groups.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed rounds per pass and thread count")
    parser.add_argument("--passes", type=int, default=3, help="times each table is measured (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if args.rounds < 3 or args.passes < 1 or min(args.threads) < 1:
        parser.error("need --rounds >= 3, --passes >= 1 and thread counts >= 1")
    missing = [n for n in mp.MODELS if not mp.available(n)]
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        missing.append(f"LiteRT ({mp.INSTALL})")
    if missing:
        print(f"cannot run: missing {', '.join(missing)}; fetch the models with {mp.FETCH}", file=sys.stderr)
        return 1
    command = "python benchmarks/mediapipe_peers.py" + "".join(
        f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if v != parser.get_default(k))
    start = time.perf_counter()
    machine = machine_info()
    machine["litert"] = __import__("ai_edge_litert").__version__
    models, seg_extra, facts = segmentation_runners(machine)
    det_extra, found = detection_runners()
    seg_rows, det_rows = [], []
    for p in range(1, args.passes + 1):
        print(f"[mediapipe_peers] pass {p}/{args.passes}", flush=True)
        t = measure_latency(models, (1, 3, SIZE, SIZE), threads=args.threads, runtimes=("onnxruntime",),
                            warmup=5, repeats=args.rounds, max_seconds=120, extra=seg_extra)
        seg_rows += [{"pass": p, **r, "input": "1x3x256x256" if r["model"] != SELFIE else "1x256x256x3",
                      **facts.get(r["model"], {})} for r in t.rows]
        t = measure_latency({}, (1,), threads=args.threads, runtimes=(), warmup=5, repeats=args.rounds,
                            max_seconds=120, extra=det_extra)
        det_rows += [{"pass": p, **r, "input": "1x128x128x3" if r["model"] == BF_NET else "256x256x3 frame"}
                     for r in t.rows]
    machine["load_avg_end"] = [round(v, 2) for v in __import__("os").getloadavg()]
    seg_ratios = ratio_rows(seg_rows, [(STUDENT_ORT, SELFIE), (STUDENT_ET, SELFIE)])
    det_ratios = ratio_rows(det_rows, [(CASCADE, BF_DET), (CASCADE_HALF, BF_DET), (BF_DET, BF_NET)])
    out = {"command": command, "seconds": round(time.perf_counter() - start, 1), "machine": machine,
           "mediapipe_wheel": f"mediapipe=={mp.MEDIAPIPE_VERSION}",
           "models": {n: {"sha256": m.sha256, "member": m.member} for n, m in mp.MODELS.items()},
           "faces_found": found, "segmentation": seg_rows, "detection": det_rows,
           "segmentation_ratios": seg_ratios, "detection_ratios": det_ratios,
           "ratio_spread": spread(seg_ratios) + spread(det_ratios)}
    md = markdown(out)
    write_results(RESULTS, "mediapipe_peers", out, md)
    return 0


def markdown(out: dict) -> str:
    m = out["machine"]
    cols = ["pass", "threads", "model", "runtime", "input", "median_ms", "iqr_ms", "runs"]
    seg_cols = cols + ["params", "gflops"]
    order = lambda rows: sorted(rows, key=lambda r: (r["threads"], r["pass"]))
    return (
        f"# MediaPipe's production models beside the student\n\n"
        f"Command: `{out['command']}` ({out['seconds']:.0f} s). Models from `{out['mediapipe_wheel']}` "
        f"(sha256 in `mobileunet/mediapipe.py`), run by LiteRT {m['litert']}; the student has random weights. "
        f"{m['cpu']} ({'/'.join(m.get('cpu_simd', []))}), {m['cores']} cores, torch {m['torch']}, "
        f"onnxruntime {m.get('onnxruntime', '-')}; load average {m.get('load_avg_start')} -> "
        f"{m.get('load_avg_end')}; {m['date']}. Every runner once per round, rounds interleaved; "
        f"ms are the median and IQR of one pass.\n\n"
        f"## Ratios of medians across passes\n\n"
        f"{format_table(out['ratio_spread'], floatfmt='.2f')}\n\n"
        f"## Segmentation, 256x256\n\n"
        f"{format_table(order(out['segmentation']), seg_cols, floatfmt='.3g')}\n\n"
        f"## Face detection\n\n"
        f"{format_table(order(out['detection']), cols, floatfmt='.3g')}\n\n"
        f"Faces found on the frame: {json.dumps(out['faces_found'])}\n\n"
        f"## Every pass\n\n"
        f"{format_table(out['segmentation_ratios'] + out['detection_ratios'], floatfmt='.2f')}\n")


if __name__ == "__main__":
    raise SystemExit(main())
