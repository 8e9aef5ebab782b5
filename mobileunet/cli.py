"""The command line: ``python -m mobileunet {train,distill,evaluate,bench,export} ...``.

The notebooks' heavy runs, runnable from a terminal. ``train`` and
``distill`` write a checkpoint (``checkpoint.save_checkpoint``) and, beside
it, a manifest ``<name>.json``: the exact command, seed, data, package
version and git commit, metrics on the validation split of the checkpoint
as stored, and its sha256. The course's shipped checkpoints in
``data/checkpoints/`` were made this way; their manifests say how.

Examples:
    python -m mobileunet train --model unet_teacher --steps 600 --out runs/teacher.pt
    python -m mobileunet distill --teacher data/checkpoints/unet_teacher_cells.pt \\
        --soft-weight 0.5 --hint ups.2:decoder.blocks.3 --hint-weight 1 --out runs/student.pt
    python -m mobileunet evaluate data/checkpoints/student_cells.pt
    python -m mobileunet export data/checkpoints/student_cells.pt --format pte --int8 --out student.pte
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path

from .manifest import (MANIFEST_VERSION, git_info, manifest_path, read_manifest, validation_split,  # noqa: F401
                       verify_checkpoint, write_manifest)


LOSSES = ("weighted_bce", "bce", "dice", "bce_dice")
SOFT_LOSSES = ("kl", "weighted_kl", "logit_mse")
HINT_LOSSES = ("mse", "cosine")
DTYPES = ("float32", "float16")


def _segmentation_builders() -> tuple[str, ...]:
    from .models import builders
    return tuple(builders("segmentation"))


BUILDERS = _segmentation_builders()
"""Model builders the command line can name (``--model``, ``--student``): ``models.builders("segmentation")``."""


def build_model(name: str, seed: int):
    """``mobileunet.models.<name>(in_channels=1, out_channels=1)``, its weights drawn after ``set_seed(seed)``."""
    from .env import set_seed
    from .models import builders
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: use one of {BUILDERS}")
    set_seed(seed)
    return builders("segmentation")[name](in_channels=1, out_channels=1)


# --- argument types ------------------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _nonneg_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _float(text: str) -> float:
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _threads(text: str) -> int:
    import os
    value = _positive_int(text)
    cores = os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more threads than this machine's {cores} cores: use 1-{cores}")
    return value


def _shift(text: str) -> int:
    from .data import MAX_EDGE_SHIFT
    value = _int(text)
    if not 0 <= value <= MAX_EDGE_SHIFT:
        raise argparse.ArgumentTypeError(f"{value} must be a whole number of pixels from 0 to {MAX_EDGE_SHIFT}")
    return value


def _hint(text: str) -> tuple[str, str]:
    teacher, sep, student = text.partition(":")
    if not sep or not teacher or not student:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write TEACHER_MODULE:STUDENT_MODULE, e.g. ups.2:decoder.blocks.3")
    return teacher, student


def _checkpoint_path(text: str) -> Path:
    path = Path(text)
    if path.suffix != ".pt":
        raise argparse.ArgumentTypeError(
            f"{text!r}: name the checkpoint NAME.pt (its manifest goes beside it as NAME.json)")
    return path


# --- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mobileunet",
        description="mobileunet's heavy runs: train a model, distill a student, evaluate a\n"
                    "checkpoint, benchmark models. train and distill write NAME.pt and NAME.json\n"
                    "(the manifest: command, seed, data, git commit, metrics, sha256).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'python -m mobileunet COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model from scratch on the cells data",
                       description="Train a model from scratch on the cells data (lesson 02's recipe) "
                                   "and write NAME.pt + NAME.json.")
    p.add_argument("--model", choices=BUILDERS, default="unet_teacher", metavar="NAME",
                   help=f"model builder from mobileunet.models: {', '.join(BUILDERS)} (default: %(default)s)")
    _add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distill a student from a teacher checkpoint",
                       description="Train a student with a teacher's help (lesson 05): soft targets, "
                                   "feature hints, teacher-labelled extra images. Write NAME.pt + NAME.json.")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint (default: the shipped data/checkpoints/unet_teacher_cells.pt)")
    p.add_argument("--student", choices=BUILDERS, default="default_student", metavar="NAME",
                   help=f"student builder from mobileunet.models: {', '.join(BUILDERS)} (default: %(default)s)")
    g = p.add_argument_group("what the teacher teaches (all off by default: that is plain training)")
    g.add_argument("--soft-weight", type=_fraction, default=0.0,
                   help="share of the soft-target loss, 0..1; the hard-label loss gets the rest")
    g.add_argument("--temperature", type=_positive_float, default=4.0, help="soft-target temperature T")
    g.add_argument("--soft-loss", choices=SOFT_LOSSES, default="kl",
                   help="kl: T^2 * Bernoulli KL of softened probabilities; weighted_kl: the same, "
                        "pixels weighted by the border weight map; logit_mse: logit matching")
    g.add_argument("--hint", type=_hint, action="append", default=[], metavar="TEACHER:STUDENT",
                   help="a feature-hint pair of module names, e.g. ups.2:decoder.blocks.3 (repeatable)")
    g.add_argument("--hint-weight", type=_nonneg_float, default=None,
                   help="weight of the hint loss (default 1.0 when --hint is given)")
    g.add_argument("--hint-loss", choices=HINT_LOSSES, default="mse", help="hint loss (default: mse)")
    g.add_argument("--unlabelled", type=_nonneg_int, default=0, metavar="N",
                   help="extra unlabelled images the teacher labels and the student trains on")
    g.add_argument("--no-verify", action="store_true",
                   help="distil from the teacher even if its sha256 differs from its manifest's")
    g.add_argument("--teacher-whole-images", action="store_true",
                   help="soft targets from one teacher pass over each whole training image, cropped with "
                        "it (about twice as fast a step; no --hint)")
    g.add_argument("--scratch", type=Path, default=None, metavar="RUN.pt",
                   help="a scratch run of the same budget (from train): report the share of the "
                        "scratch-to-teacher IoU gap this student closes, from the two manifests")
    _add_run_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="score a checkpoint on the cells validation split",
                       description="Score a checkpoint on the cells validation split. Without data "
                                   "options it uses the split its manifest names, and compares.")
    p.add_argument("checkpoint", type=Path, help="a .pt file written by train or distill")
    p.add_argument("--n-val", type=_positive_int, default=None, help="validation images (default: manifest's, else 60)")
    p.add_argument("--size", type=_positive_int, default=None, help="image side (default: manifest's, else 128)")
    p.add_argument("--data-seed", type=int, default=None, help="data seed (default: manifest's, else 0)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="score the file even if its sha256 differs from its manifest's")
    p.set_defaults(func=cmd_evaluate)

    _add_module_commands(sub)
    return parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (the generated cells; defaults are lesson 02's full mode)")
    g.add_argument("--n-train", type=_positive_int, metavar="N", default=240,
                   help="training images (default: %(default)s)")
    g.add_argument("--n-val", type=_positive_int, metavar="N", default=60,
                   help="validation images (default: %(default)s)")
    g.add_argument("--size", type=_positive_int, metavar="PX", default=128,
                   help="image side in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=int, metavar="SEED", default=0,
                   help="seed of the generated data (default: %(default)s)")
    g = p.add_argument_group("label noise (lesson 05's regimes; all off by default: clean labels)")
    g.add_argument("--label-miss", type=_fraction, metavar="P", default=0.0,
                   help="leave each cell out of the training masks with probability P, 0..1")
    g.add_argument("--label-dilate", type=_shift, metavar="PX", default=0,
                   help="grow each kept cell's outline by 0..PX pixels (fills the gaps between cells)")
    g.add_argument("--label-erode", type=_shift, metavar="PX", default=0,
                   help="shrink each kept cell's outline by 0..PX pixels")
    g.add_argument("--label-seed", type=int, metavar="SEED", default=0,
                   help="seed of the label noise (default: %(default)s)")
    g = p.add_argument_group("training budget")
    g.add_argument("--steps", type=_positive_int, metavar="N", default=300,
                   help="optimiser steps (default: %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, metavar="N", default=8, help="(default: %(default)s)")
    g.add_argument("--crop", type=_nonneg_int, metavar="PX", default=64,
                   help="train on random CROP x CROP tiles; 0 = whole images (default: %(default)s)")
    g.add_argument("--lr", type=_positive_float, default=3e-3, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=_nonneg_float, metavar="WD", default=1e-4, help="(default: %(default)s)")
    g.add_argument("--loss", choices=LOSSES, default="weighted_bce",
                   help="hard-label loss (default: %(default)s, the 2015 paper's border-weighted BCE)")
    g.add_argument("--eval-every", type=_positive_int, metavar="N", default=50, help="(default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="model init and batch order (default: %(default)s)")
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    g.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice); 1 is faster on a busy machine")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=_checkpoint_path, metavar="NAME.pt", required=True,
                   help="checkpoint NAME.pt; the manifest is written to NAME.json")
    g.add_argument("--force", action="store_true",
                   help="replace an existing --out (a shipped checkpoint too)")
    g.add_argument("--store-dtype", choices=DTYPES, default="float32",
                   help="float type of the stored weights; float16 halves the file and "
                        "load_checkpoint casts back to float32 (default: %(default)s)")


MODULE_COMMANDS = {
    "bench": ("bench", "measure the student beside its teacher and peers (benchmarks/)"),
    "effect": ("commands.effect", "distil the cartoon effect into a MobileNet UNet (lesson 06)"),
    "export": ("export", "write a checkpoint as ONNX or ExecuTorch .pte (fp32/int8), check parity"),
}
"""Commands that live in a module of their own, which gives ``add_arguments(parser)`` and
``run(args) -> exit status``: ``name: (module, help)``."""


def _add_module_commands(sub) -> None:
    import importlib

    for name, (module, help_text) in MODULE_COMMANDS.items():
        try:
            mod = importlib.import_module(f"mobileunet.{module}")
        except ImportError as err:           # a missing optional dependency: say so when asked
            p = sub.add_parser(name, help=f"{help_text} [unavailable: {err}]")
            p.set_defaults(func=lambda args, err=err, name=name: _fail(f"{name} is unavailable: {err}"))
            continue
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or "").split("\n\n")[0])
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


def _fail(message: str) -> int:
    print(f"python -m mobileunet: error: {message}", file=sys.stderr)
    return 2


# --- commands ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command in ("train", "distill"):
        import torch

        from .env import get_device
        args.device = args.device or get_device().type
        if args.threads:
            torch.set_num_threads(args.threads)
        args.threads = torch.get_num_threads()
        args.git = git_info()                  # the code the run starts from, not where it ends
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        return _fail(f"{args.command}: {err}")


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    check_output(args.out, force=args.force)
    data = _data(args)
    model = build_model(args.model, args.seed)
    cfg = TrainConfig(**_budget(args, desc=f"train {args.model}"))
    hist = train(model, data["train"], data["val"], cfg)
    _finish(args, model, hist, data, {"builder": args.model})
    return 0


def cmd_distill(args) -> int:
    from .checkpoint import load_checkpoint, sha256
    from .data import CellsDataset
    from .distill import (DistillConfig, distill, hint_cosine, hint_mse, logit_mse, soft_target_kl,
                          weighted_soft_target_kl)

    hint_weight = args.hint_weight if args.hint_weight is not None else (1.0 if args.hint else 0.0)
    if hint_weight > 0 and not args.hint:
        raise ValueError(f"--hint-weight {hint_weight} needs at least one --hint TEACHER:STUDENT, "
                         f"e.g. --hint ups.2:decoder.blocks.3")
    if args.hint and hint_weight == 0:
        raise ValueError("--hint-weight 0 would ignore the --hint pairs: drop them or give a weight > 0")
    teacher_path = args.teacher or _shipped("unet_teacher_cells.pt")
    check_output(args.out, [teacher_path, args.scratch], force=args.force)
    scratch = None
    if args.scratch is not None:
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
        scratch = {"file": str(args.scratch), "iou": scratch["metrics"]["iou"],
                   "teacher_iou": teacher_manifest["metrics"]["iou"]}
    data = _data(args)
    if not args.no_verify:
        verify_checkpoint(teacher_path)
    teacher, _ = load_checkpoint(teacher_path)
    unlabelled = None
    if args.unlabelled:
        unlabelled = CellsDataset("unlabelled", args.unlabelled, args.size, args.data_seed)
        data["spec"]["unlabelled"] = {"split": "unlabelled", "n": args.unlabelled, "size": args.size,
                                      "seed": args.data_seed, "labels": "the teacher's"}
    student = build_model(args.student, args.seed)
    cfg = DistillConfig(**_budget(args, desc=f"distill {args.student}"),
                        soft_weight=args.soft_weight, temperature=args.temperature,
                        soft_loss={"kl": soft_target_kl, "weighted_kl": weighted_soft_target_kl,
                                   "logit_mse": logit_mse}[args.soft_loss],
                        hints=tuple(args.hint), hint_weight=hint_weight,
                        hint_loss={"mse": hint_mse, "cosine": hint_cosine}[args.hint_loss],
                        teacher_on_whole_images=args.teacher_whole_images)
    hist = distill(student, teacher, data["train"], data["val"], cfg, unlabelled=unlabelled)
    teacher_info = {"file": str(teacher_path), "sha256": sha256(teacher_path)}
    manifest = _finish(args, student, hist, data, {"builder": args.student, "teacher": teacher_info})
    if scratch is not None:
        from .metrics import gap_closed
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
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint, sha256
    from .data import CellsDataset
    from .profile import count_params
    from .tables import format_table
    from .train import evaluate

    model, _ = load_checkpoint(args.checkpoint)
    manifest = read_manifest(args.checkpoint) if args.no_verify else verify_checkpoint(args.checkpoint)
    val = (manifest or {}).get("data", {}).get("val", {})
    n, size, seed = validation_split(manifest, args.n_val, args.size, args.data_seed)
    scores = evaluate(model, CellsDataset("val", n, size, seed))
    same_split = manifest is not None and (n, size, seed) == (val.get("n"), val.get("size"), val.get("seed"))
    out = {"checkpoint": str(args.checkpoint), "params": count_params(model),
           "data": {"split": "val", "n": n, "size": size, "seed": seed}, "metrics": scores}
    if same_split:
        out["manifest_metrics"] = {k: manifest["metrics"][k] for k in scores if k in manifest["metrics"]}
        out["sha256_matches"] = sha256(args.checkpoint) == manifest["checkpoint"]["sha256"]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.checkpoint}: {out['params']:,} parameters, {n} validation images of {size}x{size} "
          f"(data seed {seed})")
    rows = [{"": "now", **scores}]
    if same_split:
        rows.append({"": "manifest", **out["manifest_metrics"]})
        print(f"sha256 {'matches' if out['sha256_matches'] else 'DIFFERS FROM'} the manifest")
    print(format_table(rows, floatfmt=".4f"))
    return 0


# --- shared pieces -------------------------------------------------------------------------------


def check_output(out: Path, inputs: list[Path] = (), force: bool = False) -> None:
    """Refuse an ``--out`` that would destroy something, before any work starts.

    It may not be one of the run's inputs (a teacher, a scratch run), a shipped
    checkpoint under ``data/checkpoints/``, or an existing file unless ``force``;
    its folder must be creatable and writable.
    """
    import os

    out = Path(out)
    target = out.resolve()
    for path in inputs:
        if path is not None and Path(path).resolve() in (target, manifest_path(target).resolve()):
            raise ValueError(f"--out {out} is one of this run's inputs ({path}): write the result elsewhere")
    shipped = _shipped("x").parent.resolve()
    if target.parent == shipped and not force:
        raise ValueError(f"--out {out} is in the course's shipped checkpoints ({shipped}): write elsewhere, "
                         f"or add --force to replace a shipped checkpoint on purpose")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: name the checkpoint file, e.g. {out}/model.pt")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists: choose another name, or add --force to replace it")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {folder} (not a writable folder)")


def _shipped(name: str) -> Path:
    from .env import data_dir
    return data_dir() / "checkpoints" / name


def _data(args) -> dict:
    from .data import cells_splits
    if args.crop and args.crop > args.size:
        raise ValueError(f"--crop {args.crop} is larger than --size {args.size}: use --crop <= "
                         f"{args.size}, or --crop 0 for whole images")
    gigabytes = (args.n_train + args.n_val) * args.size**2 * 16 / 1e9     # image, mask, weight, ids as 4 bytes each
    if gigabytes > 4:
        raise ValueError(f"--n-train {args.n_train} + --n-val {args.n_val} images of --size {args.size} would hold "
                         f"{gigabytes:.0f} GB in memory: keep it under 4 GB (fewer or smaller images)")
    if args.n_train < args.batch_size:
        raise ValueError(f"--n-train {args.n_train} is smaller than --batch-size {args.batch_size}: "
                         f"raise --n-train or lower --batch-size")
    train_set, val_set = cells_splits(args.n_train, args.n_val, size=args.size, seed=args.data_seed)
    spec = {"dataset": "cells (mobileunet.data.CellsDataset, generated)",
            "train": {"split": "train", "n": args.n_train, "size": args.size, "seed": args.data_seed},
            "val": {"split": "val", "n": args.n_val, "size": args.size, "seed": args.data_seed}}
    if args.label_miss or args.label_dilate or args.label_erode:
        from .data import NoisyLabels
        train_set = NoisyLabels(train_set, args.label_miss, args.label_dilate, args.label_erode, args.label_seed)
        spec["train"]["label_noise"] = train_set.noise
    return {"train": train_set, "val": val_set, "spec": spec}


def _budget(args, desc: str) -> dict:
    from . import losses
    loss = {"weighted_bce": losses.weighted_bce_loss, "bce": losses.bce_loss,
            "dice": losses.dice_loss, "bce_dice": losses.bce_dice_loss}[args.loss]
    return dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                weight_decay=args.weight_decay, loss=loss, crop=args.crop or None,
                eval_every=args.eval_every, seed=args.seed, device=args.device, desc=desc)


def _finish(args, model, hist: dict, data: dict, model_info: dict) -> dict:
    """Save the checkpoint as ``--store-dtype``, score it as stored, write the manifest; returns it."""
    import torch

    from . import __version__
    from .checkpoint import load_checkpoint, save_checkpoint, sha256
    from .profile import count_params
    from .train import evaluate

    model = model.cpu().eval()
    command = "python -m mobileunet " + shlex.join(args.argv)
    meta = {"command": command, "seed": args.seed, "data": data["spec"],
            "manifest": args.out.with_suffix(".json").name}
    stored = model
    if args.store_dtype == "float16":
        stored = copy.deepcopy(model).half()
        bad = [k for k, v in stored.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"weights {bad[:3]} overflow float16: store this model with --store-dtype float32")
    save_checkpoint(args.out, stored, meta)
    reloaded, _ = load_checkpoint(args.out)
    metrics = evaluate(reloaded, data["val"])
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "command": command,
        "argv": args.argv,
        "seed": args.seed,
        "data": data["spec"],
        "model": {**model_info, "arch": type(model).__name__, "config": dict(model.config),
                  "params": count_params(model)},
        "training": {**hist["config"], "device": args.device, "threads": args.threads,
                     "seconds": round(hist["seconds"], 1), "final_loss": hist["loss"][-1],
                     "val_iou_curve": {"step": hist["eval_step"], "iou": hist["val_iou"]}},
        "metrics": {"split": "val", **metrics},
        "checkpoint": {"file": args.out.name, "bytes": args.out.stat().st_size,
                       "dtype": args.store_dtype, "sha256": sha256(args.out)},
        "package_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        **args.git,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.store_dtype != "float32":
        manifest["metrics_float32"] = {"split": "val", **evaluate(model, data["val"])}
    path = write_manifest(args.out, manifest)
    print(f"wrote {args.out} ({manifest['checkpoint']['bytes'] / 1e6:.1f} MB, {args.store_dtype}) and "
          f"{path.name}: val IoU {metrics['iou']:.4f}, Dice {metrics['dice']:.4f}, "
          f"instance F1 {metrics.get('instance_f1', float('nan')):.4f}")
    return manifest
