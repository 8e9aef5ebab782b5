"""Where the effect student's milliseconds went, and what rewriting its fixed steps bought (lesson 06).

    python benchmarks/effect_speed.py            # about 20 s
    python benchmarks/effect_speed.py --rounds 5 # a quick look

The shipped student (``data/checkpoints/effect_student.pt``) spends most of its
time outside its network: in the fixed steps around it (the 2x2 averages, the
residual's sigmoid, the colour conversions, the guided lift, the exact line
step). Each of
those steps is written in the package in the form ONNX Runtime runs fastest;
this script writes each one a second way, the plain formula it replaced, and
times both side by side, every runner once per round, in ONNX Runtime at
1 thread (``profile.measure_latency``):

* each rewritten step alone, at the size the student runs it (256x256 input),
  in rounds of their own (between two teacher frames every step starts with a
  cold cache, which hides what its kernel costs);
* the whole student, exported with the package's steps and again with the
  plain ones patched in (``PLAIN``, which lists the little it does not undo;
  the two graphs compute the same image: the largest difference is printed);
* the whole student on lesson 06's photo frame and on Gaussian noise, which
  sends its branches (``torch.where``) down both ways at random;
* the teacher (``effects.cartoon``) in the same rounds, for the speed-up;
* then ONNX Runtime's own profile of the package's graph on the photo and on
  the noise (``profile.ort_op_times``): each operator type's nodes and kernel
  milliseconds, the node-by-node view behind the totals (one session run back
  to back, warm, so its totals are not the rounds' medians).

Writes ``benchmarks/results/effect_speed.{json,md}``.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from mobileunet.models import guided_upsample as package_guided_upsample  # kept while plain_steps patches it

RESULTS = Path(__file__).parent / "results"
CHECKPOINT = Path(__file__).parents[1] / "data" / "checkpoints" / "effect_student.pt"


def plain_lines(lightness: torch.Tensor, params=None) -> torch.Tensor:
    """``effects.lines_from_lightness`` as it was: one 1 -> 2 channel blur, a grouped one, and a ``where``."""
    from mobileunet.effects import CartoonParams

    p = params or CartoonParams()
    sigmas = (p.edge_sigma, 1.6 * p.edge_sigma)
    R = int(4.0 * sigmas[1] + 0.5)
    x = torch.arange(-R, R + 1, dtype=lightness.dtype)
    k = torch.stack([torch.where(x.abs() <= int(4.0 * s + 0.5), torch.exp(-x**2 / (2 * s**2)), torch.zeros_like(x))
                     for s in sigmas])
    k = k / k.sum(1, keepdim=True)
    t = F.conv2d(F.pad(lightness, (R, R, R, R), mode="replicate"), k.view(2, 1, 1, -1))
    t = F.conv2d(t, k.view(2, 1, -1, 1), groups=2)
    dog = t[:, :1] - p.edge_tau * t[:, 1:]
    return torch.where(dog > 0, torch.ones_like(dog), 1.0 + torch.tanh(p.edge_phi * dog))


def plain_guided_upsample(guide_lo, out_lo, guide, r=1, eps=1e-4):
    """``models.guided_upsample`` as it was: full-resolution parts joined into one guide, the output split again."""
    if not isinstance(guide, tuple):
        return package_guided_upsample(guide_lo, out_lo, guide, r, eps)
    joined = package_guided_upsample(guide_lo, out_lo, torch.cat(guide, 1), r, eps)
    return tuple(torch.split(joined, [g.shape[1] for g in guide], 1))


PLAIN = {
    "half_size": lambda x: F.avg_pool2d(x, 2, ceil_mode=True),
    "logit_residual": lambda y, start: torch.sigmoid(y + torch.logit(start.clamp(1e-3, 1 - 1e-3))),
    "_luma": lambda t: (t * t.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True),
    "mix_channels": lambda m, t: torch.einsum("ij,bjhw->bihw", m, t),
    "lines_from_lightness": plain_lines,
    "guided_upsample": plain_guided_upsample,
}
"""The plain formula of each step the package writes for speed (same names as the package's functions).
Not undone: the quantiser's white point folded into its matrices, its Z clip as one ``maximum`` and its
``floor(...).clamp_max``, and the student's last clamp (gone: the line factor is in [0, 1])."""


@contextlib.contextmanager
def plain_steps():
    """Inside: ``models`` and ``effects`` use the plain formulas (``PLAIN``) instead of their own."""
    from mobileunet import effects, models

    with contextlib.ExitStack() as stack:
        for name, fn in PLAIN.items():
            for module in (models, effects):
                if hasattr(module, name):
                    stack.enter_context(mock.patch.object(module, name, fn))
        yield


class Step(nn.Module):
    def __init__(self, fn, *fixed):
        super().__init__()
        self.fn, self.fixed = fn, fixed

    def forward(self, x):
        return self.fn(*self.fixed, x) if self.fixed else self.fn(x)


def step_runners(frame: torch.Tensor) -> tuple[dict, list[dict]]:
    """``measure_latency`` extras for each step, both ways, on what that step sees of ``frame``; and their rows."""
    from mobileunet import effects, models

    half = models.half_size(frame)
    correction = torch.randn(1, 4, *half.shape[-2:], generator=torch.Generator().manual_seed(0))
    start = torch.cat([half, models._luma(half)], 1)
    xyz = torch.tensor(effects._XYZ_FROM_RGB)
    def lift(up):                          # the lift of the frame's own half-size copy; all else the same both ways
        def run(x):
            lo = models.half_size(torch.cat([x, models._luma(x)], 1))
            return up(lo, 0.9 * lo, (x, models._luma(x)))
        return run
    steps = {  # name: (package fn, its plain formula, its fixed leading arguments, input)
        "2x2 average of the frame (half_size)": ("half_size", None, (), frame),
        "residual sigmoid, 4 x 128x128 (logit_residual)": ("logit_residual", None, (correction,), start),
        "luma of the frame (_luma)": ("_luma", None, (), frame),
        "a colour matrix, 3 x 128x128 (mix_channels)": ("mix_channels", None, (xyz,), half),
        "line step, 256x256 (lines_from_lightness)": ("lines_from_lightness", None, (),
                                                       effects.cielab_lightness(frame)),
        "guided lift to 256x256, image and luma (guided_upsample)": (
            lift(models.guided_upsample), lift(plain_guided_upsample), (), frame),
    }
    extra, rows = {}, []
    for label, (name, plain, fixed, x) in steps.items():
        ours = name if callable(name) else getattr(models, name, None) or getattr(effects, name)
        for way, fn in (("package", ours), ("plain", plain or PLAIN[name])):
            extra[(label, way)] = _ort_maker(Step(fn, *fixed), x)
        rows.append({"step": label})
    return extra, rows


def _ort_maker(model: nn.Module, x: torch.Tensor):
    from mobileunet.profile import onnx_bytes, ort_session

    onnx = onnx_bytes(model.eval(), x)

    def make(threads: int):
        session = ort_session(onnx, threads)
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)
    return make


def main(argv: list[str] | None = None) -> int:
    from mobileunet.checkpoint import load_checkpoint
    from mobileunet.effect_distill import frame256
    from mobileunet.effects import cartoon
    from mobileunet.profile import measure_latency, onnx_bytes, ort_op_times, ort_session
    from mobileunet.tables import format_table, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3")
    torch.set_num_threads(1)
    start = time.perf_counter()
    student, _ = load_checkpoint(CHECKPOINT)
    student.eval()
    frame = frame256()[None].float().contiguous()
    noise = torch.randn(frame.shape, generator=torch.Generator().manual_seed(0))
    steps, step_rows = step_runners(frame)
    extra = {}
    graphs = {"package": onnx_bytes(student, frame)}
    with plain_steps():
        graphs["plain"] = onnx_bytes(student, frame)
    outputs = {}
    for way, onnx in graphs.items():
        for label, x in (("photo", frame), ("noise", noise)):      # a session each, as measure_latency makes
            session = ort_session(onnx, 1)
            feed = {session.get_inputs()[0].name: x.numpy()}
            if label == "photo":
                outputs[way] = torch.from_numpy(session.run(None, feed)[0])
            extra[(f"student on the {label}", way)] = (lambda s, f: (lambda threads: (lambda: s.run(None, f))))(
                session, feed)
    image = frame[0].permute(1, 2, 0).numpy()
    extra[("teacher (cartoon effect)", "scikit-image")] = lambda threads: (lambda: cartoon(image))
    ms = {}
    for runners in (steps, extra):        # the small steps in their own rounds: the teacher would flush the cache
        table = measure_latency({}, tuple(frame.shape), threads=(1,), runtimes=(), warmup=3, repeats=args.rounds,
                                extra=runners)
        ms.update({(r["model"], r["runtime"]): r for r in table.rows})
    for r in step_rows:
        plain, ours = ms[(r["step"], "plain")], ms[(r["step"], "package")]
        r.update(plain_ms=plain["median_ms"], package_ms=ours["median_ms"],
                 saved_ms=plain["median_ms"] - ours["median_ms"], speed_up=plain["median_ms"] / ours["median_ms"])
    teacher = ms[("teacher (cartoon effect)", "scikit-image")]
    student_rows = []
    for way in ("plain", "package"):
        for label in ("photo", "noise"):
            r = ms[(f"student on the {label}", way)]
            student_rows.append({"runner": f"student, {way} steps, on the {label}", "median_ms": r["median_ms"],
                                 "iqr_ms": r["iqr_ms"], "teacher_over_this": teacher["median_ms"] / r["median_ms"]})
    student_rows.append({"runner": "teacher (cartoon effect), on the photo", "median_ms": teacher["median_ms"],
                         "iqr_ms": teacher["iqr_ms"], "teacher_over_this": 1.0})
    on = {label: {r["op"]: r for r in ort_op_times(graphs["package"], x, runs=args.rounds)}
          for label, x in (("photo", frame), ("noise", noise))}
    profile = [{"op": op, "nodes": r["nodes"], "photo_ms": r["ms"], "noise_ms": on["noise"].get(op, {}).get("ms")}
               for op, r in on["photo"].items()]
    out = {"command": "python benchmarks/effect_speed.py" + (f" --rounds {args.rounds}" if args.rounds != 30 else ""),
           "rounds": args.rounds, "checkpoint": str(CHECKPOINT.relative_to(CHECKPOINT.parents[2])),
           "max_abs_diff_package_vs_plain": float((outputs["package"] - outputs["plain"]).abs().max()),
           "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "seconds": round(time.perf_counter() - start), "steps": step_rows, "students": student_rows,
           "profile": profile, "kernel_ms": {k: sum(r["ms"] for r in v.values()) for k, v in on.items()}}
    md = (f"# Effect student: where the milliseconds went\n\nCommand: `{out['command']}` ({out['seconds']} s); "
          f"ONNX Runtime, 1 thread, 256x256, median of {args.rounds} interleaved rounds. The two student graphs "
          f"differ by at most {out['max_abs_diff_package_vs_plain']:.1e} on the photo.\n\n"
          f"Each rewritten step, the plain formula against the package's:\n\n{format_table(step_rows)}\n\n"
          f"The whole student and the teacher:\n\n{format_table(student_rows)}\n\n"
          f"ONNX Runtime's profile of the package's graph, kernel ms per run by operator (all of them: "
          f"{out['kernel_ms']['photo']:.2f} on the photo, {out['kernel_ms']['noise']:.2f} on the noise):\n\n"
          f"{format_table(profile)}\n")
    write_results(RESULTS, "effect_speed", out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
