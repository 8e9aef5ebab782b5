"""``python -m mobileunet effect``: distil the cartoon effect into a MobileNet UNet (lesson 06).

The command half of ``mobileunet.effect_distill``: it parses the options, makes
(or loads) the teacher's pairs, trains with ``effect_distill.distill_effect``,
saves, re-scores the stored checkpoint, times it against the teacher and
writes the manifest. The library never imports this module.
"""
from __future__ import annotations

import argparse
import os


from .. import effect_distill as ed
from .. import models
from ..effect_distill import EFFECT_STUDENTS, PERCEPTUAL_NETS, EffectConfig
from ..effects import CartoonParams
from ..env import get_device, set_seed
from ..photos import TRAIN_PHOTOS, VAL_PHOTOS, EffectPairs, PairSpec, load_photo, teacher_pairs
from .args import (add_precision_args, check_output, checkpoint_path, fraction, nonneg_float, nonneg_int,
                   positive_float, positive_int, seed, threads)
from .runs import end_run, finish_run, is_main, local_device, saved_state, start_run, state_saver


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet effect``."""
    g = p.add_argument_group("teacher pairs (cached under data/cache/)")
    g.add_argument("--n-train", type=positive_int, default=384, help="training pairs (default: %(default)s)")
    g.add_argument("--n-val", type=positive_int, default=48, help="held-out pairs (default: %(default)s)")
    g.add_argument("--size", type=positive_int, default=160, help="pair side in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=seed, default=0, help="(default: %(default)s)")
    g.add_argument("--occlusion", type=fraction, default=0.5,
                   help="share of inputs with an occluder (default: %(default)s)")
    g.add_argument("--extra-pets", type=nonneg_int, default=0,
                   help="add up to N Oxford-IIIT Pet photos to training, if downloaded (default: %(default)s)")
    g.add_argument("--dead-leaves", type=nonneg_int, default=0, metavar="N",
                   help="add N procedural dead-leaves images to the training photos (default: %(default)s)")
    _student_arguments(p)
    g = p.add_argument_group("loss weights")
    g.add_argument("--l1", type=nonneg_float, default=1.0)
    g.add_argument("--ssim", type=nonneg_float, default=0.5)
    g.add_argument("--hint", type=nonneg_float, default=0.0,
                   help="with --exact-quantise: weight of the loss on the teacher's intermediate images (its "
                        "smoothing and the lines' lightness; hints cached under data/cache/); --l1 0 --ssim 0 "
                        "--hint 1 trains on them alone, about 3x faster a step (default: %(default)s)")
    g.add_argument("--perceptual", type=nonneg_float, default=0.0)
    g.add_argument("--perceptual-net", choices=PERCEPTUAL_NETS, default="random")
    g.add_argument("--adversarial", type=nonneg_float, default=0.0)
    g.add_argument("--direct", action="store_true", help="predict the image, not a residual on the input")
    g = p.add_argument_group("training budget")
    g.add_argument("--steps", type=positive_int, default=2000, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=8, help="(default: %(default)s)")
    g.add_argument("--crop", type=nonneg_int, default=0,
                   help="training tile in pixels; 0 = whole pairs, the context the teacher saw (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=2e-3, help="(default: %(default)s)")
    g.add_argument("--seed", type=seed, default=0, help="(default: %(default)s)")
    g.add_argument("--threads", type=threads, default=None, help="torch CPU threads (at most the machine's cores)")
    add_precision_args(g)
    g.add_argument("--time-repeats", type=positive_int, default=5, help="teacher runs timed (default: %(default)s)")
    g.add_argument("--eval-every", type=positive_int, default=500,
                   help="score the held-out pairs every N steps: the manifest's learning curve (default: %(default)s)")
    g.add_argument("--save-every", type=positive_int, default=250,
                   help="write the training state NAME.state.pt every N steps (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue from NAME.state.pt, written by an interrupted run of the same command")
    g.add_argument("--out", type=checkpoint_path, required=True, metavar="NAME.pt",
                   help="checkpoint NAME.pt; the manifest is written to NAME.json")
    g.add_argument("--force", action="store_true", help="replace an existing --out (a shipped checkpoint too)")


def _student_arguments(p: argparse.ArgumentParser) -> None:
    """The student's options of ``python -m mobileunet effect``."""
    g = p.add_argument_group("the student")
    g.add_argument("--student", choices=EFFECT_STUDENTS, default="effect_student",
                   help="effect_student: full resolution, thin decoder; guided_effect_student: half resolution, "
                        "a wider decoder, lifted by a guided filter (default: %(default)s)")
    g.add_argument("--exact-lines", action="store_true",
                   help="guided_effect_student only: draw the cartoon's ink lines with the teacher's own cheap "
                        "line step, from a lightness the student predicts")
    g.add_argument("--exact-quantise", action="store_true",
                   help="with --exact-lines: quantise the colours with the teacher's own cheap quantiser too, so "
                        "the student learns only the smoothing")
    g.add_argument("--smooth-base", action="store_true",
                   help="with --exact-quantise: the student corrects a cheap self-guided filter's image instead "
                        "of the input (models.self_guided_smooth)")
    g.add_argument("--light-decoder", action="store_true",
                   help="guided_effect_student only: the lighter decoder (models.LIGHT_DECODER: expansion 2, "
                        "8 channels in its last stage): about a fifth faster, 0.2 dB lower (docs/effect_student.md)")
    g.add_argument("--quarter-resolution", action="store_true",
                   help="guided_effect_student only: run the network at a quarter of the frame's width and height "
                        "instead of half (a sixteenth of the pixels), its correction resized to half resolution "
                        "(docs/effect_student.md)")


def run(args) -> int:
    """Make (or load) the pairs, train, save, score the stored checkpoint, time it, write the manifest."""
    check_options(args)
    if not args.resume:
        check_output(args.out, force=args.force)
    start_run(args)
    state_path = args.out.with_suffix(".state.pt")
    state = saved_state(args, state_path) if args.resume else None
    params = CartoonParams()
    specs = {"train": PairSpec("train", args.n_train, args.size, args.data_seed, args.occlusion,
                               extra_pets=args.extra_pets, dead_leaves=args.dead_leaves),
             "val": PairSpec("val", args.n_val, args.size, args.data_seed, args.occlusion)}
    pairs = {k: teacher_pairs(s, params) for k, s in specs.items()}
    set_seed(args.seed)
    light = models.LIGHT_DECODER if args.light_decoder else {}
    student = (models.guided_effect_student(residual=not args.direct, exact_lines=args.exact_lines,
                                            exact_quantise=args.exact_quantise, smooth_base=args.smooth_base,
                                            scale=4 if args.quarter_resolution else 2, **light)
               if args.student == "guided_effect_student" else models.effect_student(residual=not args.direct))
    cfg = EffectConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, crop=args.crop or None,
                       seed=args.seed, l1=args.l1, ssim=args.ssim, hint=args.hint, perceptual=args.perceptual,
                       perceptual_net=args.perceptual_net, adversarial=args.adversarial, desc="effect",
                       eval_every=args.eval_every, device=local_device(get_device().type),
                       precision=args.precision, channels_last=args.channels_last)

    hist = ed.distill_effect(student, pairs["train"], cfg, val_pairs=pairs["val"], state=state,
                             save_every=args.save_every, save_state=state_saver(args, state_path))
    if not is_main():                                      # one of several processes: rank 0 writes
        end_run()
        return 0
    data = {"dataset": "scikit-image photos -> effects.cartoon pairs (mobileunet.photos.teacher_pairs)",
            **{k: {**s.__dict__, "hash": pairs[k].manifest["hash"], "photos": sorted(pairs[k].manifest["photos"])}
               for k, s in specs.items()}}
    training = {**hist["config"], "threads": args.threads, "seconds": round(hist["seconds"], 1),
                "final_loss": hist["loss"][-1], "resumed": bool(args.resume),
                "curve": {"about": "held-out pairs, scored during training", "step": hist["eval_step"],
                          **{k[4:]: hist[k] for k in ("val_psnr", "val_ssim", "val_line_f1") if k in hist}}}
    speed = []
    check_and_speed = lambda m: _check_and_speed(m, pairs["val"], params, args, speed)  # noqa: E731
    manifest = finish_run(args, student.cpu().eval(), data, {"builder": args.student}, training,
                          lambda m: ed.evaluate_effect(m, pairs["val"]), extra=check_and_speed)
    metrics = manifest["metrics"]
    state_path.unlink(missing_ok=True)                     # the run is complete: nothing left to resume
    end_run()
    best = max(speed[1:], key=lambda r: r["speed-up"])
    print(f"wrote {args.out} ({manifest['checkpoint']['bytes'] / 1e6:.1f} MB): held-out PSNR "
          f"{metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}; teacher {speed[0]['median_ms']:.0f} ms, "
          f"student {best['median_ms']:.1f} ms ({best['runtime']}): {best['speed-up']:.0f}x")
    return 0


def _check_and_speed(reloaded, val: EffectPairs, params: CartoonParams, args: argparse.Namespace,
                     speed: list) -> dict:
    """The manifest's effect, check and speed records for the stored student; the speed rows also go to ``speed``."""
    first = EffectPairs(val.inputs[:ed.CHECK_PAIRS], val.targets[:ed.CHECK_PAIRS], [], {})
    speed[:] = ed.speed_comparison(reloaded, ed.frame256(), params, repeats=args.time_repeats)
    return {"effect": {"name": "cartoon", "params": params.to_dict()},
            "check": {"about": f"the first {ed.CHECK_PAIRS} held-out pairs: PairSpec('val', {ed.CHECK_PAIRS}, "
                               f"size, data_seed) makes the same ones quickly (tests/test_shipped.py)",
                      "n": ed.CHECK_PAIRS, **ed.evaluate_effect(reloaded, first)},
            "speed": {"frame": "256x256, first held-out photo (chelsea) centre", "threads": args.threads,
                      "rows": speed}}


def check_options(args: argparse.Namespace) -> None:
    """Options that contradict each other, refused before any work."""
    if args.crop and args.crop > args.size:
        raise ValueError(f"--crop {args.crop} is larger than --size {args.size}: use --crop <= {args.size}")
    gigabytes = (args.n_train + args.dead_leaves + args.n_val) * 2 * 3 * args.size**2 * 4 / 1e9
    if gigabytes > 4:
        raise ValueError(f"--n-train {args.n_train} + --n-val {args.n_val} pairs of --size {args.size} would hold "
                         f"{gigabytes:.0f} GB in memory (and take the teacher about "
                         f"{(args.n_train + args.n_val) * 0.35 * (args.size / 256) ** 2 / 3600:.0f} hours): keep it "
                         f"under 4 GB (fewer or smaller pairs)")
    smallest = min(min(load_photo(name).shape[:2]) for name in (*TRAIN_PHOTOS, *VAL_PHOTOS))
    if args.size > smallest:
        raise ValueError(f"--size {args.size} is larger than the smallest bundled photo's side ({smallest} px): "
                         f"use --size {smallest} or less")
    if args.n_train < args.batch_size:
        raise ValueError(f"--n-train {args.n_train} is smaller than --batch-size {args.batch_size}: "
                         f"raise --n-train or lower --batch-size")
    for flag in ("exact_lines", "light_decoder", "quarter_resolution"):
        if getattr(args, flag) and args.student != "guided_effect_student":
            raise ValueError(f"--{flag.replace('_', '-')} needs --student guided_effect_student")
    if args.exact_quantise and not args.exact_lines:
        raise ValueError("--exact-quantise needs --exact-lines (and --student guided_effect_student): the cartoon "
                         "draws its lines after quantising")
    if (args.smooth_base or args.hint) and not args.exact_quantise:
        raise ValueError("--smooth-base and --hint need --exact-quantise (and --exact-lines, --student "
                         "guided_effect_student): both are about the smoothed image before the exact steps")
    if args.adversarial and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--adversarial trains a critic that is not shared between processes: run it in one")
    if args.adversarial and (args.resume or args.save_every):
        args.save_every = 0                             # the critic is not in the saved state
        if args.resume:
            raise ValueError("--resume cannot continue a run with --adversarial (its critic is not saved)")
