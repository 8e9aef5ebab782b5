"""The command line: ``python -m mobileunet {train,distill,evaluate,effect,export,bench} ...``.

The notebooks' heavy runs, runnable from a terminal. This module only routes:
each command is a module of ``mobileunet/commands/`` with ``add_arguments``
and ``run``. ``train``, ``distill`` and ``effect`` write a checkpoint and,
beside it, a manifest ``<name>.json``: the exact command, seed, data, package
version and git commit, metrics on the validation split of the checkpoint
as stored, and its sha256 (``commands.runs.finish_run``). The course's shipped
checkpoints in ``data/checkpoints/`` were made this way; their manifests say how.

Examples:
    python -m mobileunet train --model unet_teacher --steps 600 --out runs/teacher.pt
    python -m mobileunet distill --teacher data/checkpoints/unet_teacher_cells.pt \\
        --soft-weight 0.5 --hint ups.2:decoder.blocks.3 --hint-weight 1 --out runs/student.pt
    python -m mobileunet evaluate data/checkpoints/student_cells.pt
    python -m mobileunet export data/checkpoints/student_cells.pt --format pte --int8 --out student.pte
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands.args import check_output  # noqa: F401  (the commands' output check, public here too)
from .commands.train import BUILDERS, build_model  # noqa: F401
from .manifest import read_manifest  # noqa: F401  (lessons and tests read manifests through here too)

COMMANDS = {
    "train": "train a model from scratch on the cells data",
    "distill": "distill a student from a teacher checkpoint",
    "evaluate": "score a checkpoint on the cells validation split",
    "effect": "distil the cartoon effect into a MobileNet UNet (lesson 06)",
    "export": "write a checkpoint as ONNX or ExecuTorch .pte (fp32/int8), check parity",
    "bench": "measure the student beside its teacher and peers (benchmarks/)",
}
"""Each command is ``mobileunet.commands.<name>``, which gives ``add_arguments(parser)`` and
``run(args) -> exit status``: ``name: help``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mobileunet",
        description="mobileunet's heavy runs: train a model, distill a student, distil the effect,\n"
                    "evaluate, export and benchmark. train, distill and effect write NAME.pt and\n"
                    "NAME.json (the manifest: command, seed, data, git commit, metrics, sha256).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'python -m mobileunet COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        try:
            mod = importlib.import_module(f"mobileunet.commands.{name}")
        except ImportError as err:           # a missing optional dependency: say so when asked
            p = sub.add_parser(name, help=f"{help_text} [unavailable: {err}]")
            p.set_defaults(func=lambda args, err=err, name=name: _fail(f"{name} is unavailable: {err}"))
            continue
        doc = (mod.__doc__ or "").split("\n\n")[0]
        p = sub.add_parser(name, help=help_text, description=doc.split(": ", 1)[-1])
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _fail(message: str) -> int:
    print(f"python -m mobileunet: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        return _fail(f"{args.command}: {err}")
