"""When does distillation help? Label regimes, runs side by side, the share of the gap closed (lesson 05).

A **regime** is what the student's labels look like: plentiful and clean,
drawn in a hurry (``data.NoisyLabels``: cells missed, outlines grown), or few
(only the first images labelled, the rest an unlabelled pool). In each, the
same student is trained twice on the same images, steps, batch and seed:

* **scratch**: the hard labels only (in the few-labels regime, only the
  labelled images);
* **distilled**: soft targets from the teacher (``distill.DistillConfig``
  with ``soft_weight`` and ``temperature``), and in the few-labels regime the
  pool too, labelled by the teacher (``distill.TeacherLabelled``).

The teacher's logits for the whole training images are computed once
(``DistillConfig.teacher_on_whole_images``), so a distilled step costs about
what a scratch step does, and ``run_jobs`` spreads the runs over worker
processes, one CPU thread each. ``summarise`` pairs each distilled run with
the scratch run of the same regime and seed and reports the share of the
gap to the teacher it closed (``metrics.gap_closed``).
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from .data import CellsDataset, NoisyLabels, check_label_noise
from .distill import (DistillConfig, TeacherLabelled, WithTeacherLogits, distill, soft_target_kl,
                      teacher_logits, weighted_soft_target_kl)
from . import models
from .checkpoint import load_into
from .env import set_seed
from .losses import weighted_bce_loss
from .metrics import gap_closed
from .models import default_student
from .train import evaluate


@dataclass(frozen=True)
class Regime:
    """What the student's labels look like.

    Args:
        name: how tables and figures call it.
        labelled: only the first ``labelled`` training images keep their labels;
            ``None`` labels them all.
        miss, dilate, erode: label noise, as in ``data.corrupt_labels`` (0 = clean).
        about: one line for the tables.
    """
    name: str
    labelled: int | None = None
    miss: float = 0.0
    dilate: int = 0
    erode: int = 0
    about: str = ""

    def __post_init__(self):
        check_label_noise(self.miss, self.dilate, self.erode)
        if self.labelled is not None and (isinstance(self.labelled, bool) or not isinstance(self.labelled, int)
                                          or self.labelled < 1):
            raise ValueError(f"Regime.labelled={self.labelled!r}: give a positive number of labelled "
                             f"images, or None for all")


REGIMES = (
    Regime("clean labels", about="every training image, labels as the generator drew them"),
    Regime("noisy labels", miss=0.3, dilate=2,
           about="every training image, 30% of the cells missed and outlines grown by 0-2 px"),
    Regime("few labels", labelled=2, about="2 labelled images; the rest are an unlabelled pool"),
)
"""The lesson's regimes: where distillation adds little, and two where the teacher knows more
than the labels."""


SOFT_LOSSES = {"kl": soft_target_kl, "weighted_kl": weighted_soft_target_kl}


@dataclass(frozen=True)
class Job:
    """One training run: a regime, scratch or distilled, a seed, a budget, the teacher's terms.

    ``soft_loss`` is ``"weighted_kl"`` (``distill.weighted_soft_target_kl``,
    pixels weighted by the training labels' border weight map, the default) or
    ``"kl"`` (``distill.soft_target_kl``, every pixel alike). ``keep=True``
    returns the trained student's weights in the row (``state_dict``).
    """
    regime: Regime
    distilled: bool
    seed: int = 0
    steps: int = 600
    soft_weight: float = 0.9
    temperature: float = 2.0
    soft_loss: str = "weighted_kl"
    label: str = ""
    batch_size: int = 8
    crop: int = 64
    keep: bool = False

    @property
    def recipe(self) -> str:
        return self.label or ("distilled" if self.distilled else "scratch")


@dataclass
class Shared:
    """What every run reads: the data and the teacher's logits, made once and sent to each worker."""
    train: CellsDataset
    val: CellsDataset
    logits: torch.Tensor                      # (N, 1, H, W): the teacher on each whole training image
    teacher_iou: float
    teacher_state: dict = field(repr=False)   # arch, config, state_dict: the teacher itself
    teacher_labels: TeacherLabelled = field(repr=False)   # its masks and weight maps of the same images


def shared_data(teacher: torch.nn.Module, train: CellsDataset, val: CellsDataset) -> Shared:
    """Score the teacher and label every training image with it (logits, masks, weights), once for all runs."""
    logits = teacher_logits(teacher, train.images)
    return Shared(train, val, logits, evaluate(teacher, val)["iou"],
                  {"arch": type(teacher).__name__, "config": dict(teacher.config),
                   "state_dict": {k: v.detach().cpu() for k, v in teacher.state_dict().items()}},
                  TeacherLabelled.from_logits(train.images, logits))


def regime_sets(regime: Regime, shared: Shared, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """``(labelled training set, unlabelled pool or None)`` of a regime, from the shared data.

    Label noise is seeded by ``seed`` (one corruption per run seed, the same
    for scratch and distilled). The pool is the indices of the training images
    without labels. (``run_job`` repeats a labelled set smaller than a batch
    so that a batch can be drawn; the step count, not the number of passes,
    is the budget.)
    """
    train = shared.train
    labelled: Dataset = train
    if regime.miss or regime.dilate or regime.erode:
        labelled = NoisyLabels(train, regime.miss, regime.dilate, regime.erode, seed=seed)
    pool = None
    if regime.labelled is not None:
        n = min(regime.labelled, len(train))
        pool = range(n, len(train))
        labelled = Subset(labelled, range(n))
    return labelled, pool


def _teacher(shared: Shared) -> torch.nn.Module:

    model = models.MODELS[shared.teacher_state["arch"]](**shared.teacher_state["config"])
    return load_into(model, shared.teacher_state["state_dict"]).eval()


def run_job(job: Job, shared: Shared) -> dict:
    """Train one student as ``job`` says and score it on the validation split; returns a result row."""
    labelled, pool = regime_sets(job.regime, shared, job.seed)
    start = time.perf_counter()
    set_seed(job.seed)
    student = default_student(in_channels=1, out_channels=1)
    cfg = DistillConfig(steps=job.steps, batch_size=job.batch_size, crop=job.crop, loss=weighted_bce_loss,
                        eval_every=job.steps, seed=job.seed, desc=f"{job.regime.name}: {job.recipe}",
                        soft_weight=job.soft_weight if job.distilled else 0.0, temperature=job.temperature,
                        soft_loss=SOFT_LOSSES[job.soft_loss])
    teacher = _teacher(shared)
    idx = list(getattr(labelled, "indices", range(len(labelled))))
    if job.distilled:
        labelled = WithTeacherLogits(labelled, shared.logits[idx])
    if job.distilled and pool is not None:
        extra = WithTeacherLogits(Subset(shared.teacher_labels, pool), shared.logits[list(pool)])
        labelled = ConcatDataset([labelled, extra])
    labelled = _at_least(labelled, job.batch_size)
    hist = distill(student, teacher, labelled, None, cfg)
    scores = evaluate(student, shared.val)
    kept = {"state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()}} if job.keep else {}
    return {**kept, "regime": job.regime.name, "recipe": job.recipe, "seed": job.seed, "steps": job.steps,
            "soft_weight": cfg.soft_weight, "temperature": job.temperature, "soft_loss": job.soft_loss,
            "iou": scores["iou"], "dice": scores["dice"], "instance_f1": scores["instance_f1"],
            "seconds": round(time.perf_counter() - start, 1), "final_loss": hist["loss"][-1]}


def _at_least(dataset: Dataset, n: int) -> Dataset:
    """``dataset`` repeated until it holds at least ``n`` items."""
    return dataset if len(dataset) >= n else ConcatDataset([dataset] * -(-n // len(dataset)))


_SHARED: Shared | None = None


def _init_worker(shared: Shared) -> None:
    """One thread, and no output: a worker inherits the kernel's streams, so its progress bars would
    land in the notebook; ``run_jobs`` reports each finished run from the parent instead."""
    import os
    import sys

    global _SHARED
    torch.set_num_threads(1)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    _SHARED = shared


def _run_in_worker(job: Job) -> dict:
    return run_job(job, _SHARED)


def run_jobs(jobs: list[Job], shared: Shared, workers: int = 2, report=print) -> list[dict]:
    """Run ``jobs`` on ``workers`` processes of one CPU thread each; rows in the order given.

    Workers start with the ``spawn`` method (safe in Jupyter and on every
    platform) and get ``shared`` once. ``report`` is called with one line per
    finished run (``print`` by default; ``None`` for silence). ``workers=1``
    runs in this process.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: give a positive number of processes")
    if not jobs:
        raise ValueError("jobs is empty: give at least one Job")
    say = report or (lambda line: None)
    rows: list[dict | None] = [None] * len(jobs)
    if workers == 1:
        for i, job in enumerate(jobs):
            rows[i] = run_job(job, shared)
            say(_line(rows[i]))
        return rows
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(shared,)) as pool:
        futures = {pool.submit(_run_in_worker, job): i for i, job in enumerate(jobs)}
        from concurrent.futures import as_completed
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            say(_line(rows[futures[fut]]))
    return rows


def _line(row: dict) -> str:
    return (f"{row['regime']:>13} | {row['recipe']:<14} seed {row['seed']} | {row['steps']} steps: "
            f"IoU {row['iou']:.3f}, instance F1 {row['instance_f1']:.3f} ({row['seconds']:.0f} s)")


def summarise(rows: list[dict], teacher_iou: float, teacher_f1: float | None = None) -> list[dict]:
    """One row per (regime, recipe): IoU and instance F1 over seeds, and for distilled runs the gap closed.

    Each distilled run is paired with the scratch run of the same regime, seed
    and steps. ``gap closed`` (its mean, min and max over seeds) is the share
    of the pixel-IoU gap to the teacher; with ``teacher_f1``, ``F1 gap closed``
    is the same for instance F1 (left out where a scratch seed is not below the
    teacher: there is no gap). ``separated`` says whether the worst distilled
    seed beats the best scratch seed on IoU, ``F1 separated`` the same on
    instance F1: a difference that no seed's luck explains.
    """
    out = []
    keys = list(dict.fromkeys((r["regime"], r["recipe"], r["steps"]) for r in rows))
    for regime, recipe, steps in keys:
        runs = [r for r in rows if (r["regime"], r["recipe"], r["steps"]) == (regime, recipe, steps)]
        ious, f1s = np.array([r["iou"] for r in runs]), np.array([r["instance_f1"] for r in runs])
        row = {"regime": regime, "recipe": recipe, "steps": steps, "seeds": len(runs),
               "IoU": float(ious.mean()), "IoU min": float(ious.min()), "IoU max": float(ious.max()),
               "instance F1": float(f1s.mean()), "F1 min": float(f1s.min()), "F1 max": float(f1s.max())}
        if recipe != "scratch":
            base = {r["seed"]: r for r in rows
                    if (r["regime"], r["recipe"], r["steps"]) == (regime, "scratch", steps)}
            paired = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
            if paired:
                row.update(_paired(paired, teacher_iou, teacher_f1))
        out.append(row)
    return out


def _paired(paired: list[tuple[dict, dict]], teacher_iou: float, teacher_f1: float | None) -> dict:
    """What ``summarise`` says of distilled runs paired with their seeds' scratch runs."""
    closed = np.array([gap_closed(r["iou"], s["iou"], teacher_iou) for r, s in paired])
    out = {"gap closed": float(closed.mean()), "gap closed min": float(closed.min()),
           "gap closed max": float(closed.max()),
           "F1 change": float(np.mean([r["instance_f1"] - s["instance_f1"] for r, s in paired])),
           "separated": bool(min(r["iou"] for r, _ in paired) > max(s["iou"] for _, s in paired)),
           "F1 separated": bool(min(r["instance_f1"] for r, _ in paired)
                                > max(s["instance_f1"] for _, s in paired))}
    if teacher_f1 is not None and all(s["instance_f1"] < teacher_f1 for _, s in paired):   # else: no gap
        f1_closed = np.array([gap_closed(r["instance_f1"], s["instance_f1"], teacher_f1) for r, s in paired])
        out.update({"F1 gap closed": float(f1_closed.mean()), "F1 gap closed min": float(f1_closed.min()),
                    "F1 gap closed max": float(f1_closed.max())})
    return out


def student_of(row: dict) -> torch.nn.Module:
    """The student a ``keep=True`` run trained, rebuilt from its row, in eval mode."""
    if "state_dict" not in row:
        raise ValueError(f"the run {row['regime']!r} / {row['recipe']!r} kept no weights: run its Job with keep=True")
    return load_into(default_student(in_channels=1, out_channels=1), row["state_dict"]).eval()


def prediction_report(prediction: str | None, summary: list[dict]) -> str:
    """Compare a learner's guess of the regime where distillation closes the most of the gap with the map."""
    dist = [s for s in summary if s["recipe"] == "distilled" and "gap closed" in s]
    if not dist:
        raise ValueError("summary has no distilled rows with a scratch run to compare: run the map first")
    steps = min(s["steps"] for s in dist)
    dist = [s for s in dist if s["steps"] == steps]
    best = max(dist, key=lambda s: s["gap closed"])
    names = [s["regime"] for s in dist]
    measured = ", ".join(f"{s['regime']} {s['gap closed']:.0%}" for s in dist)
    if prediction not in names:
        return (f"no prediction to compare (give one of {names}); measured share of the gap closed: {measured}")
    verdict = "right" if prediction == best["regime"] else "not what the map says"
    return (f"you predicted {prediction!r}: {verdict}. Most of the gap closed in {best['regime']!r}; "
            f"measured: {measured}")


def as_dict(job: Job) -> dict:
    """A job as plain data (for manifests and tables)."""
    return {**asdict(job), "regime": asdict(job.regime)}
