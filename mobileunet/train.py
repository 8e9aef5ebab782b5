"""A plain training loop over a dataclass config, shared by every lesson.

Segmentation datasets yield ``(image, mask, weight)``; a loss takes
``(logits, mask, weight)``. ``train`` returns a history dict that
``plotting.plot_history`` draws.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import load_into
from .env import get_device
from .losses import bce_loss
from .metrics import dice, instance_f1, iou
from .validate import whole_number

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def random_flips(*tensors: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The same random flip / 90-degree turn applied to image, mask and weight."""
    k = int(torch.randint(0, 8, (1,), generator=generator))
    out = []
    for t in tensors:
        t = torch.rot90(t, k % 4, dims=(-2, -1))
        out.append(t.flip(-1) if k >= 4 else t)
    return tuple(out)


def random_crop(tensors: tuple[torch.Tensor, ...], size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The same random ``size`` x ``size`` window cut from each batch tensor, per sample.

    A UNet is fully convolutional, so it trains on small tiles and predicts on
    whole images (the paper's overlap-tile strategy, Sec. 2, without the overlap).
    """
    B, _, H, W = tensors[0].shape
    if size > min(H, W):
        raise ValueError(f"crop {size} is larger than the images ({H}x{W}): use crop <= {min(H, W)}")
    ys = torch.randint(0, H - size + 1, (B,), generator=generator).tolist()
    xs = torch.randint(0, W - size + 1, (B,), generator=generator).tolist()
    return tuple(torch.stack([t[b, :, y:y + size, x:x + size] for b, (y, x) in enumerate(zip(ys, xs))])
                 for t in tensors)


PRECISIONS = ("fp32", "bf16")
"""``TrainConfig.precision``: float32 throughout, or bfloat16 autocast for the forward pass and the loss
(the weights, the optimiser and the gradients stay float32)."""


@dataclass
class TrainConfig:
    """What a training run needs besides the model and the data.

    ``steps`` is the budget: lessons compare models at the same number of steps
    and batch size, not the same wall time. ``device`` defaults to the best
    one present, so a lesson trains on a GPU where there is one. ``crop`` trains on random tiles of
    that side (``None`` trains on whole images); evaluation always sees whole images.
    """
    steps: int = 300
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    loss: Loss = bce_loss
    augment: Callable[..., tuple[torch.Tensor, ...]] | None = random_flips
    crop: int | None = None
    eval_every: int = 50
    seed: int = 0
    device: str | None = None              # None: the best present (env.get_device): cuda, mps, else cpu
    precision: str = "fp32"                # "bf16": forward and loss under torch.autocast in bfloat16
    channels_last: bool = False            # the model and its batches in channels-last memory order
    desc: str = "train"
    extra: dict = field(default_factory=dict)  # free-form notes copied into the history

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            whole_number(f"TrainConfig.{name}", value)
        try:
            self.device = get_device(self.device).type
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"TrainConfig.device={self.device!r}: {err}; use 'cpu', 'cuda' or 'mps', or None "
                             f"for the best present") from None
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: use one of {PRECISIONS}")
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"TrainConfig.channels_last={self.channels_last!r}: give True or False")
        if not callable(self.loss):
            raise TypeError(f"TrainConfig.loss must be a function (logits, mask, weight) -> loss, "
                            f"got {self.loss!r}: use e.g. mobileunet.losses.dice_loss")


def batches(dataset: Dataset, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches; a new shuffle each pass over the data."""
    if len(dataset) < batch_size:
        raise ValueError(f"dataset has {len(dataset)} items, fewer than batch_size={batch_size}: "
                         f"lower the batch size or make more data")
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True,
                              drop_last=True, generator=generator)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unpack_batch(batch) -> tuple[torch.Tensor, ...]:
    """``(image, mask, weight, *extra)`` from a batch; an ``(image, mask)`` batch gets weight 1.

    Extra tensors (distillation's cached teacher logits) are cropped and
    flipped with the image and passed on to the step's loss.
    """
    if len(batch) >= 3:
        return tuple(batch)
    image, mask = batch
    return image, mask, torch.ones_like(mask)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 16, pad: int = 0,
            activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.sigmoid) -> torch.Tensor:
    """The model's outputs for a stack of images, in batches, in eval mode, on the model's device, back on the CPU.

    ``activation`` turns them into what the task reads: ``torch.sigmoid``
    (segmentation probabilities, the default) or None (an effect's images,
    ``effect_distill.predict_effect``). ``pad`` reflects each image by that
    many pixels on every side first and crops the output back.
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0 or (pad and pad >= min(images.shape[-2:])):
        raise ValueError(f"pad={pad!r}: give whole pixels, 0 or more and smaller than the images "
                         f"({tuple(images.shape[-2:])})")
    model.eval()
    device = next(model.parameters()).device

    def run(x):
        y = model(nn.functional.pad(x, (pad,) * 4, mode="reflect") if pad else x)
        y = y[..., pad:-pad, pad:-pad] if pad else y
        return activation(y) if activation is not None else y

    return torch.cat([run(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 16) -> dict[str, float]:
    """IoU and Dice of the thresholded predictions over a whole split.

    Datasets that know their cell ids (``CellsDataset.labels``) also get the
    object-level ``instance_f1``: are touching cells kept apart?
    """
    images, masks = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        image, mask = unpack_batch(batch)[:2]
        images.append(image)
        masks.append(mask)
    probs = predict(model, torch.cat(images), batch_size)
    target = torch.cat(masks)
    scores = {"iou": iou(probs, target), "dice": dice(probs, target)}
    if isinstance(getattr(dataset, "labels", None), torch.Tensor):
        scores["instance_f1"] = instance_f1(probs, dataset.labels)["instance_f1"]
    return scores


StepLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""``step_loss(model, image, mask, weight, *extra) -> (loss, parts)``: one step's loss and its named
terms; ``extra`` are the batch's tensors after the weight (see ``unpack_batch``)."""


def train(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig, **resuming) -> dict:
    """Train ``model`` for ``cfg.steps`` steps with AdamW and a cosine schedule.

    Returns a history: ``step``/``loss`` every step, ``eval_step``/``val_iou``/
    ``val_dice`` every ``cfg.eval_every`` steps and at the end, plus ``seconds``.
    ``resuming`` (``state``, ``save_every``, ``save_state``) go to ``fit``.
    """
    def step_loss(model, image, mask, weight):
        return cfg.loss(model(image), mask, weight), {}

    return fit(model, train_set, val_set, cfg, step_loss, **resuming)


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        step_loss: StepLoss, extra_params: list[nn.Parameter] | None = None,
        notes: dict | None = None, evaluate_fn: Callable[[nn.Module], dict] | None = None,
        state: dict | None = None, save_every: int = 0,
        save_state: Callable[[dict], None] | None = None) -> dict:
    """The loop behind ``train``, ``distill.distill`` and the effect: batches, crops, flips, AdamW, cosine.

    ``step_loss`` turns one batch into a loss (``train`` calls the model and
    ``cfg.loss``; distillation also asks a teacher). Its named terms are kept
    per step as ``loss_<name>`` in the history. ``extra_params`` are optimised
    with the model's (distillation's hint adapters); ``notes`` join the
    history's ``config``.

    Every ``cfg.eval_every`` steps and at the end, ``evaluate_fn(model)`` scores
    the model (default: ``evaluate(model, val_set)``, segmentation; none when
    both are None); each score ``k`` is kept as ``val_<k>`` beside ``eval_step``.

    Several processes (``torchrun``, ``torch.distributed`` initialised): the
    model runs under ``DistributedDataParallel`` and ``cfg.batch_size`` is the
    batch of all processes together, which must divide by their number. Every
    process draws the same batch, crops and flips (one seed) and trains on its
    own slice; gradients are averaged across processes. So N processes take
    the same steps as one process with the whole batch, except that each
    BatchNorm layer sees only its own slice (``SyncBatchNorm`` on CUDA, where
    the backend supports it). Only rank 0 evaluates and saves states.

    Resuming: every ``save_every`` steps ``save_state(s)`` receives the run's
    state (step, model, optimiser, schedule, history; plain tensors and
    numbers, loadable with ``weights_only=True``). Passing such an ``s`` back as
    ``state`` continues the run: the data stream is replayed to the same point
    (same crops and flips), so N steps, a stop and M more give the same
    weights as N + M steps in one go. Needs the same config and data.
    """
    device = torch.device(cfg.device)
    model, net, rank, size = _placed(model, device, cfg.batch_size, cfg.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(list(model.parameters()) + list(extra_params or []), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    if evaluate_fn is None and val_set is not None:
        evaluate_fn = lambda m: evaluate(m, val_set)  # noqa: E731
    hist: dict = {"step": [], "loss": [], "eval_step": [],
                  "config": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                             "loss": getattr(cfg.loss, "__name__", str(cfg.loss)), "crop": cfg.crop,
                             **({"precision": cfg.precision} if cfg.precision != "fp32" else {}),
                             **({"channels_last": True} if cfg.channels_last else {}),
                             **(notes or {}), **cfg.extra}}
    stream = _batch_stream(train_set, cfg, gen, rank, size)
    done, seconds_before = 0, 0.0
    if state is not None:
        done = _resume(state, cfg, model, opt, sched, extra_params)
        hist = copy.deepcopy(state["history"])
        seconds_before = float(hist.get("seconds", 0.0))
        for _ in range(done):                          # the same batches, crops and flips as before
            next(stream)
    start = time.perf_counter()
    bar = tqdm(range(done + 1, cfg.steps + 1), desc=cfg.desc, leave=False, disable=rank > 0)
    for step in bar:
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, parts = step_loss(net, *_on(device, cfg.channels_last, next(stream)))
        loss = loss.float()
        logged = _step(loss, opt, sched, extra_params, size, f"{cfg.desc}: at step {step}", cfg.lr)
        hist["step"].append(step)
        hist["loss"].append(logged)
        for name, value in parts.items():
            hist.setdefault(f"loss_{name}", []).append(float(value))
        if rank == 0 and evaluate_fn is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            scores = evaluate_fn(model)
            _record_scores(hist, step, scores)
            first = next(iter(scores))
            bar.set_postfix(loss=f"{logged:.3f}", **{f"val_{first}": f"{scores[first]:.3f}"})
        if rank == 0 and save_state is not None and save_every and (step % save_every == 0 or step == cfg.steps):
            hist["seconds"] = seconds_before + time.perf_counter() - start
            save_state(_training_state(step, cfg, model, opt, sched, extra_params, hist))
    hist["seconds"] = seconds_before + time.perf_counter() - start
    hist["config"]["world_size"] = size
    last = {k[4:]: v[-1] for k, v in hist.items() if k.startswith("val_") and v}
    if rank == 0:
        print(f"{cfg.desc}: {cfg.steps} steps in {hist['seconds']:.0f} s, final loss {hist['loss'][-1]:.4f}"
              + "".join(f", val {k} {v:.3f}" for k, v in last.items()))
    return hist


def _placed(model: nn.Module, device: torch.device, batch_size: int,
            channels_last: bool = False) -> tuple[nn.Module, nn.Module, int, int]:
    """The model on ``device`` and what ``fit`` calls: itself, or its ``DistributedDataParallel`` wrapper when
    several processes train (``SyncBatchNorm`` on CUDA); with this process's rank and their number."""
    rank, size = world()
    if batch_size % size:
        raise ValueError(f"batch_size={batch_size} is the batch of all {size} processes together: "
                         f"give a multiple of {size}")
    if size > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net = model if size == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, net, rank, size


def _on(device: torch.device, channels_last: bool, tensors) -> list[torch.Tensor]:
    """A batch on ``device``, its images in channels-last order if asked."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [t.to(device, memory_format=fmt) if t.ndim == 4 else t.to(device) for t in tensors]


def _record_scores(hist: dict, step: int, scores: dict) -> None:
    hist["eval_step"].append(step)
    for k, v in scores.items():
        hist.setdefault(f"val_{k}", []).append(float(v))


def _training_state(step: int, cfg: TrainConfig, model: nn.Module, opt, sched, extra_params, hist: dict) -> dict:
    """What ``fit(state=...)`` resumes from: plain tensors and numbers (``weights_only=True`` loads it), copied."""
    return copy.deepcopy({"step": step, "steps": cfg.steps, "seed": cfg.seed, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "extra": [p.detach().cpu() for p in extra_params or []], "history": hist})


def _batch_stream(train_set: Dataset, cfg: TrainConfig, gen: torch.Generator, rank: int, size: int):
    """``fit``'s endless batches, cropped and flipped; with several processes, this process's slice of each."""
    for batch in batches(train_set, cfg.batch_size, gen):
        tensors = unpack_batch(batch)
        if cfg.crop is not None:
            tensors = random_crop(tensors, cfg.crop, gen)
        if cfg.augment is not None:
            tensors = cfg.augment(*tensors, generator=gen)
        if size > 1:                                   # every process drew the whole batch: keep a slice
            share = cfg.batch_size // size
            tensors = tuple(t[rank * share:(rank + 1) * share] for t in tensors)
        yield tensors


def _step(loss: torch.Tensor, opt, sched, extra_params, size: int, where: str, lr: float) -> float:
    """One optimiser step on ``loss``; returns the loss of the whole batch (averaged over the processes)."""
    logged = loss.detach().clone()
    if size > 1:                                       # the whole batch's loss, the same in every process
        torch.distributed.all_reduce(logged)
        logged /= size
    if not torch.isfinite(logged):
        raise ValueError(f"{where} the loss is {logged.item()}: training diverged; "
                         f"lower the learning rate (now {lr:g}) or check the data")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if size > 1:
        for p in extra_params or []:                   # outside the wrapped model: average them by hand
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= size
    opt.step()
    sched.step()
    return logged.item()


def _resume(state: dict, cfg: TrainConfig, model: nn.Module, opt, sched, extra_params) -> int:
    """Load a ``fit`` state into the model, optimiser and schedule; returns the steps already done."""
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "scheduler", "history"} <= set(state):
        raise ValueError("state is not a training state saved by fit (needs step, model, optimizer, "
                         "scheduler, history)")
    if state.get("steps") != cfg.steps or state.get("seed") != cfg.seed:
        raise ValueError(f"the saved run had steps={state.get('steps')}, seed={state.get('seed')}; this one "
                         f"has steps={cfg.steps}, seed={cfg.seed}: resume with the same budget and seed")
    done = int(state["step"])
    if not 0 <= done <= cfg.steps:
        raise ValueError(f"the saved run is at step {done}, outside 0..{cfg.steps}")
    load_into(model, state["model"], source="the saved training state")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    for p, saved in zip(extra_params or [], state.get("extra", [])):
        p.data.copy_(saved)
    return done
