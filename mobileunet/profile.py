"""What a model costs: parameters, shapes layer by layer, receptive field.

Lesson 01 traces the UNet's shapes with ``trace_shapes`` and measures its
receptive field with ``receptive_field``.
"""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def trace_shapes(model: nn.Module, x: torch.Tensor, depth: int = 1) -> list[dict]:
    """Run ``x`` through ``model`` and record each submodule's output shape.

    ``depth`` picks how deep in the module tree to look: 1 lists the model's
    direct children (``inc``, ``downs.0`` ... ``outc``). Returns rows of
    ``{"layer", "type", "out_shape", "params"}`` in call order.
    """
    rows, hooks = [], []
    targets = list(_modules_at(model, depth))
    for name, mod in targets:
        def hook(m, inp, out, name=name):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "?"
            rows.append({"layer": name, "type": type(m).__name__, "out_shape": shape,
                         "params": count_params(m)})
        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(x)
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return rows


def _modules_at(module: nn.Module, depth: int, prefix: str = ""):
    """Submodules ``depth`` levels down; a ModuleList is not a level of its own,
    and a leaf above that depth stands for itself."""
    for name, child in module.named_children():
        full = prefix + name
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _modules_at(child, depth, full + ".")
        elif depth == 1 or not any(True for _ in child.children()):
            yield full, child
        else:
            yield from _modules_at(child, depth - 1, full + ".")


def receptive_field(model: nn.Module, in_channels: int, size: int = 256) -> int:
    """Measured receptive field: how wide a patch of input one output pixel sees.

    Backpropagates from the centre output pixel to the input and measures the
    extent of the non-zero gradient. Needs ``size`` larger than the field
    itself (else the answer is clipped at ``size``). BatchNorm runs in eval mode
    so the batch does not mix pixels.
    """
    was_training = model.training
    model.eval()
    x = torch.randn(1, in_channels, size, size, requires_grad=True)
    out = model(x)
    c = size // 2
    out[0, 0, c, c].backward()
    model.train(was_training)
    seen = x.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(seen.any(1)).flatten()
    return int(rows.max() - rows.min() + 1)
