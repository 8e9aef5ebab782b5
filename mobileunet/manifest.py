"""Manifests: the JSON beside every checkpoint that says how it was made and what it scored.

One home for reading and writing them, below everything that does (the
command line, the effect and export commands, the lessons, the tests).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

MANIFEST_VERSION = 1


def manifest_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's manifest lives: beside it, ``NAME.json``."""
    return Path(checkpoint).with_suffix(".json")


def write_manifest(checkpoint: str | Path, manifest: dict) -> Path:
    """Write ``NAME.json`` beside the checkpoint, through a temporary file and a rename (never half-written).

    Refuses numbers that are not finite (JSON has no NaN): a run that diverged
    must not leave a manifest that other tools cannot read.
    """
    from .checkpoint import atomic_write_text

    return atomic_write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", manifest_path(checkpoint))


def read_manifest(checkpoint: str | Path) -> dict | None:
    """The manifest beside a checkpoint, or None when there is none; ``ValueError`` naming the file if unreadable."""
    path = manifest_path(checkpoint)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a manifest: it is not JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a manifest: it holds a JSON {type(manifest).__name__}, not an object")
    return manifest


def verify_checkpoint(checkpoint: str | Path, manifest: dict | None = None) -> dict | None:
    """Check a checkpoint's sha256 against its manifest; returns the manifest (None when there is none).

    Raises ``ValueError`` naming the file when the manifest has no sha256 or
    the file is not the one it describes: a changed or swapped checkpoint must
    not be scored, distilled from or exported as if it were the recorded one.
    """
    from .checkpoint import sha256

    manifest = read_manifest(checkpoint) if manifest is None else manifest
    if manifest is None:
        return None
    want = manifest.get("checkpoint", {}).get("sha256") if isinstance(manifest.get("checkpoint"), dict) else None
    if not isinstance(want, str):
        raise ValueError(f"{manifest_path(checkpoint)} records no checkpoint sha256: it cannot vouch for "
                         f"{checkpoint}; pass --no-verify to use the file anyway")
    got = sha256(checkpoint)
    if got != want:
        raise ValueError(f"{checkpoint} is not the file its manifest describes (sha256 {got[:12]}... vs "
                         f"{want[:12]}...): make it again with the manifest's command, or pass --no-verify")
    return manifest


def git_info() -> dict:
    """The git commit of the package's checkout, and which files of ``mobileunet/`` differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "mobileunet"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    changed = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {"git_commit": commit, "git_dirty": bool(changed), "git_uncommitted": changed}


def validation_split(manifest: dict | None, n: int | None = None, size: int | None = None,
                     seed: int | None = None) -> tuple[int, int, int]:
    """``(n, size, seed)`` of the cells validation split: what is given, else the manifest's, else 60, 128, 0."""
    val = (manifest or {}).get("data", {}).get("val", {})
    return (n or val.get("n", 60), size or val.get("size", 128),
            seed if seed is not None else val.get("seed", 0))
