"""``python -m mobileunet train``: train a model from scratch on the generated cells (lesson 02's recipe),
or on your own images and masks (``--data DIR``, the layout of ``mobileunet.image_folder``).

Also home of the options that ``distill`` shares (data, label noise, budget,
output) and of the segmentation half of ``finish_run``.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from .. import losses
from ..data import NoisyLabels, cells_splits
from ..env import get_device, set_seed
from ..image_folder import LAYOUT, folder_splits
from ..models import builders
from ..train import TrainConfig, evaluate, train
from .args import (add_output_args, add_precision_args, add_threads_arg, check_output, edge_shift, fraction,
                   nonneg_float, nonneg_int, positive_float, positive_int, seed)
from .runs import end_run, finish_run, is_main, local_device, saved_state, start_run, state_saver

LOSSES = {"weighted_bce": losses.weighted_bce_loss, "bce": losses.bce_loss, "dice": losses.dice_loss,
          "bce_dice": losses.bce_dice_loss}
DTYPES = ("float32", "float16")
BUILDERS = tuple(builders("segmentation"))
"""Model builders the command line can name (``--model``, ``--student``): ``models.builders("segmentation")``."""


def build_model(name: str, seed: int, in_channels: int = 1):
    """``mobileunet.models.<name>(in_channels, out_channels=1)``, its weights drawn after ``set_seed(seed)``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: use one of {BUILDERS}")
    set_seed(seed)
    return builders("segmentation")[name](in_channels=in_channels, out_channels=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet train``."""
    p.add_argument("--model", choices=BUILDERS, default="unet_teacher", metavar="NAME",
                   help=f"model builder from mobileunet.models: {', '.join(BUILDERS)} (default: %(default)s)")
    add_run_args(p)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The cells options ``train`` and ``distill`` share: data, label noise, budget, output."""
    g = p.add_argument_group("data (the generated cells; defaults are lesson 02's full mode)")
    g.add_argument("--data", type=Path, metavar="DIR", default=None,
                   help=f"train on your own images instead of the cells: {LAYOUT} (every fifth image "
                        f"validates), or an Oxford-IIIT Pet folder; --size resizes them, and --n-train, "
                        f"--n-val, --data-seed are the cells' only")
    g.add_argument("--n-train", type=positive_int, metavar="N", default=240,
                   help="training images (default: %(default)s)")
    g.add_argument("--n-val", type=positive_int, metavar="N", default=60,
                   help="validation images (default: %(default)s)")
    g.add_argument("--size", type=positive_int, metavar="PX", default=128,
                   help="image side in pixels (default: %(default)s)")
    g.add_argument("--data-seed", type=seed, metavar="SEED", default=0,
                   help="seed of the generated data (default: %(default)s)")
    g = p.add_argument_group("label noise (lesson 05's regimes; all off by default: clean labels)")
    g.add_argument("--label-miss", type=fraction, metavar="P", default=0.0,
                   help="leave each cell out of the training masks with probability P, 0..1")
    g.add_argument("--label-dilate", type=edge_shift, metavar="PX", default=0,
                   help="grow each kept cell's outline by 0..PX pixels (fills the gaps between cells)")
    g.add_argument("--label-erode", type=edge_shift, metavar="PX", default=0,
                   help="shrink each kept cell's outline by 0..PX pixels")
    g.add_argument("--label-seed", type=seed, metavar="SEED", default=0,
                   help="seed of the label noise (default: %(default)s)")
    g = p.add_argument_group("training budget")
    g.add_argument("--steps", type=positive_int, metavar="N", default=300,
                   help="optimiser steps (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, metavar="N", default=8, help="(default: %(default)s)")
    g.add_argument("--crop", type=nonneg_int, metavar="PX", default=64,
                   help="train on random CROP x CROP tiles; 0 = whole images (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=3e-3, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=nonneg_float, metavar="WD", default=1e-4, help="(default: %(default)s)")
    g.add_argument("--loss", choices=tuple(LOSSES), default="weighted_bce",
                   help="hard-label loss (default: %(default)s, the 2015 paper's border-weighted BCE)")
    g.add_argument("--eval-every", type=positive_int, metavar="N", default=50, help="(default: %(default)s)")
    g.add_argument("--seed", type=seed, default=0, help="model init and batch order (default: %(default)s)")
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    add_threads_arg(g)
    add_precision_args(g)
    g.add_argument("--save-every", type=nonneg_int, metavar="N", default=0,
                   help="write the training state NAME.state.pt every N steps, so --resume can continue an "
                        "interrupted run (default: %(default)s, off)")
    g.add_argument("--resume", action="store_true",
                   help="continue from NAME.state.pt, written by an interrupted run of the same command")
    g = add_output_args(p)
    g.add_argument("--store-dtype", choices=DTYPES, default="float32",
                   help="float type of the stored weights; float16 halves the file and "
                        "load_checkpoint casts back to float32 (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        check_output(args.out, force=args.force)
    start_run(args)
    cfg = TrainConfig(**budget(args, desc=f"train {args.model}"))
    resuming = resume_options(args)
    data = run_data(args)
    model = build_model(args.model, args.seed, data["channels"])
    hist = train(model, data["train"], data["val"], cfg, **resuming)
    if is_main():
        finish_cells_run(args, model, hist, data, {"builder": args.model})
        args.out.with_suffix(".state.pt").unlink(missing_ok=True)   # complete: nothing left to resume
    end_run()
    return 0


def resume_options(args: argparse.Namespace) -> dict:
    """``fit``'s resuming arguments from ``--save-every`` and ``--resume`` (the state is NAME.state.pt)."""
    state_path = args.out.with_suffix(".state.pt")
    return {"state": saved_state(args, state_path) if args.resume else None, "save_every": args.save_every,
            "save_state": state_saver(args, state_path) if args.save_every else None}


def run_data(args: argparse.Namespace) -> dict:
    """The training and validation data ``args`` name (``--data DIR`` or the cells), their manifest record
    (``spec``) and the images' ``channels``."""
    if args.crop and args.crop > args.size:
        raise ValueError(f"--crop {args.crop} is larger than --size {args.size}: use --crop <= "
                         f"{args.size}, or --crop 0 for whole images")
    if args.data is None:
        return {**cells_data(args), "channels": 1}
    noise = [flag for flag, value in (("--label-miss", args.label_miss), ("--label-dilate", args.label_dilate),
                                      ("--label-erode", args.label_erode)) if value]
    if noise:
        raise ValueError(f"{noise[0]} corrupts the generated cells' labels, and --data {args.data} trains on "
                         f"your masks: drop {noise[0]}")
    train_set, val_set, spec = folder_splits(args.data, args.size)
    if len(train_set) < args.batch_size:
        raise ValueError(f"--data {args.data} has {len(train_set)} training images, fewer than --batch-size "
                         f"{args.batch_size}: lower --batch-size or add images")
    return {"train": train_set, "val": val_set, "spec": spec, "channels": spec["channels"]}


def cells_data(args: argparse.Namespace) -> dict:
    """The training and validation cells ``args`` name (memory checked first), and their manifest record."""
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
        train_set = NoisyLabels(train_set, args.label_miss, args.label_dilate, args.label_erode, args.label_seed)
        spec["train"]["label_noise"] = train_set.noise
    return {"train": train_set, "val": val_set, "spec": spec}


def budget(args: argparse.Namespace, desc: str) -> dict:
    """``TrainConfig`` fields from the budget options; the device is checked against what is present."""
    try:
        args.device = (get_device(args.device) if args.device else get_device()).type
    except ValueError as err:
        raise ValueError(f"--device {args.device}: {err}") from None
    return dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                weight_decay=args.weight_decay, loss=LOSSES[args.loss], crop=args.crop or None,
                eval_every=args.eval_every, seed=args.seed, device=local_device(args.device), desc=desc,
                precision=args.precision, channels_last=args.channels_last)


def finish_cells_run(args: argparse.Namespace, model, hist: dict, data: dict, model_info: dict) -> dict:
    """``finish_run`` for a segmentation model: stored as ``--store-dtype``, scored on the validation cells."""
    model = model.cpu().eval()
    stored = model
    if args.store_dtype == "float16":
        stored = copy.deepcopy(model).half()
        bad = [k for k, v in stored.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"weights {bad[:3]} overflow float16: store this model with --store-dtype float32")
    training = {**hist["config"], "device": args.device, "threads": args.threads, "resumed": bool(args.resume),
                "seconds": round(hist["seconds"], 1), "final_loss": hist["loss"][-1],
                "val_iou_curve": {"step": hist["eval_step"], "iou": hist["val_iou"]}}
    float32 = (lambda _: {"metrics_float32": {"split": "val", **evaluate(model, data["val"])}}
               ) if args.store_dtype != "float32" else None
    manifest = finish_run(args, model, data["spec"], model_info, training, lambda m: evaluate(m, data["val"]),
                          stored=stored, dtype=args.store_dtype, extra=float32)
    metrics = manifest["metrics"]
    print(f"wrote {args.out} ({manifest['checkpoint']['bytes'] / 1e6:.1f} MB, {args.store_dtype}) and "
          f"{args.out.with_suffix('.json').name}: val IoU {metrics['iou']:.4f}, Dice {metrics['dice']:.4f}, "
          f"instance F1 {metrics.get('instance_f1', float('nan')):.4f}")
    return manifest
