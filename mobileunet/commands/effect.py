"""``python -m mobileunet effect``: distil the cartoon effect into a MobileNet UNet (lesson 06).

The command half of ``mobileunet.effect_distill``: it parses the options, makes
(or loads) the teacher's pairs, trains with ``effect_distill.distill_effect``,
saves, re-scores the stored checkpoint, times it against the teacher and
writes the manifest. The library never imports this module.
"""
from __future__ import annotations

import argparse

import torch

from .. import effect_distill as ed
from ..effect_distill import EFFECT_STUDENTS, PERCEPTUAL_NETS, EffectConfig
from ..effects import CartoonParams

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet effect``."""
    from ..cli import _checkpoint_path, _nonneg_float, _nonneg_int, _positive_float, _positive_int, _threads

    g = p.add_argument_group("teacher pairs (cached under data/cache/)")
    g.add_argument("--n-train", type=_positive_int, default=384, help="training pairs (default: %(default)s)")
    g.add_argument("--n-val", type=_positive_int, default=48, help="held-out pairs (default: %(default)s)")
    g.add_argument("--size", type=_positive_int, default=160, help="pair side in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=int, default=0, help="(default: %(default)s)")
    g.add_argument("--occlusion", type=float, default=0.5,
                   help="share of inputs with an occluder (default: %(default)s)")
    g.add_argument("--extra-pets", type=_nonneg_int, default=0,
                   help="add up to N Oxford-IIIT Pet photos to training, if downloaded (default: %(default)s)")
    g.add_argument("--dead-leaves", type=_nonneg_int, default=0, metavar="N",
                   help="add N procedural dead-leaves images to the training photos (default: %(default)s)")
    g = p.add_argument_group("the student")
    g.add_argument("--student", choices=EFFECT_STUDENTS, default="effect_student",
                   help="effect_student: full resolution, thin decoder; guided_effect_student: half resolution, "
                        "a wider decoder, lifted by a guided filter (default: %(default)s)")
    g.add_argument("--exact-lines", action="store_true",
                   help="guided_effect_student only: draw the cartoon's ink lines with the teacher's own cheap "
                        "line step, from a lightness the student predicts")
    g = p.add_argument_group("loss weights")
    g.add_argument("--l1", type=_nonneg_float, default=1.0)
    g.add_argument("--ssim", type=_nonneg_float, default=0.5)
    g.add_argument("--perceptual", type=_nonneg_float, default=0.0)
    g.add_argument("--perceptual-net", choices=PERCEPTUAL_NETS, default="random")
    g.add_argument("--adversarial", type=_nonneg_float, default=0.0)
    g.add_argument("--direct", action="store_true", help="predict the image, not a residual on the input")
    g = p.add_argument_group("training budget")
    g.add_argument("--steps", type=_positive_int, default=2000, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, default=8, help="(default: %(default)s)")
    g.add_argument("--crop", type=_nonneg_int, default=0,
                   help="training tile in pixels; 0 = whole pairs, the context the teacher saw (default: %(default)s)")
    g.add_argument("--lr", type=_positive_float, default=2e-3, help="(default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    g.add_argument("--threads", type=_threads, default=None, help="torch CPU threads (at most the machine's cores)")
    g.add_argument("--time-repeats", type=_positive_int, default=5, help="teacher runs timed (default: %(default)s)")
    g.add_argument("--eval-every", type=_positive_int, default=500,
                   help="score the held-out pairs every N steps: the manifest's learning curve (default: %(default)s)")
    g.add_argument("--save-every", type=_positive_int, default=250,
                   help="write the training state NAME.state.pt every N steps (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue from NAME.state.pt, written by an interrupted run of the same command")
    g.add_argument("--out", type=_checkpoint_path, required=True, metavar="NAME.pt",
                   help="checkpoint NAME.pt; the manifest is written to NAME.json")
    g.add_argument("--force", action="store_true", help="replace an existing --out (a shipped checkpoint too)")


def run(args) -> int:
    """Make (or load) the pairs, train, save, score the stored checkpoint, time it, write the manifest."""
    import datetime as _dt
    import platform
    import shlex

    from .. import __version__, models
    from ..checkpoint import load_checkpoint, save_checkpoint, sha256
    from ..cli import check_output
    from ..env import set_seed
    from ..manifest import MANIFEST_VERSION, git_info, write_manifest
    from ..photos import EffectPairs, PairSpec, teacher_pairs
    from ..profile import count_params

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop and args.crop > args.size:
        raise ValueError(f"--crop {args.crop} is larger than --size {args.size}: use --crop <= {args.size}")
    if not args.resume:
        check_output(args.out, force=args.force)
    if args.exact_lines and args.student != "guided_effect_student":
        raise ValueError("--exact-lines needs --student guided_effect_student")
    if args.adversarial and (args.resume or args.save_every):
        args.save_every = 0                             # the critic is not in the saved state
        if args.resume:
            raise ValueError("--resume cannot continue a run with --adversarial (its critic is not saved)")
    state_path = args.out.with_suffix(".state.pt")
    state = None
    if args.resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no training state at {state_path}; run the command without "
                                    f"--resume to start")
        state = torch.load(state_path, weights_only=True)
        if state.get("argv") != _run_argv(args.argv):
            raise ValueError(f"--resume: {state_path} was written by another command "
                             f"({shlex.join(state.get('argv') or [])}): resume with the same options")
        print(f"resuming from {state_path} at step {state['step']} of {state['steps']}")
    git = git_info()
    params = CartoonParams()
    specs = {"train": PairSpec("train", args.n_train, args.size, args.data_seed, args.occlusion,
                               extra_pets=args.extra_pets, dead_leaves=args.dead_leaves),
             "val": PairSpec("val", args.n_val, args.size, args.data_seed, args.occlusion)}
    pairs = {k: teacher_pairs(s, params) for k, s in specs.items()}
    set_seed(args.seed)
    if args.student == "guided_effect_student":
        student = models.guided_effect_student(residual=not args.direct, exact_lines=args.exact_lines)
    else:
        student = models.effect_student(residual=not args.direct)
    cfg = EffectConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, crop=args.crop or None,
                       seed=args.seed, l1=args.l1, ssim=args.ssim, perceptual=args.perceptual,
                       perceptual_net=args.perceptual_net, adversarial=args.adversarial, desc="effect",
                       eval_every=args.eval_every)

    def save_state(s: dict) -> None:
        from ..checkpoint import atomic_save
        atomic_save({**s, "argv": _run_argv(args.argv)}, state_path)

    hist = ed.distill_effect(student, pairs["train"], cfg, val_pairs=pairs["val"], state=state,
                          save_every=args.save_every, save_state=save_state)
    command = "python -m mobileunet " + shlex.join(args.argv)
    data = {"dataset": "scikit-image photos -> effects.cartoon pairs (mobileunet.photos.teacher_pairs)",
            **{k: {**s.__dict__, "hash": pairs[k].manifest["hash"], "photos": sorted(pairs[k].manifest["photos"])}
               for k, s in specs.items()}}
    save_checkpoint(args.out, student.cpu().eval(), {"command": command, "seed": args.seed, "data": data,
                                                     "manifest": args.out.with_suffix(".json").name})
    reloaded, _ = load_checkpoint(args.out)
    metrics = ed.evaluate_effect(reloaded, pairs["val"])
    val = pairs["val"]
    first = EffectPairs(val.inputs[:ed.CHECK_PAIRS], val.targets[:ed.CHECK_PAIRS], [], {})
    check = {"n": ed.CHECK_PAIRS, **ed.evaluate_effect(reloaded, first)}
    speed = ed.speed_comparison(reloaded, ed.frame256(), params, repeats=args.time_repeats)
    manifest = {
        "manifest_version": MANIFEST_VERSION, "command": command, "argv": args.argv, "seed": args.seed,
        "data": data, "effect": {"name": "cartoon", "params": params.to_dict()},
        "model": {"builder": args.student, "arch": type(student).__name__, "config": dict(student.config),
                  "params": count_params(student)},
        "training": {**hist["config"], "threads": torch.get_num_threads(),
                     "seconds": round(hist["seconds"], 1), "final_loss": hist["loss"][-1],
                     "resumed": bool(args.resume),
                     "curve": {"about": "held-out pairs, scored during training", "step": hist["eval_step"],
                               **{k[4:]: hist[k] for k in ("val_psnr", "val_ssim", "val_line_f1") if k in hist}}},
        "metrics": {"split": "val", **metrics},
        "check": {"about": f"the first {ed.CHECK_PAIRS} held-out pairs: PairSpec('val', {ed.CHECK_PAIRS}, size, "
                           f"data_seed) makes the same ones quickly (tests/test_shipped.py)", **check},
        "speed": {"frame": "256x256, first held-out photo (chelsea) centre", "threads": torch.get_num_threads(),
                  "rows": speed},
        "checkpoint": {"file": args.out.name, "bytes": args.out.stat().st_size, "dtype": "float32",
                       "sha256": sha256(args.out)},
        "package_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        **git, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_manifest(args.out, manifest)
    state_path.unlink(missing_ok=True)                     # the run is complete: nothing left to resume
    best = max(speed[1:], key=lambda r: r["speed-up"])
    print(f"wrote {args.out} ({manifest['checkpoint']['bytes'] / 1e6:.1f} MB): held-out PSNR "
          f"{metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}; teacher {speed[0]['median_ms']:.0f} ms, "
          f"student {best['median_ms']:.1f} ms ({best['runtime']}): {best['speed-up']:.0f}x")
    return 0


def _run_argv(argv: list[str]) -> list[str]:
    """The command's options without ``--resume``: what must match for a run to be resumed."""
    return [a for a in argv if a != "--resume"]
