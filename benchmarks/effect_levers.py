"""What each lever bought the effect student (lesson 06): the same short budget, one change at a time.

    python benchmarks/effect_levers.py                 # 5 students x 800 steps, 2 at a time: ~15 min on 2 cores
    python benchmarks/effect_levers.py --steps 100     # a quick look
    python benchmarks/effect_levers.py --time-only     # keep the scores, time the students again (~1 min)
    python benchmarks/effect_levers.py --missing       # train only the levers the last results lack, re-time all

Every student trains on the cached teacher pairs (384 training / 48 held-out,
160x160, seed 0) for the same steps, batch 8, lr 5e-3, L1 + 0.5 SSIM, seed 0,
one CPU thread each, then is scored on the held-out pairs (PSNR, SSIM, line F1
against the teacher) and on its own training pairs. A lever may change that recipe (the fifth item of its
entry in ``LEVERS``): ``steps: 0`` scores a student untrained, ``hint`` teaches it the teacher's intermediate
images (``EffectConfig.hint``; with ``l1 = ssim = 0``, those alone). All of them are then
timed on lesson 06's 256x256 photo frame (``effect_distill.frame256``) in ONNX Runtime,
1 thread, in the same interleaved rounds (``profile.measure_latency``). Writes ``benchmarks/results/effect_levers.json``
and ``.md``; lesson 06 prints the table from there.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

LEVERS = [
    # name, builder, builder kwargs, dead-leaves images
    ("thin full-resolution student (effect_student)", "effect_student", {}, 0),
    ("+ 8 dead-leaves images in training", "effect_student", {}, 8),
    ("guided half-resolution student, wider decoder", "guided_effect_student", {"exact_lines": False}, 0),
    ("guided student + exact line step", "guided_effect_student", {"exact_lines": True}, 0),
    ("guided + exact lines + 8 dead-leaves images", "guided_effect_student", {"exact_lines": True}, 8),
    ("guided + exact lines + exact quantiser", "guided_effect_student", {"exact_lines": True, "exact_quantise": True},
     0),
    # a fifth item changes the recipe: steps 0 scores the untrained student, hint > 0 adds the loss on the
    # teacher's intermediate images (l1 = ssim = 0: on them alone)
    ("both exact steps, self-guided filter start, untrained (the filter alone)", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True}, 0, {"steps": 0}),
    ("both exact steps, taught by hints alone", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True}, 0, {"l1": 0.0, "ssim": 0.0, "hint": 1.0}),
    ("both exact steps + self-guided start, L1 + SSIM", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True}, 0),
    ("both exact steps + self-guided start, hints alone", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True}, 0, {"l1": 0.0, "ssim": 0.0, "hint": 1.0}),
    ("both exact steps + self-guided start, L1 + SSIM, lighter decoder", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True, "decoder_channels": [96, 48, 32, 24, 8],
      "expand": 2}, 0),
    ("both exact steps + self-guided start, L1 + SSIM, wider decoder", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True, "decoder_channels": [96, 48, 32, 32, 24]},
     0),
    ("both exact steps + self-guided start, L1 + SSIM + hints", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True}, 0, {"hint": 1.0}),
    ("both exact steps + self-guided start, L1 + SSIM, network at quarter resolution", "guided_effect_student",
     {"exact_lines": True, "exact_quantise": True, "smooth_base": True, "scale": 4}, 0),
]


def train_spec(dead_leaves: int):
    """A lever's training pairs: 384 of 160x160, seed 0, with ``dead_leaves`` procedural images."""
    from mobileunet.photos import PairSpec
    return PairSpec("train", 384, 160, 0, 0.5, dead_leaves=dead_leaves)


def build(builder: str, kwargs: dict):
    from mobileunet import models
    return getattr(models, builder)(**kwargs)


def run_lever(lever: tuple, steps: int) -> dict:
    import torch

    from mobileunet.effect_distill import EffectConfig, distill_effect, evaluate_effect
    from mobileunet.env import set_seed
    from mobileunet.photos import PairSpec, teacher_pairs

    torch.set_num_threads(1)
    name, builder, kwargs, dead_leaves, recipe = (*lever, {})[:5]
    train = teacher_pairs(train_spec(dead_leaves), progress=False)
    val = teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)
    set_seed(0)
    model = build(builder, kwargs)
    recipe = {"steps": steps, "l1": 1.0, "ssim": 0.5, **recipe}
    start = time.perf_counter()
    if recipe["steps"]:
        cfg = EffectConfig(batch_size=8, lr=5e-3, crop=None, seed=0, eval_every=recipe["steps"], desc=name, **recipe)
        distill_effect(model, train, cfg)
    seconds = time.perf_counter() - start
    model.eval()
    held, fit = evaluate_effect(model, val), evaluate_effect(model, train)
    return {"lever": name, "builder": builder, "kwargs": kwargs, "dead_leaves": dead_leaves, "recipe": recipe,
            "train_photos": sorted(train.manifest["photos"]), "psnr": held["psnr"], "ssim": held["ssim"],
            "line_f1": held["line_f1"], "train_psnr": fit["psnr"], "train_s": round(seconds, 1)}


def main(argv=None) -> int:
    import torch

    from mobileunet.metrics import line_f1, line_mask
    from mobileunet.effect_distill import LINE_DARKER, frame256
    from mobileunet.photos import PairSpec, teacher_hints, teacher_pairs
    from mobileunet.profile import count_flops, count_params, measure_latency
    from mobileunet.tables import format_table, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--workers", type=int, default=2)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--time-only", action="store_true",
                     help="keep the scores of the last run (results/effect_levers.json) and time the students again")
    how.add_argument("--missing", action="store_true",
                     help="keep the last run's scores, train only the levers it lacks, then time all students again")
    args = p.parse_args(argv)
    if args.steps < 1 or args.workers < 1:
        p.error("--steps and --workers must be at least 1")
    start = time.perf_counter()
    last = None
    if args.time_only or args.missing:
        last = json.loads((RESULTS / "effect_levers.json").read_text())
        args.steps = last["steps"]
    if args.time_only:
        rows = last["rows"]
    else:
        kept = {r["lever"]: r for r in (last or {"rows": []})["rows"]}
        todo = [lever for lever in LEVERS if lever[0] not in kept]
        for lever in todo:                               # make the pairs once, before the workers read them
            train = teacher_pairs(train_spec(lever[3]), progress=False)
            if len(lever) > 4 and lever[4].get("hint"):
                teacher_hints(train)                     # and the teacher's intermediate images
        val = teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            trained = dict(zip([lever[0] for lever in todo], pool.map(run_lever, todo, [args.steps] * len(todo))))
        identity = line_f1(line_mask(val.inputs, LINE_DARKER), line_mask(val.targets, LINE_DARKER))["f1"]
        from mobileunet.metrics import psnr, ssim
        rows = [{"lever": "input, unchanged (the identity)", "psnr": float(psnr(val.inputs, val.targets).mean()),
                 "ssim": float(ssim(val.inputs, val.targets).mean()), "line_f1": identity}]
        rows += [trained.get(lever[0]) or kept[lever[0]] for lever in LEVERS]
    timed_again = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) if last else None
    models = {r["lever"]: build(r["builder"], r["kwargs"]).eval() for r in rows[1:]}
    x = torch.zeros(1, 3, 256, 256)
    torch.set_num_threads(1)
    timing = measure_latency(models, (1, 3, 256, 256), threads=(1,), runtimes=("onnxruntime",),
                             warmup=3, repeats=20, example=frame256()[None])   # a photo: noise is slower
    by_name = {r["model"]: r for r in timing.rows}
    for r in rows[1:]:
        t = by_name[r["lever"]]
        r.update(ort_ms=t["median_ms"], ort_iqr_ms=t["iqr_ms"], params=count_params(models[r["lever"]]),
                 gflops=count_flops(models[r["lever"]], x) / 1e9)
    out = {"command": "python benchmarks/effect_levers.py" + (f" --steps {args.steps}" if args.steps != 800 else ""),
           "steps": args.steps, "recipe": "batch 8, lr 5e-3, L1 + 0.5 SSIM, whole 160x160 pairs, seed 0, 1 thread",
           "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "seconds": round(time.perf_counter() - start), "rows": rows}
    if args.time_only:
        out.update(seconds=last["seconds"],
                   timed_again=f"{timed_again} (python benchmarks/effect_levers.py --time-only)")
        if "added" in last:                              # the levers a --missing run added, and what they took
            out["added"] = last["added"]
    elif args.missing:
        added = [lever[0] for lever in LEVERS if lever[0] not in {r["lever"] for r in last["rows"]}]
        out.update(seconds=last["seconds"], added={"levers": added, "seconds": round(time.perf_counter() - start)},
                   timed_again=f"{timed_again} (python benchmarks/effect_levers.py --missing)")
    cols = ["lever", "psnr", "ssim", "line_f1", "train_psnr", "ort_ms", "ort_iqr_ms", "gflops", "train_s"]
    table = format_table(rows, columns=cols, floatfmt=".3g")
    md = (
        f"# Effect student levers\n\nCommand: `{out['command']}`; {args.steps} steps each, {out['recipe']}; "
        f"held-out pairs (chelsea, coffee) against the teacher; ONNX Runtime ms for one 256x256 frame, 1 thread, "
        f"interleaved. {out['seconds']} s."
        + (f" Added later, same recipe: {', '.join(out['added']['levers'])} ({out['added']['seconds']} s)."
           if out.get("added") else "")
        + (f" Latencies measured again {out['timed_again']}." if timed_again else "") + f"\n\n{table}\n")
    write_results(RESULTS, "effect_levers", out, md, echo=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
