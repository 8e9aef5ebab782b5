"""Where the effect student's error can come from (lesson 06): its design's ceiling, and its start.

    python benchmarks/effect_ceiling.py      # about a minute on one core (the held-out pairs are cached)

The guided student draws two things at half resolution, the smoothed image and
the lightness the lines come from, and then applies the teacher's cheap steps
exactly (``GuidedEffectStudent``). So its error splits into what it draws and
what the design loses. On the 48 held-out pairs (160x160, seed 0), against the
teacher, this scores:

* the teacher recomposed from its own intermediate images
  (``effects.smoothing_stages``) by the exact quantiser and line step: the
  check that the cheap steps are the teacher's;
* the design's ceiling: the teacher's intermediate images, 2x2-pooled, pushed
  through the student's own half-resolution quantiser, guided lift and line
  step, so a network that drew them perfectly; and the same with a plain
  bilinear resize instead of the lift;
* the ceiling with the shipped student's lightness and the teacher's smoothing,
  and the other way round: which of the two things it draws costs more; and
  the self-guided filter's smoothing with the teacher's lightness, and with its
  own CIELAB lightness: the cartoon with no network at all, the baseline the
  network has to beat;
* at half resolution, against the teacher's pooled smoothing: the input, the
  self-guided filter (``models.self_guided_smooth``) over a grid of passes,
  radii and ``eps``, scored on the 384 training pairs and on the held-out ones
  (the best on the training pairs is ``models.SMOOTH_BASE``), and the shipped
  student's own smoothed image.

Writes ``benchmarks/results/effect_ceiling.{json,md}``.
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mobileunet.checkpoint import load_checkpoint
from mobileunet.effects import cielab_lightness, lines_from_lightness, quantise_lightness
from mobileunet.env import data_dir
from mobileunet.metrics import psnr
from mobileunet.models import SMOOTH_BASE, self_guided_smooth
from mobileunet.photos import PairSpec, teacher_hints, teacher_pairs
from mobileunet.tables import format_table, write_results

RESULTS = Path(__file__).parent / "results"
pool = lambda t: F.avg_pool2d(t, 2, ceil_mode=True)  # noqa: E731


def compose(student, x: torch.Tensor, smooth_lo: torch.Tensor, light_lo: torch.Tensor, lift: str = "guided"):
    """The student's fixed steps on given half-resolution drawings; ``lift="bilinear"`` swaps the guided
    lift for a plain resize (the quantiser and the line step as the student's)."""
    drawn = torch.cat([smooth_lo, light_lo], 1)
    if lift == "guided":
        return student.after_half_resolution(x, drawn)
    y = torch.cat([quantise_lightness(smooth_lo), light_lo], 1)
    y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    return (y[:, :3] * lines_from_lightness(y[:, 3:])).clamp(0, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=data_dir() / "checkpoints" / "effect_student.pt")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    val = teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)
    x, target, hints = val.inputs, val.targets, teacher_hints(val)
    student, _ = load_checkpoint(args.checkpoint)
    student.eval()
    score = lambda a, b: round(float(psnr(a, b).mean()), 2)  # noqa: E731
    smooth, light = pool(hints[:, :3]), pool(hints[:, 3:])
    with torch.no_grad():
        drawn = student.half_resolution(x)
        filtered = self_guided_smooth(pool(x), **SMOOTH_BASE)
        rows = [
            {"image": "teacher recomposed from its own stages (full resolution)",
             "psnr": score((quantise_lightness(hints[:, :3]) * lines_from_lightness(hints[:, 3:])).clamp(0, 1),
                           target)},
            {"image": "ceiling: the teacher's stages, pooled, through the guided lift",
             "psnr": score(compose(student, x, smooth, light), target)},
            {"image": "ceiling with a bilinear resize instead of the lift",
             "psnr": score(compose(student, x, smooth, light, "bilinear"), target)},
            {"image": "the teacher's smoothing + the student's lightness",
             "psnr": score(compose(student, x, smooth, drawn[:, 3:]), target)},
            {"image": "the student's smoothing + the teacher's lightness",
             "psnr": score(compose(student, x, drawn[:, :3], light), target)},
            {"image": "the self-guided filter's smoothing + the teacher's lightness",
             "psnr": score(compose(student, x, filtered, light), target)},
            {"image": "no network: the filter's smoothing, the lightness of it (CIELAB)",
             "psnr": score(compose(student, x, filtered, cielab_lightness(filtered)), target)},
            {"image": "the student (shipped)", "psnr": score(student(x), target)},
        ]
        x_lo = pool(x)
        train = teacher_pairs(PairSpec("train", 384, 160, 0, 0.5), progress=False)
        train_lo, train_smooth = pool(train.inputs), pool(teacher_hints(train)[:, :3])
        grid = [{"passes": n, "radius": r, "eps": e,
                 "train_psnr": score(self_guided_smooth(train_lo, n, r, e), train_smooth),
                 "held_out_psnr": score(self_guided_smooth(x_lo, n, r, e), smooth)}
                for n, r, e in itertools.product((1, 2, 3, 4), (1, 2, 3), (3e-3, 1e-2, 3e-2, 1e-1))]
        half = [{"image": "the input", "psnr": score(x_lo, smooth)},
                {"image": f"self-guided filter {SMOOTH_BASE}",
                 "psnr": score(self_guided_smooth(x_lo, **SMOOTH_BASE), smooth)},
                {"image": "the shipped student's smoothed image", "psnr": score(drawn[:, :3], smooth)}]
    grid.sort(key=lambda r: -r["train_psnr"])
    out = {"command": "python benchmarks/effect_ceiling.py", "checkpoint": str(args.checkpoint.name),
           "pairs": "48 held-out 160x160 (PairSpec('val', 48, 160, 0, 0.5))", "vs_teacher": rows,
           "half_resolution_vs_teacher_smoothing": half, "self_guided_grid_best": grid[:8],
           "seconds": round(time.perf_counter() - start)}
    md = (f"# Effect student: its design's ceiling and its start\n\nCommand: `{out['command']}` "
          f"({out['seconds']} s); {out['pairs']}; checkpoint `{out['checkpoint']}`.\n\n"
          f"PSNR (dB) against the teacher:\n\n{format_table(rows)}\n\n"
          f"Half resolution, PSNR (dB) against the teacher's smoothing, 2x2-pooled:\n\n{format_table(half)}\n\n"
          f"The self-guided filter's grid (passes 1-4, radius 1-3, eps 3e-3-0.1) against the teacher's pooled "
          f"smoothing, best eight on the 384 training pairs:\n\n"
          f"{format_table(grid[:8])}\n")
    write_results(RESULTS, "effect_ceiling", out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
