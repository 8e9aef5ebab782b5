"""Argument types, option groups and the output check that every command shares.

Each type turns one command-line word into a checked value or raises
``argparse.ArgumentTypeError`` with a sentence that argparse prints after the
flag's name, e.g. ``argument --steps: 0 must be at least 1``.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from ..data import MAX_EDGE_SHIFT
from ..env import data_dir
from ..manifest import manifest_path


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


MAX_COUNT = 10**9
"""The largest count any option takes (steps, images, repeats): more is a typo, not a plan."""


def _whole_in(text: str, low: int, high: int, what: str = "") -> int:
    value = whole_number(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} must be a whole number{what} from {low} to {high:,}")
    return value


def positive_int(text: str) -> int:
    return _whole_in(text, 1, MAX_COUNT)


def nonneg_int(text: str) -> int:
    return _whole_in(text, 0, MAX_COUNT)


def seed(text: str) -> int:
    """A seed torch and NumPy both accept: 0 to 2**32 - 1."""
    return _whole_in(text, 0, 2**32 - 1)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def fraction(text: str) -> float:
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def nonneg_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def threads(text: str) -> int:
    value = positive_int(text)
    cores = os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more threads than this machine's {cores} cores: use 1-{cores}")
    return value


def edge_shift(text: str) -> int:
    return _whole_in(text, 0, MAX_EDGE_SHIFT, " of pixels")


def hint_pair(text: str) -> tuple[str, str]:
    teacher, sep, student = text.partition(":")
    if not sep or not teacher or not student:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write TEACHER_MODULE:STUDENT_MODULE, e.g. ups.2:decoder.blocks.3")
    return teacher, student


def checkpoint_path(text: str) -> Path:
    path = Path(text)
    if path.suffix != ".pt":
        raise argparse.ArgumentTypeError(
            f"{text!r}: name the checkpoint NAME.pt (its manifest goes beside it as NAME.json)")
    return path


def shipped(name: str) -> Path:
    """A shipped checkpoint's path: ``data/checkpoints/<name>``."""
    return data_dir() / "checkpoints" / name


def check_output(out: Path, inputs: list[Path] = (), force: bool = False) -> None:
    """Refuse an ``--out`` that would destroy something, before any work starts.

    It may not be one of the run's inputs (a teacher, a scratch run), a shipped
    checkpoint under ``data/checkpoints/``, or an existing file unless ``force``;
    its folder must be creatable and writable.
    """
    out = Path(out)
    if len(out.name) > 200:
        raise ValueError(f"--out {out}: a file name of {len(out.name)} characters is too long: keep it under 200")
    try:
        _check_output(out, inputs, force)
    except OSError as err:
        raise ValueError(f"--out {out}: {err.strerror or err}") from None


def _check_output(out: Path, inputs, force: bool) -> None:
    target = out.resolve()
    for path in inputs:
        if path is not None and Path(path).resolve() in (target, manifest_path(target).resolve()):
            raise ValueError(f"--out {out} is one of this run's inputs ({path}): write the result elsewhere")
    folder_of_shipped = shipped("x").parent.resolve()
    if (target.parent == folder_of_shipped or folder_of_shipped in target.parents) and not force:
        raise ValueError(f"--out {out} is in the course's shipped checkpoints ({folder_of_shipped}): write "
                         f"elsewhere, or add --force to replace a shipped checkpoint on purpose")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: name the checkpoint file, e.g. {out}/model.pt")
    side = manifest_path(out)
    if side.exists() and not side.is_file():
        raise ValueError(f"--out {out}: its manifest's place {side} is a folder or a device: choose another name")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists: choose another name, or add --force to replace it")
    if side.exists() and not force:
        raise ValueError(f"--out {out}: {side} exists and would be replaced by the manifest: choose another "
                         f"name, or add --force to replace it")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {folder} (not a writable folder)")
    try:                                                # the real test: make a file there (root ignores modes)
        fd, probe = tempfile.mkstemp(prefix=".mobileunet-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write in {folder} ({err.strerror})") from None


def add_output_args(p: argparse.ArgumentParser):
    """``--out NAME.pt`` and ``--force``: the group every training command ends with."""
    g = p.add_argument_group("output")
    g.add_argument("--out", type=checkpoint_path, metavar="NAME.pt", required=True,
                   help="checkpoint NAME.pt; the manifest is written to NAME.json")
    g.add_argument("--force", action="store_true", help="replace an existing --out (a shipped checkpoint too)")
    return g


def add_precision_args(g) -> None:
    """``--precision`` and ``--channels-last``: how the training arithmetic is laid out (``TrainConfig``)."""
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: forward pass and loss in bfloat16 autocast, weights and optimiser in float32 "
                        "(benchmarks/training_throughput.py measures what it buys) (default: %(default)s)")
    g.add_argument("--channels-last", action="store_true", help="the model and its batches in channels-last order")


def add_threads_arg(g) -> None:
    g.add_argument("--threads", type=threads, default=None, metavar="N",
                   help="torch CPU threads, at most the machine's cores (default: torch's choice); "
                        "1 is faster on a busy machine")
