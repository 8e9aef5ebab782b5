"""Does the effect student learn the smoothing or its photos? (lesson 06)

    python benchmarks/effect_generalisation.py      # about 20 s on one core (the pairs and hints are cached)

``benchmarks/effect_ceiling.py`` shows that the student's error is the
smoothing it draws at half resolution. With the shipped checkpoint:

* **fit**: the half-resolution smoothing of the input, the self-guided filter
  and the student against the teacher's (pooled 2x2), on the 384 training
  pairs and on the 48 held-out pairs; and the student's final image against
  the teacher on both. What the network adds to the filter on photos it was
  trained on, against what it adds on photos it has never seen, is its
  generalisation gap;
* **where**: on the held-out pairs, each kind of pixel's share of the
  smoothing's squared error: textured pixels (the input's local standard
  deviation above 0.05), pixels where the teacher's smoothing has an edge
  (a step above 0.05 to a neighbour), and flat ones (below 0.01).

Against the teacher of ``EFFECT_VERSION`` 2 (scikit-image's sheared bilateral
table, ``effects.bilateral``) this script also ran three 800-step probes
(permuted colours, a network that sees every full-resolution pixel, photos
rescaled by 0.5-1x); none moved the held-out score, and they are gone with that
teacher (``docs/effect_student.md`` keeps their numbers and the commit).

Writes ``benchmarks/results/effect_generalisation.{json,md}``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
pool = lambda t: F.avg_pool2d(t, 2, ceil_mode=True)  # noqa: E731


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from mobileunet.metrics import psnr
    return round(float(psnr(a.clamp(0, 1), b).mean()), 2)


def fit_rows(student, pairs: dict) -> list[dict]:
    """Half-resolution smoothing and final image against the teacher, on the training and held-out pairs."""
    from mobileunet.models import SMOOTH_BASE, self_guided_smooth
    from mobileunet.photos import teacher_hints

    rows = []
    for split, p in pairs.items():
        smooth = pool(teacher_hints(p)[:, :3])
        x_lo = pool(p.inputs)
        with torch.no_grad():
            drawn = torch.cat([student.half_resolution(p.inputs[i:i + 64]) for i in range(0, len(p), 64)])
            final = student.after_half_resolution(p.inputs, drawn)      # the rest of the forward pass
        filtered = self_guided_smooth(x_lo, **SMOOTH_BASE)
        rows.append({"pairs": f"{split} ({len(p)})", "input": mean_psnr(x_lo, smooth),
                     "filter": mean_psnr(filtered, smooth), "student": mean_psnr(drawn[:, :3], smooth),
                     "student_gain": round(mean_psnr(drawn[:, :3], smooth) - mean_psnr(filtered, smooth), 2),
                     "student_final_image": mean_psnr(final, p.targets)})
    return rows


def where_rows(student, val) -> list[dict]:
    """Shares of the held-out smoothing error by kind of pixel, for the student and the filter."""
    from mobileunet.models import SMOOTH_BASE, box_filter, self_guided_smooth
    from mobileunet.photos import teacher_hints

    smooth, x_lo = pool(teacher_hints(val)[:, :3]), pool(val.inputs)
    texture = (box_filter(x_lo * x_lo, 2) - box_filter(x_lo, 2) ** 2).clamp_min(0).mean(1, keepdim=True).sqrt()
    step_y = F.pad((smooth[:, :, 1:] - smooth[:, :, :-1]).abs().mean(1, keepdim=True), (0, 0, 0, 1))
    step_x = F.pad((smooth[..., 1:] - smooth[..., :-1]).abs().mean(1, keepdim=True), (0, 1))
    edge = torch.maximum(step_x, step_y)
    kinds = {"textured (input local std > 0.05)": texture > 0.05, "teacher edge (step > 0.05)": edge > 0.05,
             "flat (teacher step < 0.01)": edge < 0.01}
    with torch.no_grad():
        images = {"student": student.half_resolution(val.inputs)[:, :3],
                  "filter": self_guided_smooth(x_lo, **SMOOTH_BASE)}
    rows = []
    for kind, mask in kinds.items():
        row = {"pixels": kind, "share_of_pixels_pct": round(100 * float(mask.float().mean()), 1)}
        for name, image in images.items():
            err = ((image - smooth) ** 2).mean(1, keepdim=True)
            row[f"{name}_error_share_pct"] = round(100 * float(err[mask].sum() / err.sum()), 1)
            row[f"{name}_psnr"] = round(float(-10 * torch.log10(err[mask].mean())), 2)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    from mobileunet.checkpoint import load_checkpoint
    from mobileunet.env import data_dir
    from mobileunet.photos import PairSpec, teacher_pairs
    from mobileunet.tables import format_table, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=data_dir() / "checkpoints" / "effect_student.pt")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    pairs = {"training": teacher_pairs(PairSpec("train", 384, 160, 0, 0.5), progress=False),
             "held-out": teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)}
    student, _ = load_checkpoint(args.checkpoint)
    student.eval()
    out = {"command": "python benchmarks/effect_generalisation.py", "checkpoint": args.checkpoint.name,
           "fit": fit_rows(student, pairs), "where": where_rows(student, pairs["held-out"]),
           "seconds": round(time.perf_counter() - start)}
    md = (f"# Effect student: what it learns from its training photos\n\nCommand: `{out['command']}` "
          f"({out['seconds']} s); checkpoint `{out['checkpoint']}`; pairs 160x160, seed 0.\n\n"
          f"Half-resolution smoothing against the teacher's (pooled 2x2), and the final image against the "
          f"teacher, PSNR (dB):\n\n{format_table(out['fit'])}\n\n"
          f"Held-out pairs: where the smoothing's squared error is (the kinds overlap: a textured pixel can be "
          f"flat in the teacher's image):\n\n{format_table(out['where'])}\n")
    write_results(RESULTS, "effect_generalisation", out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
