"""Manifests: the JSON beside every checkpoint that says how it was made and what it scored.

One home for reading and writing them, below everything that does (the
command line, the effect and export commands, the lessons, the tests).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from .checkpoint import atomic_write_text, sha256

MANIFEST_VERSION = 1


def manifest_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's manifest lives: beside it, ``NAME.json``."""
    return Path(checkpoint).with_suffix(".json")


def write_manifest(checkpoint: str | Path, manifest: dict) -> Path:
    """Write ``NAME.json`` beside the checkpoint, through a temporary file and a rename (never half-written).

    Refuses numbers that are not finite (JSON has no NaN): a run that diverged
    must not leave a manifest that other tools cannot read.
    """
    return atomic_write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", manifest_path(checkpoint))


def pending_path(checkpoint: str | Path) -> Path:
    """Where ``commit_checkpoint`` keeps a new manifest until its checkpoint is in place: ``.NAME.json.pending``."""
    path = manifest_path(checkpoint)
    return path.with_name(f".{path.name}.pending")


def commit_checkpoint(checkpoint: str | Path, new_file: str | Path, manifest: dict) -> Path:
    """Put a new checkpoint (written to ``new_file``) and its manifest in place as one change.

    The manifest goes first to ``pending_path`` (complete, atomically), then the
    checkpoint replaces the old one, then the manifest replaces the old
    manifest. A kill between the two replaces leaves the new checkpoint with the
    pending manifest beside it, and ``read_manifest`` finishes the change
    (the pending manifest's sha256 names the checkpoint it belongs to); a kill
    before them leaves the old pair. So after a kill at any moment, a reader
    sees the old pair or the new one, never a mix. Returns the manifest's path.
    """
    checkpoint, pending = Path(checkpoint), pending_path(checkpoint)
    atomic_write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", pending)
    os.replace(new_file, checkpoint)
    os.replace(pending, manifest_path(checkpoint))
    return manifest_path(checkpoint)


def _finish_interrupted_commit(checkpoint: str | Path) -> None:
    """Roll a ``commit_checkpoint`` killed between its two replaces forward, or drop a pending manifest left over."""
    pending = pending_path(checkpoint)
    if not pending.is_file():
        return
    try:
        want = json.loads(pending.read_text())["checkpoint"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        want = None
    if want is not None and Path(checkpoint).is_file() and sha256(checkpoint) == want:
        os.replace(pending, manifest_path(checkpoint))      # the checkpoint is the new one: its manifest too
    else:
        pending.unlink(missing_ok=True)                     # killed before the checkpoint moved: the old pair stands


def read_manifest(checkpoint: str | Path) -> dict | None:
    """The manifest beside a checkpoint, or None when there is none; ``ValueError`` naming the file if unreadable.

    A change that ``commit_checkpoint`` did not finish (a kill) is finished or
    undone first, so the manifest read is the checkpoint's own.
    """
    _finish_interrupted_commit(checkpoint)
    path = manifest_path(checkpoint)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a manifest: it is a folder or a device, not a file")
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as err:
        raise ValueError(f"{path} is not a manifest: it is not JSON ({str(err)[:120]})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a manifest: it holds a JSON {type(manifest).__name__}, not an object")
    problems = schema_problems(manifest)
    if problems:
        raise ValueError(f"{path} is not a valid manifest: {'; '.join(problems)}; make the checkpoint again "
                         f"with the command that wrote it")
    return manifest


MAX_SPLIT_IMAGES, MAX_SIDE = 100_000, 4096
"""The largest validation split a manifest may name: what a tool would otherwise allocate."""


def schema_problems(manifest: dict) -> list[str]:
    """What is wrong with a manifest's layout: the keys the package reads, with their types and ranges.

    Every manifest has ``manifest_version``, ``metrics`` (finite numbers, the
    split's name) and ``checkpoint`` (its file name and sha256). ``data.val``,
    where present, names a split the tools can rebuild: ``n`` 1-100000
    images, ``size`` 1-4096 px, an integer ``seed``. Empty when all is well.

    Example:
        >>> schema_problems({"manifest_version": 1, "metrics": {"iou": 0.9}, "checkpoint": {"sha256": "0" * 64}})
        []
    """
    import math

    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    problems = []
    if not whole(manifest.get("manifest_version")):
        problems.append(f"manifest_version is {manifest.get('manifest_version')!r}, not a whole number")
    elif manifest["manifest_version"] > MANIFEST_VERSION:
        problems.append(f"manifest_version {manifest['manifest_version']} is newer than this package reads "
                        f"({MANIFEST_VERSION}): update mobileunet")
    metrics = manifest.get("metrics")
    if not isinstance(metrics, dict):
        problems.append("it has no 'metrics' object")
    else:
        bad = [k for k, v in metrics.items()
               if k != "split" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))]
        if bad:
            problems.append(f"metrics {bad} are not finite numbers")
    ckpt = manifest.get("checkpoint")
    if not isinstance(ckpt, dict):
        problems.append("it has no 'checkpoint' object")
    elif not (isinstance(ckpt.get("sha256"), str) and len(ckpt["sha256"]) == 64):
        problems.append("checkpoint.sha256 is not a 64-digit hex string")
    data = manifest.get("data", {})
    if not isinstance(data, dict):
        problems.append("'data' is not an object")
    elif data.get("val") is not None:
        val = data["val"]
        if not isinstance(val, dict):
            problems.append("data.val is not an object")
        else:
            for key, top in (("n", MAX_SPLIT_IMAGES), ("size", MAX_SIDE)):
                if key in val and not (whole(val[key]) and 1 <= val[key] <= top):
                    problems.append(f"data.val.{key} is {val[key]!r}, not a whole number from 1 to {top}")
            if "seed" in val and not whole(val["seed"]):
                problems.append(f"data.val.seed is {val['seed']!r}, not a whole number")
            n, side = val.get("n", 1), val.get("size", 1)
            if whole(n) and whole(side) and n * side**2 * 16 > 4e9:
                problems.append(f"data.val names {n} images of {side}x{side}, {n * side**2 * 16 / 1e9:.0f} GB to "
                                f"rebuild: more than the 4 GB any run of the course makes")
    return problems


def verify_checkpoint(checkpoint: str | Path, manifest: dict | None = None) -> dict | None:
    """Check a checkpoint's sha256 against its manifest; returns the manifest (None when there is none).

    Raises ``ValueError`` naming the file when the manifest has no sha256 or
    the file is not the one it describes: a changed or swapped checkpoint must
    not be scored, distilled from or exported as if it were the recorded one.
    """
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
