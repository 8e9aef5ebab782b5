"""The end of every training command: save, reload, score what was stored, write the manifest.

``train``, ``distill`` and ``effect`` all finish with ``finish_run``, so their
manifests share one layout (``manifest.MANIFEST_VERSION``): the command, seed,
data, model, training, metrics of the checkpoint *as stored*, its sha256, and
the versions and git commit the run started from. The manifest is put in
place with its checkpoint as one change (``manifest.commit_checkpoint``):
a kill at any moment leaves the previous pair or the new one, never a mix.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import shlex
from typing import Callable

import torch
from torch import nn

from .. import __version__
from ..checkpoint import atomic_save, load_checkpoint, save_checkpoint, sha256
from ..manifest import MANIFEST_VERSION, commit_checkpoint, git_info
from ..profile import count_params


def start_run(args: argparse.Namespace) -> None:
    """Before any work: join the other processes if ``torchrun`` started several; threads and git into ``args``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) this process
    joins the group: ``nccl`` when CUDA is present, else ``gloo`` (CPU). Then
    ``train.fit`` runs the model under ``DistributedDataParallel`` and only
    rank 0 writes the checkpoint and the manifest (``is_main``).
    """
    import os

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.git = git_info()                              # the code the run starts from, not where it ends


def is_main() -> bool:
    """Whether this process writes the run's files: always, unless it is one of several and not rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def end_run() -> None:
    """Wait for every process of a multi-process run, then leave the group (nothing to do for one process)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """``cuda:<LOCAL_RANK>`` for a CUDA run that ``torchrun`` started several times, else ``device``."""
    import os

    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def command_line(args: argparse.Namespace) -> str:
    return "python -m mobileunet " + shlex.join(args.argv)


def finish_run(args: argparse.Namespace, model: nn.Module, data: dict, model_info: dict, training: dict,
               score: Callable[[nn.Module], dict], stored: nn.Module | None = None, dtype: str = "float32",
               extra: Callable[[nn.Module], dict] | None = None) -> dict:
    """Save ``stored`` (default ``model``) to ``args.out``, score the reloaded file, write and return the manifest.

    ``data`` is the manifest's data record, ``model_info`` what to add to its
    model record (the builder, a teacher), ``training`` its training record.
    ``score(reloaded)`` gives the metrics; ``extra(reloaded)`` may add more
    top-level records (an effect's speed table). Manifest keys not named here
    come from ``args``: ``argv``, ``seed``, ``git``.
    """
    command = command_line(args)
    training = {**training, "world_size": training.get("world_size", 1)}
    new_file = args.out.with_name(f".{args.out.name}.new")
    save_checkpoint(new_file, stored if stored is not None else model,
                    {"command": command, "seed": args.seed, "data": data,
                     "manifest": args.out.with_suffix(".json").name})
    reloaded, _ = load_checkpoint(new_file)
    metrics = score(reloaded)
    manifest = {
        "manifest_version": MANIFEST_VERSION, "command": command, "argv": args.argv, "seed": args.seed,
        "data": data,
        "model": {**model_info, "arch": type(model).__name__, "config": dict(model.config),
                  "params": count_params(model)},
        "training": training,
        "metrics": {"split": "val", **metrics},
        **(extra(reloaded) if extra else {}),
        "checkpoint": {"file": args.out.name, "bytes": new_file.stat().st_size, "dtype": dtype,
                       "sha256": sha256(new_file)},
        "package_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        **args.git,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    commit_checkpoint(args.out, new_file, manifest)     # the checkpoint and its manifest as one change
    return manifest


def saved_state(args: argparse.Namespace, state_path) -> dict:
    """The training state an interrupted run of the same command left at ``state_path``."""
    if not state_path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {state_path}; run the command without "
                                f"--resume to start")
    try:
        state = torch.load(state_path, weights_only=True)
    except Exception as err:                            # truncated, or not a state at all
        raise ValueError(f"--resume: {state_path} is not a readable training state ({type(err).__name__}): "
                         f"delete it and run without --resume") from None
    if not isinstance(state, dict) or state.get("argv") != run_argv(args.argv):
        raise ValueError(f"--resume: {state_path} was written by another command "
                         f"({shlex.join((state.get('argv') if isinstance(state, dict) else None) or [])}): "
                         f"resume with the same options")
    print(f"resuming from {state_path} at step {state['step']} of {state['steps']}")
    return state


def state_saver(args: argparse.Namespace, state_path):
    """``fit``'s ``save_state`` for a command: the state and the options that must match to resume it, atomically."""
    def save(state: dict) -> None:
        atomic_save({**state, "argv": run_argv(args.argv)}, state_path)
    return save


def run_argv(argv: list[str]) -> list[str]:
    """The command's options without ``--resume``: what must match for a run to be resumed."""
    return [a for a in argv if a != "--resume"]
