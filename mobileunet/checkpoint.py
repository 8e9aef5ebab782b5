"""Checkpoints as plain dicts of tensors and numbers, loaded with ``weights_only=True``.

A checkpoint holds the state dict, the architecture (a class name from
``models.MODELS`` and its constructor arguments) and free-form metadata, so a
model comes back without pickled code.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from . import models


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file and what is wrong."""


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict | None = None) -> Path:
    """Write ``model`` to ``path``; ``meta`` must hold only str/int/float/bool/lists/dicts."""
    name = type(model).__name__
    if name not in models.MODELS or not hasattr(model, "config"):
        raise TypeError(f"cannot checkpoint a {name}: only models in mobileunet.models.MODELS "
                        f"({sorted(models.MODELS)}) carry the config needed to rebuild them")
    return atomic_save({"arch": name, "config": dict(model.config),
                        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "meta": meta or {}}, path)


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` through a temporary file in the same folder, flushed and renamed over ``path``.

    A kill at any moment leaves either the old file or the new one, never a
    half-written one.
    """
    return _atomic(path, "wb", lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """A text file written like ``atomic_save``: the old file or the new one, never half of it."""
    return _atomic(path, "w", lambda f: f.write(text))


class file_lock:
    """``with file_lock(path):`` holds an exclusive lock on ``path`` (created if missing) across processes.

    ``fcntl.flock`` on Linux and macOS, ``msvcrt.locking`` on Windows; a second
    process that asks waits until the first lets go. The pair cache is built
    under one, so two runs that need the same pairs make them once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot make the folder {self.path.parent} for {self.path.name} "
                             f"({err.strerror})") from None
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"{self.path} should be a lock file but is a folder or a device: remove it")
        self._file = open(self.path, "a+b")
        try:
            import fcntl
        except ImportError:                              # Windows
            import msvcrt
            while True:
                try:
                    self._file.seek(0)
                    msvcrt.locking(self._file.fileno(), msvcrt.LK_LOCK, 1)
                    return self
                except OSError:                          # LK_LOCK gives up after 10 s: keep waiting
                    continue
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:                          # say why nothing happens, then wait
            print(f"waiting for another process that holds {self.path} (it is making the same files)", flush=True)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        try:
            import fcntl
        except ImportError:
            import msvcrt
            self._file.seek(0)
            msvcrt.locking(self._file.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        return False


def _atomic(path: str | Path, mode: str, write) -> Path:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is a folder or a device: cannot write a file there; remove it or choose "
                         f"another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{path} is read-only: make it writable, or write elsewhere")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot make the folder {path.parent} for {path.name} ({err.strerror})") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                   # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes; returns ``(model, meta)`` in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one (lesson 02) or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:            # truncated, empty, not a torch file, or pickled code refused
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable mobileunet checkpoint ({type(err).__name__}: "
                              f"{first}); it may be truncated or not a checkpoint at all: make it again "
                              f"with the command in its manifest") from None
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a mobileunet checkpoint (no 'arch'/'state_dict' keys)")
    if not isinstance(ckpt["arch"], str) or ckpt["arch"] not in models.MODELS:
        raise CheckpointError(f"{path} holds an unknown architecture {ckpt['arch']!r}; "
                              f"known: {sorted(models.MODELS)}")
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: its 'config' is not a dict of constructor arguments")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: its 'state_dict' is not a dict of named tensors")
    stored = sum(v.numel() for v in state.values())
    try:
        with torch.device("meta"):                       # the shapes only: a config can ask for any size
            wanted = sum(p.numel() for p in models.MODELS[ckpt["arch"]](**ckpt["config"]).parameters())
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as err:
        raise CheckpointError(f"{path}: its config does not build a {ckpt['arch']} ({str(err)[:200]})") from None
    if wanted > 4 * stored + 10**7:                      # far more than the file holds: refuse before building it
        raise CheckpointError(f"{path}: its config builds a {ckpt['arch']} of {wanted:,} parameters but the file "
                              f"holds {stored:,} weights: the config and the weights are not from one model")
    try:
        model = models.MODELS[ckpt["arch"]](**ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its config does not build a {ckpt['arch']} ({err})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_into(model, state, source=str(path))
    return model.eval(), ckpt.get("meta", {})


def load_into(model: nn.Module, state: dict, source: str = "state dict") -> nn.Module:
    """``load_state_dict`` with an error that names the mismatch instead of torch's wall of keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(extra)} unexpected keys {extra[:3]}, {len(wrong)} shape "
            f"mismatches {wrong[:3]}. Build the model with the same arguments it was saved with.")
    model.load_state_dict(state)
    return model


def sha256(path: str | Path) -> str:
    """Hex digest of a file, as written in the checkpoint manifests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
