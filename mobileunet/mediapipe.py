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
* ``TfliteRunner`` runs a ``.tflite`` file through LiteRT (``ai-edge-litert``,
  the ``mediapipe`` extra), with a thread count like ``export.OrtRunner``.

Licence: the wheel declares Apache-2.0 (``License: Apache 2.0`` in its
METADATA, the Apache 2.0 text as its LICENSE file), and the two files sit in
MediaPipe's Apache-2.0 repository under ``mediapipe/modules/``. The model
cards (PDFs linked from MediaPipe's documentation) could not be read offline;
``data/README.md`` says what was checked.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .checkpoint import sha256
from .env import data_dir

MEDIAPIPE_VERSION = "0.10.14"
"""The MediaPipe release whose wheel the models are taken from (May 2024)."""
INSTALL = 'pip install -e ".[mediapipe]"'
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
    return data_dir() / "models"


def model_path(name: str) -> Path:
    """The path model ``name`` has once fetched (it may not exist: see ``available``)."""
    return models_dir() / Path(_model(name).member).name


def verify(name: str, path: str | Path | None = None) -> Path:
    """``path`` (default ``model_path(name)``) if it holds exactly the pinned file, else an error saying what to do."""
    m = _model(name)
    path = Path(path) if path is not None else model_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: fetch the MediaPipe models with {FETCH}")
    digest = sha256(path)
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
    if not force and all(p.is_file() and sha256(p) == MODELS[n].sha256 for n, p in have.items()):
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


# --- running a .tflite file ------------------------------------------------------------------


@contextlib.contextmanager
def _litert_quiet():
    """Hide LiteRT's 'INFO: Created TensorFlow Lite XNNPACK delegate' line, which it writes to the
    process's stderr in C; anything else it writes there is passed on."""
    fd = 2                                  # the C library's stderr, also inside Jupyter (which pipes it)
    try:
        saved = os.dup(fd)
    except OSError:                         # no file descriptor 2 at all
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as buf:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            kept = [line for line in buf.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("INFO: ")]
            if kept:
                sys.stderr.write("".join(kept))


def _threads(threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads={threads!r}: use a whole number of threads, 1 or more")
    return int(threads)


class TfliteRunner:
    """A ``.tflite`` model on LiteRT's CPU interpreter (XNNPACK) with ``threads`` threads.

    Call it with an NHWC float32 array (or torch tensor) of the model's input
    shape; it returns the first output, as the same type. ``outputs(x)`` returns
    every output by name. ``inputs`` and ``output_details`` describe the
    tensors: name, shape, dtype.

    Example:
        >>> run = TfliteRunner(model_path("selfie_segmentation"), threads=1)   # doctest: +SKIP
        >>> run(np.zeros((1, 256, 256, 3), np.float32)).shape                  # doctest: +SKIP
        (1, 256, 256, 1)
    """

    def __init__(self, path: str | Path, threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise ImportError(f"LiteRT is missing (needed to run MediaPipe's .tflite models): {INSTALL} "
                              f"(or pip install ai-edge-litert)") from err
        self.path, self.threads = Path(path), _threads(threads)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is missing: for MediaPipe's models run {FETCH}")
        with _litert_quiet():
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        if len(self.input_details) != 1:
            raise ValueError(f"{self.path.name} has {len(self.input_details)} inputs; TfliteRunner runs "
                             f"single-input models")
        self.input_shape = tuple(int(s) for s in self.input_details[0]["shape"])
        self.input_dtype = np.dtype(self.input_details[0]["dtype"])

    @property
    def tensors(self) -> list[dict]:
        """Every input and output: ``{"kind", "name", "shape", "dtype"}``."""
        return [{"kind": kind, "name": d["name"], "shape": tuple(int(s) for s in d["shape"]),
                 "dtype": np.dtype(d["dtype"]).name}
                for kind, details in (("input", self.input_details), ("output", self.output_details))
                for d in details]

    def outputs(self, x) -> dict[str, np.ndarray]:
        """Run once: ``{output name: array}``, arrays of the model's output shapes."""
        x = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        if x.dtype != self.input_dtype:
            raise TypeError(f"the input is {x.dtype}; {self.path.name} takes {self.input_dtype.name}: "
                            f"x.astype(np.{self.input_dtype.name})")
        if x.shape != self.input_shape:
            hint = " (this model is NHWC: x.permute(0, 2, 3, 1) for a torch NCHW tensor)" \
                if x.ndim == 4 and x.shape[1] == self.input_shape[3] else ""
            raise ValueError(f"the input has shape {x.shape}; {self.path.name} takes {self.input_shape}{hint}")
        self.interpreter.set_tensor(self.input_details[0]["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        return {d["name"]: self.interpreter.get_tensor(d["index"]) for d in self.output_details}

    def __call__(self, x):
        y = next(iter(self.outputs(x).values()))
        if hasattr(x, "numpy"):
            import torch

            return torch.from_numpy(y)
        return y

    def param_count(self) -> int:
        """Numbers stored in the file's constant tensors (weights, biases): what the model carries."""
        produced, read = set(), set()
        for op in self.interpreter._get_ops_details():
            produced.update(int(i) for i in op["outputs"])
            read.update(int(i) for i in op["inputs"] if i >= 0)
        inputs = {int(d["index"]) for d in self.input_details}
        sizes = {int(d["index"]): int(np.prod(d["shape"])) for d in self.interpreter.get_tensor_details()}
        return sum(sizes[i] for i in read - produced - inputs)


def timed(path: str | Path, x: np.ndarray) -> Callable[[int], Callable[[], object]]:
    """``threads -> (() -> output)`` for ``profile.measure_latency(extra=...)``: the .tflite run on ``x``."""
    def make(threads: int):
        run = TfliteRunner(path, threads)
        return lambda: run.outputs(x)
    return make
