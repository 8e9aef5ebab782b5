"""Run-time set-up shared by every lesson: the FAST flag, seeding, device choice.

Nothing here runs on import except reading ``MOBILEUNET_FAST`` from the
environment; seeding and thread settings happen only when a lesson calls them.
"""
from __future__ import annotations

import os
import platform
import random
from pathlib import Path

import numpy as np
import torch
from .validate import is_whole

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when ``MOBILEUNET_FAST`` asks for the small, CI-sized lessons."""
    return os.environ.get("MOBILEUNET_FAST", "0").strip().lower() in _TRUE


FAST: bool = fast_mode()
"""Read once at import: the notebooks pick their sizes from it."""


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so a lesson prints the same numbers twice."""
    if not is_whole(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device a lesson should use: CUDA if present, else Apple MPS, else CPU.

    ``prefer="cpu"`` forces the CPU (latency lessons measure the laptop CPU).
    """
    if prefer is not None:
        try:
            dev = torch.device(prefer)
        except (RuntimeError, TypeError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device {prefer!r} is not one the course trains on: use 'cpu', 'cuda' or 'mps'")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} asked for but CUDA is not available: use 'cpu'")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {prefer!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        mps = getattr(torch.backends, "mps", None)
        if dev.type == "mps" and not (mps is not None and mps.is_available()):
            raise ValueError(f"device {prefer!r} asked for but Apple MPS is not available: use 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def env_report(device: torch.device | None = None) -> str:
    """One line naming what a result depends on: versions, device, threads, FAST."""
    device = device or get_device()
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | "
        f"device {device.type} | threads {torch.get_num_threads()} | "
        f"FAST={'on' if FAST else 'off'}"
    )


def data_dir() -> Path:
    """Where the course keeps data it caches or ships: ``$MOBILEUNET_DATA`` if set,
    else the repository's ``data/`` folder (editable install), else
    ``~/.cache/mobileunet``."""
    if os.environ.get("MOBILEUNET_DATA"):
        return Path(os.environ["MOBILEUNET_DATA"]).expanduser()
    repo_data = Path(__file__).resolve().parent.parent / "data"
    if repo_data.is_dir():
        return repo_data
    return Path.home() / ".cache" / "mobileunet"


# (package, what the course uses it for, the pip extra that installs it)
COURSE_PACKAGES = [
    ("torch", "models and training", "core"),
    ("torchvision", "MobileNet backbones, Oxford-IIIT Pet loader", "core"),
    ("numpy", "arrays", "core"),
    ("scipy", "distance transforms for the weight maps", "core"),
    ("skimage", "bundled photos for the effect lessons", "core"),
    ("sklearn", "two more bundled photos (lesson 06)", "core"),
    ("matplotlib", "every figure", "core"),
    ("ipywidgets", "explorers (each has a static fallback)", "core"),
    ("tqdm", "progress bars", "core"),
    ("onnxruntime", "benchmarks and export (lessons 03, 04, 07)", "test or export"),
    ("executorch", "on-device export (lesson 07)", "export"),
]


def check_environment() -> list[dict]:
    """What is installed, at which version, and the pip extra for what is not.

    Looks packages up without importing them, so it is quick and side-effect free.
    """
    from importlib import metadata, util

    dist_names = {"skimage": "scikit-image", "sklearn": "scikit-learn"}
    rows = []
    for module, purpose, extra in COURSE_PACKAGES:
        found = util.find_spec(module) is not None
        try:
            version = metadata.version(dist_names.get(module, module)) if found else "-"
        except metadata.PackageNotFoundError:
            version = "?"
        rows.append({"package": module, "version": version, "for": purpose,
                     "status": "ok" if found else f"missing: pip install -e '.[{extra}]'"})
    return rows
