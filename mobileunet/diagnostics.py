"""Checks to run before a long training run: the habits of lesson 02's last section.

``overfit_batch`` trains on one fixed batch: a model and loss that are wired
up right drive its loss close to zero within a few hundred steps, so a loss
that stalls there points at a bug, not at too little data. ``lr_range_test``
raises the learning rate step by step and records the loss (Smith, "Cyclical
Learning Rates for Training Neural Networks", 2017, Sec. 3.3), which shows
how high a learning rate can go before training diverges. ``layer_stats``
reports each block's activations and gradients for one batch: dead ReLUs,
exploding or vanishing signals show up there first.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .profile import _modules_at
from .train import Loss


def _check_batch(image: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if image.dim() != 4 or mask.dim() != 4 or image.shape[0] != mask.shape[0]:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)}: need (B, C, H, W) tensors "
                         f"with the same batch size")
    return torch.ones_like(mask) if weight is None else weight


def overfit_batch(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, loss: Loss,
                  weight: torch.Tensor | None = None, steps: int = 200, lr: float = 3e-3) -> list[float]:
    """Train ``model`` on one fixed batch for ``steps`` AdamW steps; returns the loss at every step.

    No crops, no flips, no schedule: the same batch each step, so the only
    thing that can stop the loss from falling is the model, the loss or a bug
    between them.
    """
    weight = _check_batch(image, mask, weight)
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        value = loss(model(image), mask, weight)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        losses.append(value.item())
    return losses


def lr_range_test(model: nn.Module, batches, loss: Loss, lr_min: float = 1e-5, lr_max: float = 1.0,
                  steps: int = 100, stop_factor: float = 4.0) -> dict[str, list[float]]:
    """The loss as the learning rate grows geometrically from ``lr_min`` to ``lr_max``, one step each.

    ``batches`` yields ``(image, mask, weight)`` (a fresh batch per step, as in
    training). The test stops early once the loss is ``stop_factor`` times the
    lowest seen (or not finite): the learning rate has passed the point where
    training diverges. Returns ``{"lr": [...], "loss": [...]}``; a good
    learning rate sits a few times below the one with the lowest loss, where
    the curve still falls steeply. The model is changed: pass a fresh one.
    """
    if not 0 < lr_min < lr_max:
        raise ValueError(f"lr_min={lr_min}, lr_max={lr_max}: need 0 < lr_min < lr_max")
    if steps < 2:
        raise ValueError(f"steps={steps}: need at least 2")
    opt = torch.optim.AdamW(model.parameters(), lr=lr_min)
    ratio = (lr_max / lr_min) ** (1 / (steps - 1))
    out: dict[str, list[float]] = {"lr": [], "loss": []}
    model.train()
    for step, (image, mask, weight) in zip(range(steps), batches):
        lr = lr_min * ratio**step
        for group in opt.param_groups:
            group["lr"] = lr
        value = loss(model(image), mask, weight)
        if not math.isfinite(value.item()):
            break
        out["lr"].append(lr)
        out["loss"].append(value.item())
        if value.item() > stop_factor * min(out["loss"]):
            break
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return out


def layer_stats(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, loss: Loss,
                weight: torch.Tensor | None = None, depth: int = 1) -> list[dict]:
    """Each block's output and gradients for one batch, in call order.

    Rows of ``{"layer", "act_mean", "act_std", "act_zero"}`` (the share of
    exactly-zero outputs: ReLUs that never fire) plus ``grad_norm`` (the L2
    norm of the gradient of the block's parameters) and ``grad_to_weight``
    (that norm over the parameters' own norm: roughly how far one step at
    learning rate 1 would move them). The model runs in train mode, as in a
    training step; its gradients are cleared and its BatchNorm statistics put
    back after, so measuring changes nothing.
    """
    weight = _check_batch(image, mask, weight)
    rows: dict[str, dict] = {}
    blocks = dict(_modules_at(model, depth))
    hooks = []
    for name, block in blocks.items():
        def hook(m, inp, out, name=name):
            if isinstance(out, torch.Tensor) and name not in rows:
                out = out.detach().float()
                rows[name] = {"layer": name, "act_mean": out.mean().item(), "act_std": out.std().item(),
                              "act_zero": (out == 0).float().mean().item()}
        hooks.append(block.register_forward_hook(hook))
    saved, was_training = copy.deepcopy(model.state_dict()), model.training
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss(model(image), mask, weight).backward()
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(saved)
        model.train(was_training)
    for name, row in rows.items():
        params = [p for p in blocks[name].parameters() if p.grad is not None]
        grad = math.sqrt(sum(p.grad.pow(2).sum().item() for p in params)) if params else 0.0
        norm = math.sqrt(sum(p.detach().pow(2).sum().item() for p in params)) if params else 0.0
        row["grad_norm"] = grad
        row["grad_to_weight"] = grad / norm if norm else 0.0
    model.zero_grad(set_to_none=True)
    return list(rows.values())
