"""Two teachers, one student (lesson 06): scikit-image's sheared bilateral filter against the centred one.

    python benchmarks/effect_teachers.py      # about 15 minutes on 2 cores (four 800-step students)

The cartoon's expensive step is four bilateral passes. scikit-image reads its
table of spatial weights with the wrong width, so its filter averages pixels a
few away instead of around each pixel (``effects.bilateral``); the course's
teacher up to ``EFFECT_VERSION`` 2 used it, and every student of it stopped
near 26 dB. ``CartoonParams(centred=False)`` still draws that teacher. For each
of the two teachers this script measures, on its own pairs (384 training /
48 held-out, 160x160, seed 0):

* where one pass moves a faint dot on grey (the peak of its weights; 0, 0 is
  centred);
* at half resolution, against the teacher's pooled smoothing: the input and
  the self-guided filter the student starts from (``models.SMOOTH_BASE``);
* the shipped student's design trained for 800 steps (both cheap steps exact,
  self-guided start, the network at a quarter of the resolution, L1 + 0.5
  SSIM, batch 8, lr 5e-3, seed 0, 1 thread), scored
  on the held-out pairs and on its training pairs;
* the same student trained on 384 crops of the held-out photos themselves
  (``PairSpec("val", 384, 160, seed=1)``), scored on the usual held-out pairs:
  a diagnostic, not a fair student. If even that student cannot draw the
  teacher on photos it was trained on, the fault is not in the data.

Writes ``benchmarks/results/effect_teachers.{json,md}``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
STEPS = 800
TEACHERS = {"scikit-image's table, sheared (EFFECT_VERSION 2)": False, "centred (EFFECT_VERSION 3)": True}


def _pairs(centred: bool, split: str, n: int, seed: int = 0):
    from mobileunet.effects import CartoonParams
    from mobileunet.photos import PairSpec, teacher_pairs
    return teacher_pairs(PairSpec(split, n, 160, seed, 0.5), CartoonParams(centred=centred), progress=False)


def train_student(job: tuple) -> dict:
    """``job = (centred, trained_on)``: the shipped design, 800 steps on that teacher's pairs, scored held-out."""
    from mobileunet.effect_distill import EffectConfig, distill_effect, evaluate_effect
    from mobileunet.env import set_seed
    from mobileunet.models import guided_effect_student

    centred, trained_on = job
    torch.set_num_threads(1)
    train = _pairs(centred, "train", 384) if trained_on == "training photos" else _pairs(centred, "val", 384, 1)
    val = _pairs(centred, "val", 48)
    set_seed(0)
    model = guided_effect_student(exact_quantise=True, smooth_base=True, scale=4)
    start = time.perf_counter()
    distill_effect(model, train, EffectConfig(steps=STEPS, batch_size=8, lr=5e-3, crop=None, seed=0, l1=1.0,
                                              ssim=0.5, eval_every=STEPS, desc=f"centred={centred} {trained_on}"))
    model.eval()
    held, fit = evaluate_effect(model, val), evaluate_effect(model, train)
    return {"psnr": round(held["psnr"], 2), "ssim": round(held["ssim"], 3), "line_f1": round(held["line_f1"], 3),
            "train_psnr": round(fit["psnr"], 2), "train_s": round(time.perf_counter() - start)}


def peak_offset(centred: bool) -> tuple[int, int]:
    """Where one bilateral pass (sigma 2, as the cartoon's) puts the most weight, relative to the pixel."""
    from mobileunet.effects import CartoonParams, bilateral

    p = CartoonParams(centred=centred)
    dot = np.full((31, 31, 3), 0.5)
    dot[15, 15] += 1e-4
    k = bilateral(dot, p.sigma_spatial, p.sigma_color, centred)[..., 0]
    y, x = np.unravel_index(int(k.argmax()), k.shape)
    return 15 - int(y), 15 - int(x)                                 # the output at p weighs p + offset most


def main(argv=None) -> int:
    from mobileunet.metrics import psnr
    from mobileunet.models import SMOOTH_BASE, self_guided_smooth
    from mobileunet.photos import teacher_hints
    from mobileunet.tables import format_table, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    torch.set_num_threads(1)
    start = time.perf_counter()
    jobs = [(c, on) for c in TEACHERS.values() for on in ("training photos", "held-out photos")]
    for centred, _ in jobs[::2]:                          # make each teacher's pairs once, before the workers
        _pairs(centred, "train", 384), _pairs(centred, "val", 384, 1)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        trained = dict(zip(jobs, pool.map(train_student, jobs)))
    score = lambda a, b: round(float(psnr(a.clamp(0, 1), b).mean()), 2)  # noqa: E731
    rows = []
    for name, centred in TEACHERS.items():
        val = _pairs(centred, "val", 48)
        smooth, x_lo = F.avg_pool2d(teacher_hints(val)[:, :3], 2), F.avg_pool2d(val.inputs, 2)
        own, diag = trained[(centred, "training photos")], trained[(centred, "held-out photos")]
        rows.append({"teacher": name, "peak_offset_px": "%+d, %+d" % peak_offset(centred),
                     "input_vs_smoothing": score(x_lo, smooth),
                     "filter_vs_smoothing": score(self_guided_smooth(x_lo, **SMOOTH_BASE), smooth),
                     "student_psnr": own["psnr"], "student_ssim": own["ssim"], "student_line_f1": own["line_f1"],
                     "student_train_psnr": own["train_psnr"], "trained_on_held_out_photos_psnr": diag["psnr"],
                     "train_s": own["train_s"] + diag["train_s"]})
    out = {"command": "python benchmarks/effect_teachers.py", "steps": STEPS, "smooth_base": SMOOTH_BASE,
           "seconds": round(time.perf_counter() - start), "rows": rows}
    md = (f"# Effect student: two teachers\n\nCommand: `{out['command']}` ({out['seconds']} s); 48 held-out "
          f"160x160 pairs of each teacher; students of the shipped design, {STEPS} steps; the filter is "
          f"`self_guided_smooth(**{SMOOTH_BASE})` at half resolution. PSNR (dB) against each one's own "
          f"teacher:\n\n{format_table(rows)}\n")
    write_results(RESULTS, "effect_teachers", out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
