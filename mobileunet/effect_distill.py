"""Distil the cartoon effect into a MobileNet UNet (lesson 06); the command is ``commands/effect.py``.

The student (``models.effect_student``) learns ``effects.cartoon`` from the
teacher's cached pairs (``photos.teacher_pairs``) with ``train.fit``, the loop
of every lesson. The loss of a step is a weighted sum, each term on when its
weight in ``EffectConfig`` is:

* **L1** to the teacher's image: the pixel term; plain L1 blurs where the
  student is unsure (it predicts the median).
* **SSIM** (``metrics.ssim``, as ``1 - SSIM``): local means, contrasts and
  structure; weighs errors in flat areas, where the eye sees them, more than L1.
* **Perceptual**: L1 between feature maps of a *fixed* network. Offline there
  are no ImageNet weights to lean on, so the default is a randomly initialised,
  frozen VGG-style net: random conv features still measure local structure
  and work as a perceptual loss (He, Wang & Hopcroft, "A Powerful Generative
  Model Using Random Weights for the Deep Image Representation", NeurIPS 2016).
  ``perceptual_net="vgg16"`` uses torchvision's VGG16 ImageNet weights and
  ``"lpips"`` the LPIPS package, each only when already on disk: nothing downloads.
* **Adversarial** (optional): pix2pix's PatchGAN (Isola et al. 2017, Sec. 3.2.2)
  judges 70x70 patches of (input, output) as teacher-made or student-made,
  with the least-squares GAN loss; its own optimiser steps inside the loss.

Evaluation is PSNR and SSIM of student vs teacher on pairs from held-out
photos, and both models timed on the same 256x256 frame in the same run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .effects import CartoonParams, cartoon
from .metrics import line_f1, line_mask, psnr, ssim
from .photos import VAL_PHOTOS, EffectPairs, load_photo, teacher_hints
from .profile import eval_mode, measure_latency
from .train import TrainConfig, fit, predict

PERCEPTUAL_NETS = ("random", "vgg16", "lpips")
EFFECT_STUDENTS = ("effect_student", "guided_effect_student")
"""Builders ``python -m mobileunet effect --student`` can name: ``models.builders("effect")`` (a test
checks the two agree; the list is spelled out so the parser needs no models import)."""
CHECK_PAIRS = 4
"""Held-out pairs the manifest scores on their own, so a test can re-check a checkpoint in seconds."""


def l1_image_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference of two images (the ``TrainConfig.loss`` of an effect run)."""
    return (pred - target).abs().mean()


# --- perceptual feature extractors -----------------------------------------------------------


class RandomFeatures(nn.Module):
    """A frozen, randomly initialised VGG-style net; ``forward`` returns its maps at strides 1, 2, 4.

    Recipe per stage: (3x3 conv -> ReLU) x 2, then 2x2 max-pool; 32, 64, 96
    channels; Kaiming-normal weights drawn from ``seed``, so every run and every
    machine has the same "perceptual" net.
    """

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (32, 64, 96)):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        c = 3
        for w in widths:
            convs = [nn.Conv2d(c, w, 3, padding=1), nn.Conv2d(w, w, 3, padding=1)]
            for conv in convs:
                fan_in = conv.in_channels * 9
                conv.weight.data = torch.randn(conv.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
                conv.bias.data.zero_()
            self.stages.append(nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU()))
            c = w
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))      # (B, w_i, H/2^i, W/2^i)
            feats.append(x)
        return feats


class VGG16Features(nn.Module):
    """torchvision VGG16's relu1_2, relu2_2, relu3_3 (Johnson et al. 2016), ImageNet-normalised input."""

    def __init__(self):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16

        weights = VGG16_Weights.IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            raise ValueError(f"VGG16 ImageNet weights are not in torch's hub cache ({cached}); nothing is "
                             f"downloaded here: use perceptual_net='random', or fetch them once with "
                             f"torchvision.models.vgg16(weights='IMAGENET1K_V1')")
        self.body = vgg16(weights=weights).features[:16].requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, feats = (x - self.mean) / self.std, []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in (3, 8, 15):
                feats.append(x)
        return feats


def perceptual_network(kind: str = "random") -> nn.Module:
    """The fixed network of the perceptual term: ``"random"``, ``"vgg16"`` or ``"lpips"`` (see module doc)."""
    if kind == "random":
        return RandomFeatures()
    if kind == "vgg16":
        return VGG16Features()
    if kind == "lpips":
        try:
            import lpips
        except ImportError as err:
            raise ValueError("perceptual_net='lpips' needs the lpips package (pip install lpips) and its "
                             "AlexNet weights on disk: use 'random' offline") from err
        alex = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
        if not alex.is_file():
            raise ValueError(f"LPIPS needs torchvision's AlexNet weights at {alex}; nothing is downloaded "
                             f"here: use perceptual_net='random'")
        return lpips.LPIPS(net="alex", verbose=False).requires_grad_(False).eval()
    raise ValueError(f"perceptual_net={kind!r} is not one of {PERCEPTUAL_NETS}")


def perceptual_loss(net: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the net's maps of the L1 distance between features (LPIPS: its own distance)."""
    if type(net).__name__ == "LPIPS":
        return net(pred, target, normalize=True).mean()
    with torch.no_grad():
        wanted = net(target)
    got = net(pred)
    return sum(F.l1_loss(p, t) for p, t in zip(got, wanted)) / len(got)


# --- the adversarial critic ------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """pix2pix's 70x70 PatchGAN on (input, image) pairs: one real/fake score per patch.

    Recipe: 4x4 conv stride 2 -> LeakyReLU, then (4x4 conv stride 2 -> BN ->
    LeakyReLU) x 2, 4x4 conv stride 1 -> BN -> LeakyReLU, 4x4 conv -> 1 score
    map. ``base`` is 32 instead of the paper's 64, to keep a CPU step cheap.
    """

    def __init__(self, in_channels: int = 6, base: int = 32):
        super().__init__()
        c = [base, base * 2, base * 4, base * 8]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i, stride in ((1, 2), (2, 2), (3, 1)):
            layers += [nn.Conv2d(c[i - 1], c[i], 4, stride, 1, bias=False), nn.BatchNorm2d(c[i]),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(c[3], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([source, image], dim=1))           # (B, 1, ~H/8, ~W/8)


# --- the config and the loop -------------------------------------------------------------------


@dataclass
class EffectConfig(TrainConfig):
    """A ``TrainConfig`` plus the weight of each loss term; a term is on when its weight is > 0.

    ``loss = l1 * L1 + ssim * (1 - SSIM) + perceptual * perceptual(perceptual_net)
    + adversarial * LSGAN(PatchGAN) + hint * hint_loss``, where ``hint_loss`` compares
    the student's ``half_resolution`` output with the teacher's intermediate
    images (``effects.smoothing_stages``, 2x2-pooled): L1 + 0.5 (1 - SSIM) on the
    smoothed image, L1 on the lines' lightness. ``crop`` tiles the cached pairs (translation
    augmentation); ``augment`` flips input and target together.
    """
    l1: float = 1.0
    ssim: float = 0.0
    hint: float = 0.0
    perceptual: float = 0.0
    perceptual_net: str = "random"
    adversarial: float = 0.0
    disc_lr: float = 2e-4
    loss: object = l1_image_loss
    lr: float = 2e-3
    eval_every: int = 500                  # held-out PSNR/SSIM/line F1 when distill_effect gets val pairs
    desc: str = "effect"

    def __post_init__(self):
        super().__post_init__()
        for name in ("l1", "ssim", "hint", "perceptual", "adversarial", "disc_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"EffectConfig.{name}={value!r}: must be a number >= 0")
        if self.l1 == self.ssim == self.perceptual == self.hint == 0:
            raise ValueError("EffectConfig: l1, ssim, perceptual and hint are all 0; an adversarial term alone "
                             "does not make the student copy the teacher: give l1=1.0")
        if self.hint > 0 and (self.perceptual > 0 or self.adversarial > 0):
            raise ValueError("EffectConfig: hint > 0 goes with the l1 and ssim terms only: set perceptual=0 "
                             "and adversarial=0")
        if self.perceptual_net not in PERCEPTUAL_NETS:
            raise ValueError(f"EffectConfig.perceptual_net={self.perceptual_net!r}: use one of {PERCEPTUAL_NETS}")
        if self.crop is not None and self.crop < 11 and self.ssim > 0:
            raise ValueError(f"EffectConfig.crop={self.crop} is smaller than SSIM's 11-pixel window: "
                             f"use crop >= 11 or ssim=0")

    def terms(self) -> dict:
        return {"l1": self.l1, "ssim": self.ssim, **({"hint": self.hint} if self.hint else {}),
                "perceptual": self.perceptual,
                "perceptual_net": self.perceptual_net if self.perceptual else None,
                "adversarial": self.adversarial}


def distill_effect(student: nn.Module, train_pairs, cfg: EffectConfig, val_pairs=None,
                   state: dict | None = None, save_every: int = 0, save_state=None) -> dict:
    """Train ``student`` on teacher pairs with ``train.fit``; returns its history plus ``loss_<term>``.

    With ``val_pairs`` the history holds the learning curve: ``eval_step`` and
    ``val_psnr``/``val_ssim``/``val_line_f1`` every ``cfg.eval_every`` steps
    (``evaluate_effect``). ``state``, ``save_every`` and ``save_state`` resume
    and checkpoint the run as in ``train.fit`` (not with the adversarial term,
    whose critic is not part of the saved state).

    Example:
        >>> from mobileunet.models import effect_student
        >>> from mobileunet.photos import EffectPairs
        >>> x = torch.rand(4, 3, 32, 32)
        >>> hist = distill_effect(effect_student(), EffectPairs(x, x, [""] * 4, {}),
        ...                       EffectConfig(steps=2, batch_size=2, ssim=1.0))
        >>> sorted(k for k in hist if k.startswith("loss_"))
        ['loss_l1', 'loss_ssim']
    """
    if not isinstance(cfg, EffectConfig):
        raise TypeError(f"cfg must be an EffectConfig, got {type(cfg).__name__}")
    if cfg.adversarial > 0 and (state is not None or save_every):
        raise ValueError("a run with the adversarial term cannot be resumed (its critic is not saved): "
                         "set adversarial=0 or train it in one go")
    device = torch.device(cfg.device)
    feats = perceptual_network(cfg.perceptual_net).to(device) if cfg.perceptual > 0 else None
    disc = d_opt = None
    if cfg.adversarial > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            disc = PatchDiscriminator().to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))

    if cfg.hint > 0:
        train_pairs = _with_hints(student, train_pairs)

    def step_loss(model, image, target, weight):
        parts, loss = {}, image.new_zeros(())
        if cfg.hint > 0:
            target, hints = target[:, :3], target[:, 3:]
            term = hint_loss(model, image, hints)
            loss, parts["hint"] = loss + cfg.hint * term, term.item()
            if cfg.l1 == cfg.ssim == 0:                 # hints alone: the full-resolution image is not needed
                return loss, parts
        pred = model(image)
        if cfg.l1 > 0:
            term = l1_image_loss(pred, target)
            loss, parts["l1"] = loss + cfg.l1 * term, term.item()
        if cfg.ssim > 0:
            term = 1 - ssim(pred, target).mean()
            loss, parts["ssim"] = loss + cfg.ssim * term, term.item()
        if feats is not None:
            term = perceptual_loss(feats, pred, target)
            loss, parts["perceptual"] = loss + cfg.perceptual * term, term.item()
        if disc is not None:
            disc.train()
            real, fake = disc(image, target), disc(image, pred.detach())
            d_loss = 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            term = (disc(image, pred) - 1).pow(2).mean()           # the student wants "teacher-made"
            loss, parts["adversarial"], parts["disc"] = loss + cfg.adversarial * term, term.item(), d_loss.item()
        return loss, parts

    notes = {"task": "effect", **cfg.terms()}
    evaluate_fn = (lambda m: evaluate_effect(m, val_pairs)) if val_pairs is not None else None
    return fit(student, train_pairs, None, cfg, step_loss, notes=notes, evaluate_fn=evaluate_fn,
               state=state, save_every=save_every, save_state=save_state)


def hint_loss(model: nn.Module, image: torch.Tensor, hints: torch.Tensor) -> torch.Tensor:
    """How far the student's ``half_resolution`` output is from the teacher's intermediate images.

    ``hints`` are ``effects.smoothing_stages`` of ``image``, ``(B, 4, H, W)``;
    both are compared at half resolution: L1 + 0.5 (1 - SSIM) on the smoothed
    image, plus L1 on the lightness the lines are drawn from.
    """
    y = model.half_resolution(image)                                  # (B, 4, H/2, W/2)
    h = F.avg_pool2d(hints, 2, ceil_mode=True)
    return (l1_image_loss(y[:, :3], h[:, :3]) + 0.5 * (1 - ssim(y[:, :3], h[:, :3]).mean())
            + l1_image_loss(y[:, 3:], h[:, 3:]))


def _with_hints(student: nn.Module, pairs):
    """``pairs`` with the teacher's intermediate images after each target, ``(N, 7, S, S)``: crops and flips
    in ``fit`` then move them with the target."""
    if not (callable(getattr(student, "half_resolution", None)) and getattr(student, "exact_quantise", False)):
        raise ValueError(f"EffectConfig.hint > 0 teaches the teacher's smoothed image before the cheap steps: "
                         f"it needs a student that keeps them exact, guided_effect_student(exact_quantise=True), "
                         f"not {type(student).__name__}; or set hint=0")
    if not isinstance(pairs, EffectPairs):
        raise TypeError(f"EffectConfig.hint > 0 needs the EffectPairs of photos.teacher_pairs, got "
                        f"{type(pairs).__name__}")
    hints = teacher_hints(pairs)
    return EffectPairs(pairs.inputs, torch.cat([pairs.targets, hints], 1), pairs.names, pairs.manifest)


def predict_effect(model: nn.Module, images: torch.Tensor, batch_size: int = 16, pad: int = 0) -> torch.Tensor:
    """The student's images for a stack of inputs, in eval mode.

    ``pad`` reflects each image by that many pixels on every side before the
    student sees it, and crops the result back: the student's border zone
    (where its stride-2 convolutions saw zero padding in training) then falls
    on reflected pixels that are thrown away. Lesson 06 measures what it buys.
    """
    return predict(model, images, batch_size, pad=pad, activation=None)


LINE_DARKER = 0.05
"""How much darker than its 5x5 median a pixel must be to count as part of an ink line
(``metrics.line_mask``): 0.05 of the luminance range, 13 grey levels of 255."""


@torch.no_grad()
def evaluate_effect(model: nn.Module, pairs) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and line F1 of the student's images vs the teacher's over all ``pairs``.

    Line F1 (``metrics.line_f1``, 1 px tolerance) compares the dark lines of the
    two images, each found by the same rule (``metrics.line_mask`` at ``LINE_DARKER``).
    """
    with eval_mode(model):
        pred = predict_effect(model, pairs.inputs)
    lines = line_f1(line_mask(pred, LINE_DARKER), line_mask(pairs.targets, LINE_DARKER))["f1"]
    return {"psnr": float(psnr(pred, pairs.targets).mean()), "ssim": float(ssim(pred, pairs.targets).mean()),
            "line_f1": float(lines)}


@torch.no_grad()
def error_budget(model: nn.Module, pairs, params: CartoonParams | None = None) -> dict:
    """Where a student's error against the teacher comes from, on ``pairs`` (lesson 06).

    The teacher is re-run on the pairs' inputs twice more, each time with one
    step turned off: the dark lines (``edge_tau`` near 0: the DoG never goes
    negative), then also the quantiser (``sharpness`` near 0: each band's step
    becomes a straight line, so luminance passes through). What is left of the
    teacher is its repeated bilateral smoothing. Returns:

    * ``rows``: mean PSNR (dB) of each image against the teacher's: the input
      unchanged, the teacher's smoothing only, the teacher without its lines,
      and the student (``model``); plus the student against the smoothing only;
    * ``line_pixels``: share of pixels the lines darken (by more than 0.02);
    * ``line_error``: share of the student's squared error on those pixels;
    * ``per_photo``: the student's mean PSNR per photo the pairs were cut from.
    """
    import dataclasses

    p = params or CartoonParams()
    if not isinstance(p, CartoonParams):
        raise TypeError(f"params must be a CartoonParams, got {type(p).__name__}")
    if len(pairs) == 0:
        raise ValueError("pairs is empty: give the held-out pairs of photos.teacher_pairs")
    no_lines = cartoon(pairs.inputs, dataclasses.replace(p, edge_tau=1e-6))
    smooth_only = cartoon(pairs.inputs, dataclasses.replace(p, edge_tau=1e-6, sharpness=1e-3))
    pred = predict_effect(model, pairs.inputs)
    target = pairs.targets
    student = psnr(pred, target)                                   # (N,): the per-photo means use it too
    score = lambda a, b: float(psnr(a, b).mean())  # noqa: E731
    rows = [{"image": "input, unchanged", "vs": "teacher", "psnr": score(pairs.inputs, target)},
            {"image": "teacher's smoothing only", "vs": "teacher", "psnr": score(smooth_only, target)},
            {"image": "teacher without its lines", "vs": "teacher", "psnr": score(no_lines, target)},
            {"image": "student", "vs": "teacher", "psnr": float(student.mean())},
            {"image": "student", "vs": "teacher's smoothing only", "psnr": score(pred, smooth_only)}]
    on_line = ((target - no_lines).abs().amax(1, keepdim=True) > 0.02).float()
    err = (pred - target).pow(2)
    per_photo = {}
    for name, value in zip(pairs.names, student.tolist()):
        per_photo.setdefault(name, []).append(value)
    return {"rows": rows, "line_pixels": float(on_line.mean()),
            "line_error": float((err * on_line).sum() / err.sum().clamp_min(1e-12)),
            "per_photo": {k: float(np.mean(v)) for k, v in sorted(per_photo.items())}}


def speed_comparison(student: nn.Module, frame: torch.Tensor, params: CartoonParams | None = None,
                     repeats: int = 5, runtimes: tuple[str, ...] | None = None, threads: int = 1) -> list[dict]:
    """Teacher effect vs student on one ``(3, H, W)`` frame, measured now, the student on ``threads`` threads.

    The teacher (scikit-image's bilateral filter and friends) runs on one core,
    so by default the student does too: a like-for-like per-core speed-up.

    The teacher is one more runner in ``profile.measure_latency``'s rounds:
    each round runs the teacher once and the student once per runtime (eager,
    and ONNX Runtime when installed), after two untimed warm-up calls each. On
    a shared machine the teacher's time has moved by 2x within one process
    (a first, cold call alone took twice as long), so timing it in separate
    blocks before and after the student let load hit one side and not the
    other. Both run on ``frame``: the student's time depends on its input
    (on noise its branches are slower; ``profile.measure_latency``).
    Rows: ``model``, ``runtime``, ``median_ms``, ``speed-up``, ``runs``.

    Example:
        >>> from mobileunet.models import effect_student
        >>> rows = speed_comparison(effect_student(), torch.rand(3, 32, 32), repeats=1, runtimes=("eager",))
        >>> [(r["model"], r["runtime"], r["runs"]) for r in rows]
        [('teacher (cartoon effect)', 'scikit-image', 1), ('student', 'eager', 1)]
    """
    import importlib.util


    if frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"frame must be one (3, H, W) image, got {tuple(frame.shape)}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: give a positive int (1 matches the single-core teacher)")
    if runtimes is None:
        runtimes = ("eager", "onnxruntime") if importlib.util.find_spec("onnxruntime") else ("eager",)
    image = frame.permute(1, 2, 0).numpy()
    teacher = ("teacher (cartoon effect)", "scikit-image")
    table = measure_latency({"student": student}, (1, *frame.shape), threads=(threads,), runtimes=runtimes,
                            warmup=2, repeats=repeats, example=frame[None],
                            extra={teacher: lambda n: (lambda: cartoon(image, params))})
    by_key = {(r["model"], r["runtime"]): r for r in table.rows}
    teacher_ms = by_key[teacher]["median_ms"]
    keys = [teacher] + [("student", rt) for rt in runtimes]
    return [{"model": k[0], "runtime": k[1], "median_ms": by_key[k]["median_ms"],
             "speed-up": teacher_ms / by_key[k]["median_ms"], "runs": by_key[k]["runs"]} for k in keys]


def frame256() -> torch.Tensor:
    """The timing frame: the centre 256x256 of the first held-out photo."""
    photo = load_photo(VAL_PHOTOS[0])
    H, W = photo.shape[:2]
    y, x = (H - 256) // 2, (W - 256) // 2
    return torch.from_numpy(np.ascontiguousarray(photo[y:y + 256, x:x + 256])).permute(2, 0, 1)
