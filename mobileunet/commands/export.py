"""``python -m mobileunet export``: write a checkpoint as ONNX or ExecuTorch ``.pte`` and prove parity.

The command half of ``mobileunet.export`` (lesson 07): it loads and verifies
the checkpoint, picks validation and calibration frames, exports, and checks
the artefact against eager PyTorch. The library never imports this module.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..effects import cartoon
from ..export import FORMATS, cells_frames, check_parity, export, frame_size, load_runner, photo_frames
from ..manifest import read_manifest, validation_split, verify_checkpoint
from ..tables import format_table
from .args import check_output, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet export``."""
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by train or distill")
    parser.add_argument("--format", choices=FORMATS, required=True, help="onnx (ONNX Runtime) or pte (ExecuTorch)")
    parser.add_argument("--int8", action="store_true", help="quantize to int8, calibrated on real course images")
    parser.add_argument("--out", type=Path, required=True, help="the file to write, NAME.onnx or NAME.pte")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="frame side, a multiple of 32 (default: the manifest's validation image size)")
    parser.add_argument("--dynamic", action="store_true", help="ONNX only: any height/width that is a multiple of 32")
    parser.add_argument("--n-val", type=positive_int, default=None, help="validation images for the parity check "
                                                                "(default: the manifest's)")
    parser.add_argument("--n-calib", type=positive_int, default=16,
                        help="calibration frames for int8 (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true",
                        help="export the file even if its sha256 differs from its manifest's")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    check_output(args.out, [args.checkpoint], force=args.force)
    try:
        model, _ = load_checkpoint(args.checkpoint)
        manifest = read_manifest(args.checkpoint) if args.no_verify else verify_checkpoint(args.checkpoint)
        n, image_size, seed = validation_split(manifest, args.n_val, None, None)
        size = image_size if args.size is None else args.size
        frame_size(size)
        _check_memory(model.in_channels, size, image_size, n, args.n_calib)
        effect = model.in_channels == model.out_channels == 3
        if model.in_channels == 1:
            images, masks = cells_frames("val", n, size, image_size, seed)
            calibration = cells_frames("unlabelled", args.n_calib * max(1, size // image_size) ** 2,
                                       size, image_size, seed)[0]
        else:
            images, masks = photo_frames(min(n, 8), size), None
            calibration = photo_frames(args.n_calib, size, split="train")
        targets = cartoon(images) if effect else None          # the teacher's frames: PSNR as lesson 06 scores it
        result = export(model, args.out, args.format, args.int8, size, args.dynamic, calibration)
        parity = check_parity(model, load_runner(result.path), images, args.int8, masks=masks, targets=targets)
    except ImportError as err:
        print(f"python -m mobileunet: error: export: {err}")
        return 2
    print(f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, {result.precision}, "
          f"{'one self-contained file' if result.single_file else 'with side files'}) "
          f"in {result.seconds:.1f} s; input (1, {model.in_channels}, {size}, {size})"
          f"{', any H/W multiple of 32' if args.dynamic else ''}")
    if result.outside_delegate is not None:
        left = ", ".join(f"{k} x{v}" for k, v in result.outside_delegate.items()) or "none"
        print(f"operators outside the XNNPACK delegate: {left}")
    what = "effect, PSNR against the teacher's frames" if effect else (
        f"{len(images)} validation frames" + (f" tiled from {n} images of {image_size}x{image_size}"
                                              if size != image_size else ""))
    print(f"parity against eager PyTorch on {what}:")
    print(format_table([parity], floatfmt=".4g"))
    if not parity["ok"]:
        print(f"parity FAILED: outside the tolerance ({parity['tolerance']})")
        return 1
    return 0


def _check_memory(channels: int, size: int, image_size: int, n_val: int, n_calib: int, limit_gb: float = 4) -> None:
    """Refuse, before any work, an export whose frames and one frame's activations (~50 maps) pass ``limit_gb``."""
    tiles = max(1, size // image_size) ** 2
    frames = (n_val + n_calib * tiles) * image_size**2 * 16 if channels == 1 else (min(n_val, 8) + n_calib) * size**2
    gigabytes = (frames * channels * 4 + 50 * channels * 4 * size**2) / 1e9
    if gigabytes > limit_gb:
        raise ValueError(f"--size {size} with --n-val {n_val} and --n-calib {n_calib} would need about "
                         f"{gigabytes:.0f} GB: keep it under {limit_gb:g} GB (a smaller --size, fewer frames)")
