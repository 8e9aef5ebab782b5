"""``python -m mobileunet distill``: train a student with a teacher's help on the cells (lesson 05), or on
your own images and masks (``--data DIR``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from ..checkpoint import load_checkpoint, sha256
from ..data import CellsDataset
from ..distill import (DistillConfig, distill, hint_cosine, hint_mse, logit_mse, soft_target_kl,
                       weighted_soft_target_kl)
from ..manifest import manifest_path, read_manifest, verify_checkpoint, write_manifest
from ..metrics import gap_closed
from .args import check_output, fraction, hint_pair, nonneg_float, nonneg_int, positive_float, shipped
from .runs import end_run, is_main, start_run
from .train import BUILDERS, add_run_args, budget, build_model, finish_cells_run, resume_options, run_data

SOFT_LOSSES = {"kl": soft_target_kl, "weighted_kl": weighted_soft_target_kl, "logit_mse": logit_mse}
HINT_LOSSES = {"mse": hint_mse, "cosine": hint_cosine}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet distill``."""
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint (default: the shipped data/checkpoints/unet_teacher_cells.pt)")
    p.add_argument("--student", choices=BUILDERS, default="default_student", metavar="NAME",
                   help=f"student builder from mobileunet.models: {', '.join(BUILDERS)} (default: %(default)s)")
    g = p.add_argument_group("what the teacher teaches (all off by default: that is plain training)")
    g.add_argument("--soft-weight", type=fraction, default=0.0,
                   help="share of the soft-target loss, 0..1; the hard-label loss gets the rest")
    g.add_argument("--temperature", type=positive_float, default=4.0, help="soft-target temperature T")
    g.add_argument("--soft-loss", choices=tuple(SOFT_LOSSES), default="kl",
                   help="kl: T^2 * Bernoulli KL of softened probabilities; weighted_kl: the same, "
                        "pixels weighted by the border weight map; logit_mse: logit matching")
    g.add_argument("--hint", type=hint_pair, action="append", default=[], metavar="TEACHER:STUDENT",
                   help="a feature-hint pair of module names, e.g. ups.2:decoder.blocks.3 (repeatable)")
    g.add_argument("--hint-weight", type=nonneg_float, default=None,
                   help="weight of the hint loss (default 1.0 when --hint is given)")
    g.add_argument("--hint-loss", choices=tuple(HINT_LOSSES), default="mse", help="hint loss (default: mse)")
    g.add_argument("--unlabelled", type=nonneg_int, default=0, metavar="N",
                   help="extra unlabelled images the teacher labels and the student trains on")
    g.add_argument("--no-verify", action="store_true",
                   help="distil from the teacher even if its sha256 differs from its manifest's")
    g.add_argument("--teacher-whole-images", action="store_true",
                   help="soft targets from one teacher pass over each whole training image, cropped with "
                        "it (about twice as fast a step; no --hint)")
    g.add_argument("--scratch", type=Path, default=None, metavar="RUN.pt",
                   help="a scratch run of the same budget (from train): report the share of the "
                        "scratch-to-teacher IoU gap this student closes, from the two manifests")
    add_run_args(p)


def run(args: argparse.Namespace) -> int:
    hint_weight = args.hint_weight if args.hint_weight is not None else (1.0 if args.hint else 0.0)
    if hint_weight > 0 and not args.hint:
        raise ValueError(f"--hint-weight {hint_weight} needs at least one --hint TEACHER:STUDENT, "
                         f"e.g. --hint ups.2:decoder.blocks.3")
    if args.hint and hint_weight == 0:
        raise ValueError("--hint-weight 0 would ignore the --hint pairs: drop them or give a weight > 0")
    teacher_path = args.teacher or shipped("unet_teacher_cells.pt")
    if args.data is not None and (args.unlabelled or args.scratch is not None):
        flag = "--unlabelled" if args.unlabelled else "--scratch"
        raise ValueError(f"{flag} works on the generated cells (their pool, their validation split), not with "
                         f"--data {args.data}: drop {flag}")
    if not args.resume:
        check_output(args.out, [teacher_path, args.scratch], force=args.force)
    start_run(args)
    scratch = _scratch_run(args, teacher_path) if args.scratch is not None else None
    cfg = DistillConfig(**budget(args, desc=f"distill {args.student}"),
                        soft_weight=args.soft_weight, temperature=args.temperature,
                        soft_loss=SOFT_LOSSES[args.soft_loss], hints=tuple(args.hint), hint_weight=hint_weight,
                        hint_loss=HINT_LOSSES[args.hint_loss], teacher_on_whole_images=args.teacher_whole_images)
    resuming = resume_options(args)
    data = run_data(args)
    if not args.no_verify:
        verify_checkpoint(teacher_path)
    teacher, _ = load_checkpoint(teacher_path)
    _check_teacher_channels(args, teacher, teacher_path, data["channels"])
    unlabelled = None
    if args.unlabelled:
        unlabelled = CellsDataset("unlabelled", args.unlabelled, args.size, args.data_seed)
        data["spec"]["unlabelled"] = {"split": "unlabelled", "n": args.unlabelled, "size": args.size,
                                      "seed": args.data_seed, "labels": "the teacher's"}
    student = build_model(args.student, args.seed, data["channels"])
    hist = distill(student, teacher, data["train"], data["val"], cfg, unlabelled=unlabelled, **resuming)
    if is_main():
        _finish(args, student, hist, data, teacher_path, scratch)
        args.out.with_suffix(".state.pt").unlink(missing_ok=True)   # complete: nothing left to resume
    end_run()
    return 0


def _check_teacher_channels(args, teacher, teacher_path: Path, channels: int) -> None:
    first = next((m for m in teacher.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != channels:
        source = f"--data {args.data}" if args.data is not None else "the cells"
        raise ValueError(f"the teacher {teacher_path} takes {first.in_channels}-channel images, but {source} "
                         f"has {channels}-channel ones: train a teacher on the same data first (python -m "
                         f"mobileunet train --data DIR --out teacher.pt) and pass --teacher teacher.pt")


def _finish(args, student, hist: dict, data: dict, teacher_path: Path, scratch: dict | None) -> None:
    teacher_info = {"file": str(teacher_path), "sha256": sha256(teacher_path)}
    manifest = finish_cells_run(args, student, hist, data, {"builder": args.student, "teacher": teacher_info})
    if scratch is not None:
        if scratch["teacher_iou"] > scratch["iou"]:
            share = gap_closed(manifest["metrics"]["iou"], scratch["iou"], scratch["teacher_iou"])
            print(f"closes {share:.0%} of the IoU gap from scratch ({scratch['iou']:.4f}, {args.scratch}) "
                  f"to the teacher ({scratch['teacher_iou']:.4f})")
        else:
            share = None
            print(f"no gap to close: the scratch run ({scratch['iou']:.4f}) scores at least the teacher's "
                  f"IoU ({scratch['teacher_iou']:.4f})")
        manifest["gap_closed"] = {**scratch, "share": share}
        write_manifest(args.out, manifest)


def _scratch_run(args: argparse.Namespace, teacher_path: Path) -> dict:
    """The scratch run's and the teacher's IoU from their manifests, both scored on this run's validation split."""
    scratch = read_manifest(args.scratch)
    if scratch is None:
        raise ValueError(f"--scratch {args.scratch}: no manifest {manifest_path(args.scratch)} beside it; "
                         f"give a checkpoint written by 'python -m mobileunet train'")
    teacher_manifest = read_manifest(teacher_path)
    if teacher_manifest is None:
        raise ValueError(f"--scratch needs the teacher's manifest too: none at {manifest_path(teacher_path)}")
    for name, m in (("--scratch", scratch), ("the teacher", teacher_manifest)):
        if m.get("data", {}).get("val") != {"split": "val", "n": args.n_val, "size": args.size,
                                             "seed": args.data_seed}:
            raise ValueError(f"{name}'s manifest was scored on another validation split "
                             f"({m.get('data', {}).get('val')}): use the same --n-val, --size, --data-seed")
    return {"file": str(args.scratch), "iou": scratch["metrics"]["iou"],
            "teacher_iou": teacher_manifest["metrics"]["iou"]}
