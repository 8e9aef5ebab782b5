"""Google's production on-device models, offline: MediaPipe's selfie segmentation and BlazeFace.

The course's student is measured against the models Google ships inside
MediaPipe: the selfie segmentation model (a MobileNetV3-like person
segmenter, 256x256 RGB in, a 256x256 mask out) and the short-range BlazeFace
face detector (128x128 RGB in, 896 anchor boxes out; decoded in
``mobileunet.blazeface``). Both are small ``.tflite`` files inside the
``mediapipe`` wheel on PyPI, so they come through the same package registry
as everything else the course installs:

* ``fetch()`` runs ``pip download --no-deps mediapipe==0.10.14`` into a
  temporary folder, takes the two files out of the wheel (a zip) and checks
  their sha256 against the values pinned in ``MODELS``; they land in
  ``data/models/`` (git-ignored). ``bash course.sh models`` or
  ``python -m mobileunet.commands.mediapipe fetch`` call it. Nothing is
  downloaded on import or by a notebook.

Licence: the wheel declares Apache-2.0 (``License: Apache 2.0`` in its
METADATA, the Apache 2.0 text as its LICENSE file), and the two files sit in
MediaPipe's Apache-2.0 repository under ``mediapipe/modules/``. The model
cards (PDFs linked from MediaPipe's documentation) could not be read offline;
``data/README.md`` says what was checked.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

MEDIAPIPE_VERSION = "0.10.14"
"""The MediaPipe release whose wheel the models are taken from (May 2024)."""
FETCH = "bash course.sh models (or python -m mobileunet.commands.mediapipe fetch)"
FALLBACK_WHEEL = ("--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11")
"""pip options for a wheel that exists whatever this machine is: the two model files are the same
bytes in every platform's wheel (checked for Linux x86-64, macOS universal2 and Windows amd64)."""


@dataclass(frozen=True)
class MediaPipeModel:
    """One model file inside the mediapipe wheel: where it sits, its pinned sha256 and size, its tensors."""

    name: str
    member: str                     # path inside the wheel
    sha256: str
    bytes: int
    input_shape: tuple[int, ...]    # NHWC, float32
    what: str


MODELS = {m.name: m for m in (
    MediaPipeModel("selfie_segmentation", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                   "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", 249_505, (1, 256, 256, 3),
                   "person segmentation: RGB in [0, 1] -> (1, 256, 256, 1) person probability"),
    MediaPipeModel("face_detection_short_range",
                   "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                   "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", 229_714, (1, 128, 128, 3),
                   "BlazeFace short range: RGB in [-1, 1] -> 896 boxes x 16 numbers and 896 scores"),
)}
"""The two files the course uses, sha256 as taken from the mediapipe 0.10.14 wheel (and as its RECORD lists)."""


def _model(name: str) -> MediaPipeModel:
    if name not in MODELS:
        raise ValueError(f"unknown MediaPipe model {name!r}: use one of {sorted(MODELS)}")
    return MODELS[name]


def models_dir() -> Path:
    """Where the fetched models live: ``data/models/`` (or ``$MOBILEUNET_DATA/models``)."""
    from .env import data_dir

    return data_dir() / "models"


def model_path(name: str) -> Path:
    """The path model ``name`` has once fetched (it may not exist: see ``available``)."""
    return models_dir() / Path(_model(name).member).name


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(name: str, path: str | Path | None = None) -> Path:
    """``path`` (default ``model_path(name)``) if it holds exactly the pinned file, else an error saying what to do."""
    m = _model(name)
    path = Path(path) if path is not None else model_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: fetch the MediaPipe models with {FETCH}")
    digest = file_sha256(path)
    if digest != m.sha256:
        raise ValueError(f"{path} has sha256 {digest[:12]}..., not the pinned {m.sha256[:12]}... of mediapipe "
                         f"{MEDIAPIPE_VERSION}'s {Path(m.member).name}: delete it and run {FETCH}")
    return path


def available(name: str) -> bool:
    """True when model ``name`` has been fetched and matches its pinned sha256."""
    try:
        verify(name)
        return True
    except (FileNotFoundError, ValueError):
        return False


class FetchError(RuntimeError):
    """The models could not be fetched (no pip, no network, no wheel): the message says why."""


def _pip_download(python: str, folder: Path, extra: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--timeout", "20",
           "--retries", "1", "--dest", str(folder), *extra, f"mediapipe=={MEDIAPIPE_VERSION}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _network_trouble(pip_output: str) -> bool:
    return any(w in pip_output for w in ("connection", "timed out", "name resolution", "network is unreachable",
                                         "proxy", "ssl"))


def download_wheel(folder: str | Path, python: str | None = None, timeout: float = 600) -> Path:
    """``pip download --no-deps mediapipe==0.10.14`` into ``folder``: this platform's wheel, or when
    there is none (a Python or CPU MediaPipe never built for), the Linux x86-64 one for Python 3.11,
    which holds the same model files. Returns the wheel's path; ``FetchError`` says why it failed."""
    python, folder = python or sys.executable, Path(folder)
    try:
        done = _pip_download(python, folder, (), timeout)
        said = (done.stderr + done.stdout).lower()
        if done.returncode != 0 and "no matching distribution" in said and not _network_trouble(said):
            done = _pip_download(python, folder, FALLBACK_WHEEL, timeout)   # no wheel for this platform
    except FileNotFoundError as err:
        raise FetchError(f"cannot run {python}: {err}") from err
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"pip did not finish within {timeout:.0f} s (a slow or missing network?): "
                         f"try again later, or copy the two .tflite files into {models_dir()}") from err
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        if "No module named pip" in tail:
            why = f"{python} has no pip: python -m ensurepip, then try again"
        else:
            why = "pip could not download it (no network, or no access to the package index?)"
        raise FetchError(f"could not download mediapipe=={MEDIAPIPE_VERSION}: {why}\npip said:\n{tail}")
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise FetchError(f"pip reported success but left no mediapipe-{MEDIAPIPE_VERSION} wheel in {folder}")
    return wheels[0]


def extract(wheel: str | Path, dest: str | Path | None = None, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Take the model files out of a mediapipe wheel into ``dest`` (default ``models_dir()``), each
    checked against its pinned sha256 before it is written (a file is never left half-written)."""
    dest = Path(dest) if dest is not None else models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in names or MODELS:
            m = _model(name)
            try:
                data = z.read(m.member)
            except KeyError:
                raise FetchError(f"{Path(wheel).name} has no {m.member}: "
                                 f"is it mediapipe {MEDIAPIPE_VERSION}?") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != m.sha256:
                raise FetchError(f"{m.member} in {Path(wheel).name} has sha256 {digest[:12]}..., not the pinned "
                                 f"{m.sha256[:12]}...: the download is damaged or not the pinned release")
            path = dest / Path(m.member).name
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            out[name] = path
    return out


def fetch(dest: str | Path | None = None, python: str | None = None, force: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Path]:
    """Both models in ``dest`` (default ``data/models/``), downloaded only when one is missing or wrong.

    The wheel (about 36 MB) goes to a temporary folder that is removed again.
    Raises ``FetchError`` with the reason when pip or the network fails.
    """
    dest = Path(dest) if dest is not None else models_dir()
    have = {n: dest / Path(m.member).name for n, m in MODELS.items()}
    if not force and all(p.is_file() and file_sha256(p) == MODELS[n].sha256 for n, p in have.items()):
        log(f"[models] already present and verified in {dest}")
        return have
    with tempfile.TemporaryDirectory(prefix="mobileunet-mediapipe-") as tmp:
        log(f"[models] pip download --no-deps mediapipe=={MEDIAPIPE_VERSION} (about 36 MB, kept only until "
            f"the two model files are out)")
        wheel = download_wheel(tmp, python)
        out = extract(wheel, dest)
    for name, path in out.items():
        log(f"[models] {path} ({path.stat().st_size / 1e3:.0f} kB, sha256 {MODELS[name].sha256[:12]}... ok)")
    return out
