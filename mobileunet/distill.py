"""Knowledge distillation for segmentation (lesson 05): a big teacher trains a small student.

A teacher can teach in three ways; ``DistillConfig`` switches each on by its weight:

* **Soft targets** (response distillation; Hinton et al. 2015, Sec. 2). The
  student matches the teacher's per-pixel probabilities softened by a
  temperature T. A segmentation model gives one *binary* logit per pixel, so
  the softmax of the paper becomes a sigmoid: ``p = sigmoid(z / T)``, and the
  loss is the Bernoulli KL divergence from teacher to student, times ``T**2``.
  Softened targets say *how sure* the teacher is: near a cell's edge or in a
  narrow gap it is unsure, and the student learns that too.
* **Feature hints** (FitNets; Romero et al. 2015, Sec. 2.2). A chosen student
  feature map, passed through a 1x1 conv adapter to the teacher's channel
  count, is pulled towards a chosen teacher feature map. Layers are named as
  in ``model.named_modules()`` and read with forward hooks; the teacher's map
  is resized to the student's when their strides differ.
* **Teacher-made labels** (pseudo-labels; the pattern YouTube uses for its
  effects). The teacher labels extra unlabelled images, which join the
  training set as ordinary ``(image, mask, weight)`` pairs.

``distill`` runs ``train.fit``, the same loop as ``train.train``: same
batches, crops, flips, optimiser, schedule, progress bar and history keys,
plus ``loss_hard``/``loss_soft``/``loss_hint`` per step. With every weight at
zero it *is* ``train``: a test checks that the two give identical losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from .data import border_weight_map
from .profile import eval_mode
from .train import TrainConfig, fit, unpack_batch

SoftLoss = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor], torch.Tensor]
"""``soft_loss(student_logits, teacher_logits, temperature, weight) -> loss``; ``weight`` is
the batch's per-pixel weight map, which a loss may ignore (as ``losses.bce_loss`` does)."""
HintLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``hint_loss(adapted_student_features, teacher_features) -> loss``."""


# --- response distillation: soft targets ------------------------------------------------------


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``T**2 * KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T)))``, averaged over pixels.

    Every pixel counts the same (``weight`` is ignored; see
    ``weighted_soft_target_kl``). Zero exactly when the student's logits equal
    the teacher's. Why ``T**2``: the gradient with respect to a student logit
    is ``(p_s - p_t) / T``, and for large T ``p_s - p_t ~ (z_s - z_t) / (4 T)``,
    so without the factor the soft term's pull would fade as ``1 / T**2`` and
    changing T would silently reweight it against the hard-label loss
    (Hinton et al. 2015, Sec. 2.1).

    Example:
        >>> z = torch.randn(2, 1, 8, 8)
        >>> soft_target_kl(z, z, temperature=4.0).item()
        0.0
    """
    return _kl(student_logits, teacher_logits, temperature).mean()


def weighted_soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            temperature: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``soft_target_kl`` with each pixel weighted by the border weight map.

    The cells' hard-label loss (``losses.weighted_bce_loss``) spends its
    attention on the narrow gaps between touching cells; a uniform soft term
    dilutes that, and a student can then trade split cells for pixel IoU.
    This weights the teacher's advice where the weight map says it matters.
    """
    if weight is None:
        raise ValueError("weighted_soft_target_kl needs the weight map: pass the dataset's third tensor")
    return (weight * _kl(student_logits, teacher_logits, temperature)).sum() / weight.sum()


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pixel ``T**2`` times the Bernoulli KL from the softened teacher to the softened student."""
    _check_temperature(temperature)
    t = float(temperature)
    target = torch.sigmoid(teacher_logits / t)
    cross = F.binary_cross_entropy_with_logits(student_logits / t, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits / t, target, reduction="none")
    return t**2 * (cross - entropy)


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of the logits (Ba & Caruana 2014); ignores ``temperature`` and ``weight``.

    It is the high-temperature limit of ``soft_target_kl`` (which tends to
    ``(z_s - z_t)**2 / 8``), kept as an alternative ``DistillConfig.soft_loss``.
    """
    return F.mse_loss(student_logits, teacher_logits)


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature={temperature!r}: must be a positive number (1 = the teacher's "
                         f"own probabilities; 2-8 soften them)")


# --- feature distillation: hints --------------------------------------------------------------


def hint_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets' hint loss: mean squared difference of adapted student and teacher features."""
    return F.mse_loss(student, teacher)


def hint_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - cosine similarity`` of the channel vectors at each pixel, averaged.

    Matches the direction of each pixel's feature vector and ignores its
    length, so a teacher level with large activations does not dominate.
    """
    return (1 - F.cosine_similarity(student, teacher, dim=1, eps=1e-6)).mean()


class FeatureTap:
    """Forward hooks that keep the outputs of named submodules for one forward pass.

    Example:
        >>> from mobileunet import UNet
        >>> model = UNet(base=8, depth=2)
        >>> with FeatureTap(model, ["downs.1"]) as tap:
        ...     _ = model(torch.zeros(1, 1, 32, 32))
        >>> tuple(tap.outputs()[0].shape)
        (1, 32, 8, 8)
    """

    def __init__(self, model: nn.Module, names: Sequence[str], role: str = "model"):
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module                       # fit's multi-process wrapper: tap the model inside
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                near = [n for n in modules if n and n.split(".")[0] == name.split(".")[0]][:8]
                raise ValueError(
                    f"the {role} ({type(model).__name__}) has no module {name!r}; modules with the "
                    f"same prefix: {near or sorted(n for n in modules if n and '.' not in n)}. "
                    f"List them with dict(model.named_modules()) or profile.trace_shapes(model, x, depth=2)")
        self.model, self.names, self.role = model, list(names), role
        self.modules = [modules[n] for n in self.names]
        self.feats: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "FeatureTap":
        self.feats = {}
        for name, module in zip(self.names, self.modules):
            self._handles.append(module.register_forward_hook(
                lambda m, inp, out, name=name: self.feats.__setitem__(name, out)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def outputs(self) -> list[torch.Tensor]:
        """The kept feature maps, in the order of ``names``."""
        out = []
        for name in self.names:
            if name not in self.feats:
                raise ValueError(
                    f"{self.role} module {name!r} did not run during the forward pass (its parent "
                    f"calls its children directly): name one of its children instead, e.g. "
                    f"{name}.0")
            feat = self.feats[name]
            if not isinstance(feat, torch.Tensor) or feat.ndim != 4:
                raise ValueError(f"{self.role} module {name!r} returns {type(feat).__name__}, not a "
                                 f"(B, C, H, W) feature map: name a module that outputs one")
            out.append(feat)
        return out


class HintAdapters(nn.Module):
    """One 1x1 conv per hint pair, from the student's channels to the teacher's.

    The adapter is FitNets' regressor: the student need not have the teacher's
    width, only features from which a linear map recovers the teacher's. It is
    training scaffolding, optimised with the student and thrown away after.

    ``forward(student_feats, teacher_feats)`` returns ``(adapted, target)``
    pairs, each ``(B, C_teacher, h, w)`` at the student's size ``h, w``: a
    teacher map at another stride is resized (area-averaged when shrinking).
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"{len(student_channels)} student levels vs {len(teacher_channels)} "
                             f"teacher levels: give one teacher level per student level")
        self.convs = nn.ModuleList(nn.Conv2d(s, t, kernel_size=1)
                                   for s, t in zip(student_channels, teacher_channels))

    def forward(self, student_feats: Sequence[torch.Tensor],
                teacher_feats: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = []
        for conv, s, t in zip(self.convs, student_feats, teacher_feats):
            s = conv(s)                                                # (B, C_t, h, w)
            if t.shape[-2:] != s.shape[-2:]:
                shrink = t.shape[-1] > s.shape[-1]
                t = F.interpolate(t, size=s.shape[-2:], mode="area" if shrink else "bilinear",
                                  align_corners=None if shrink else False)   # (B, C_t, h, w)
            pairs.append((s, t))
        return pairs


def hint_adapters(student: nn.Module, teacher: nn.Module, hints: Sequence[tuple[str, str]],
                  sample: torch.Tensor) -> HintAdapters:
    """Adapters for ``hints`` = ``[(teacher_module, student_module), ...]``, sized by a dry run.

    ``sample`` is one input batch; both models see it once in eval mode.
    """
    t_names, s_names = [t for t, _ in hints], [s for _, s in hints]
    channels = []
    for model, names, role in ((teacher, t_names, "teacher"), (student, s_names, "student")):
        with torch.no_grad(), eval_mode(model), FeatureTap(model, names, role) as tap:
            model(sample)
        channels.append([f.shape[1] for f in tap.outputs()])
    return HintAdapters(channels[1], channels[0])


# --- teacher-made labels -----------------------------------------------------------------------


class TeacherLabelled(Dataset):
    """Unlabelled images with the teacher's labels, as ``(image, mask, weight)`` like a real split.

    The mask is the teacher's thresholded prediction; its connected components
    stand in for cell ids when computing the border weight map
    (``data.border_weight_map``), so teacher-made pairs train with the same
    loss as real ones. Images are labelled once, whole, when the dataset is
    made: the frozen teacher would give the same answer at every step, and on
    whole images it sees more context than on a training crop.

    Args:
        teacher: the model that labels (put in eval mode).
        images: ``(N, C, H, W)`` images; any labels that come with them are ignored.
        threshold: probability above which the teacher's pixel counts as cell.
    """

    def __init__(self, teacher: nn.Module | None, images: torch.Tensor, threshold: float = 0.5,
                 logits: torch.Tensor | None = None):
        self.images = images
        self.logits = teacher_logits(teacher, images) if logits is None else logits   # (N, 1, H, W)
        if self.logits.shape[0] != len(images) or self.logits.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"logits {tuple(self.logits.shape)} do not match images {tuple(images.shape)}: "
                             f"give one (1, H, W) logit map per image")
        self.probs = torch.sigmoid(self.logits)
        self.masks = (self.probs > threshold).float()
        labels = [ndimage.label(m[0].numpy())[0] for m in self.masks]
        self.labels = torch.from_numpy(np.stack(labels).astype(np.int32))[:, None]
        self.weights = torch.from_numpy(np.stack([border_weight_map(lab) for lab in labels]))[:, None]

    @classmethod
    def from_logits(cls, images: torch.Tensor, logits: torch.Tensor, threshold: float = 0.5) -> "TeacherLabelled":
        """The same, from teacher logits computed before (``teacher_logits``)."""
        return cls(None, images, threshold, logits=logits)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i], self.weights[i]


class WithTeacherLogits(Dataset):
    """A ``(image, mask, weight)`` dataset with the teacher's logits as a fourth tensor.

    Made by ``distill`` when ``DistillConfig.teacher_on_whole_images`` is set:
    the teacher sees each whole image once, and training crops and flips its
    logits with the image, instead of running the teacher on every crop.
    """

    def __init__(self, dataset: Dataset, logits: torch.Tensor):
        if len(logits) != len(dataset):
            raise ValueError(f"{len(logits)} teacher logit maps for {len(dataset)} images: give one per image")
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return (*unpack_batch(self.dataset[i])[:3], self.logits[i])


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The teacher's raw logits for a stack of whole images, in eval mode, on the CPU."""
    teacher.eval()
    device = next(teacher.parameters()).device
    return torch.cat([teacher(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def images_of(dataset: Dataset, batch_size: int = 64) -> torch.Tensor:
    """Every image of a dataset stacked into one ``(N, C, H, W)`` tensor, labels dropped."""
    return torch.cat([unpack_batch(b)[0] if isinstance(b, (list, tuple)) else b
                      for b in DataLoader(dataset, batch_size=batch_size)])


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class DistillConfig(TrainConfig):
    """A ``TrainConfig`` plus how the teacher teaches. Each term is on when its weight is.

    The loss of a step is
    ``(1 - soft_weight) * loss(student, mask) + soft_weight * soft_loss(student, teacher, T)
    + hint_weight * mean over pairs of hint_loss(adapter(student_feat), teacher_feat)``.

    Args (besides ``TrainConfig``'s; ``loss`` is the hard-label loss):
        soft_weight: share of the soft-target term, 0 (off) to 1 (soft targets only).
        temperature: T of the soft targets.
        soft_loss: ``soft_target_kl`` (default), ``weighted_soft_target_kl`` or ``logit_mse``.
        hints: ``(teacher_module, student_module)`` name pairs, e.g. ``CELLS_HINTS``.
        hint_weight: weight of the hint term (0 = off; needs ``hints``).
        hint_loss: ``hint_mse`` (default) or ``hint_cosine``.
        teacher_on_whole_images: the teacher's soft targets come from one pass over
            each *whole* training image before training, cropped and flipped with
            the image (``WithTeacherLogits``), instead of a teacher pass on every
            training crop. About half the time of a step, and the teacher sees
            more context at a crop's edges. Soft targets only (hints need the
            teacher's features of the very crop).
    """
    soft_weight: float = 0.0
    temperature: float = 4.0
    soft_loss: SoftLoss = soft_target_kl
    hints: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 0.0
    hint_loss: HintLoss = hint_mse
    teacher_on_whole_images: bool = False
    desc: str = "distill"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.soft_weight, bool) or not 0.0 <= self.soft_weight <= 1.0:
            raise ValueError(f"DistillConfig.soft_weight={self.soft_weight!r}: must be between 0 (no "
                             f"soft targets) and 1 (soft targets only)")
        _check_temperature(self.temperature)
        if isinstance(self.hint_weight, bool) or self.hint_weight < 0:
            raise ValueError(f"DistillConfig.hint_weight={self.hint_weight!r}: must be >= 0")
        if isinstance(self.hints, (str, bytes)) or any(
                not isinstance(p, (tuple, list)) or len(p) != 2 or not all(isinstance(n, str) for n in p)
                for p in self.hints):
            raise ValueError(f"DistillConfig.hints={self.hints!r}: give (teacher_module, "
                             f"student_module) name pairs, e.g. {CELLS_HINTS}")
        self.hints = tuple(tuple(p) for p in self.hints)
        if self.hint_weight > 0 and not self.hints:
            raise ValueError(f"DistillConfig.hint_weight={self.hint_weight} but no hints: name the "
                             f"layer pairs, e.g. hints={CELLS_HINTS}")
        if self.hints and self.hint_weight == 0:
            raise ValueError(f"DistillConfig.hints={self.hints} with hint_weight=0 would be ignored: "
                             f"set hint_weight > 0 (e.g. 1.0) or drop the hints")
        if not isinstance(self.teacher_on_whole_images, bool):
            raise TypeError(f"DistillConfig.teacher_on_whole_images={self.teacher_on_whole_images!r}: "
                            f"give True or False")
        if self.teacher_on_whole_images and self.hints:
            raise ValueError("DistillConfig.teacher_on_whole_images=True works for soft targets only: "
                             "feature hints need the teacher's features of each training crop; drop the "
                             "hints or set teacher_on_whole_images=False")
        for name, fn in (("soft_loss", self.soft_loss), ("hint_loss", self.hint_loss)):
            if not callable(fn):
                raise TypeError(f"DistillConfig.{name} must be a function, got {fn!r}: use e.g. "
                                f"mobileunet.distill.{'logit_mse' if name == 'soft_loss' else 'hint_cosine'}")


CELLS_HINTS: tuple[tuple[str, str], ...] = (
    ("ups.1", "decoder.blocks.2"),    # stride 4: teacher 128 ch -> student 24 ch
    ("ups.2", "decoder.blocks.3"),    # stride 2: teacher  64 ch -> student 16 ch
)
"""Hint pairs from the cells teacher (``unet_teacher``) to ``default_student``: decoder
levels at equal strides, where both models have put their skips back together."""


def _with_teacher_data(teacher: nn.Module, train_set: Dataset, unlabelled: Dataset | None,
                       cfg: DistillConfig) -> tuple[Dataset, int]:
    """The training set with the teacher-labelled extra images joined, and the teacher's cached logits beside
    each image when ``cfg.teacher_on_whole_images``; returns it and the number of extra images."""
    extra = None
    if unlabelled is not None:
        extra = (unlabelled if isinstance(unlabelled, TeacherLabelled)
                 else TeacherLabelled(teacher, images_of(unlabelled)))
    if cfg.teacher_on_whole_images and cfg.soft_weight > 0:
        train_set = WithTeacherLogits(train_set, teacher_logits(teacher, images_of(train_set)))
        if extra is not None:
            extra = WithTeacherLogits(extra, extra.logits)
    if extra is None:
        return train_set, 0
    return ConcatDataset([train_set, extra]), len(extra)


def distill(student: nn.Module, teacher: nn.Module, train_set: Dataset, val_set: Dataset | None,
            cfg: DistillConfig, unlabelled: Dataset | None = None, **resuming) -> dict:
    """Train ``student`` on ``train_set`` with ``teacher``'s help; returns ``train``'s history.

    Args:
        student: the model to train.
        teacher: a trained model, kept frozen in eval mode.
        train_set, val_set: ``(image, mask, weight)`` datasets, as for ``train``.
        cfg: the budget and the teacher's terms.
        unlabelled: extra images; the teacher labels them (``TeacherLabelled``) and
            they join ``train_set``. Batches then mix real and teacher-made pairs
            in proportion, at the same batch size and step count. A
            ``TeacherLabelled`` made once can be passed instead, to share it
            between runs.
        resuming: ``state``, ``save_every``, ``save_state``, as ``fit`` takes them.

    Example:
        >>> from mobileunet import UNet, cells_splits
        >>> train_set, val_set = cells_splits(8, 2, size=32)
        >>> cfg = DistillConfig(steps=2, batch_size=4, soft_weight=0.5, eval_every=2)
        >>> hist = distill(UNet(base=8, depth=2), UNet(base=8, depth=2), train_set, val_set, cfg)
        >>> len(hist["loss_soft"])
        2
    """
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"cfg must be a DistillConfig, got {type(cfg).__name__}: "
                        f"DistillConfig(steps=..., soft_weight=...) takes TrainConfig's fields too")
    bad = [name for name, t in teacher.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"the teacher's weights {bad[:3]} hold NaN or infinity: its soft targets would be "
                         f"meaningless; train or load the teacher again")
    device = torch.device(cfg.device)
    teacher = teacher.to(device).eval()
    train_set, n_extra = _with_teacher_data(teacher, train_set, unlabelled, cfg)
    t_names, s_names = [t for t, _ in cfg.hints], [s for _, s in cfg.hints]
    adapters = None
    if cfg.hints:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)                    # adapters start the same in every run
            sample = unpack_batch(train_set[0])[0][None].to(device)
            adapters = hint_adapters(student.to(device), teacher, cfg.hints, sample).to(device)
    use_teacher = cfg.soft_weight > 0 or bool(cfg.hints)

    def step_loss(model, image, mask, weight, cached_logits=None):
        with FeatureTap(model, s_names, "student") as s_tap:
            logits = model(image)
        hard = cfg.loss(logits, mask, weight)
        loss, parts = (1 - cfg.soft_weight) * hard, {"hard": hard.item()}
        if cached_logits is not None:
            t_logits = cached_logits
        elif use_teacher:
            with torch.no_grad(), FeatureTap(teacher, t_names, "teacher") as t_tap:
                t_logits = teacher(image)
        if use_teacher:
            if cfg.soft_weight > 0:
                soft = cfg.soft_loss(logits, t_logits, cfg.temperature, weight)
                loss = loss + cfg.soft_weight * soft
                parts["soft"] = soft.item()
            if adapters is not None:
                pairs = adapters(s_tap.outputs(), t_tap.outputs())
                hint = sum(cfg.hint_loss(s, t) for s, t in pairs) / len(pairs)
                loss = loss + cfg.hint_weight * hint
                parts["hint"] = hint.item()
        return loss, parts

    notes = {"teacher": type(teacher).__name__, "soft_weight": cfg.soft_weight,
             "temperature": cfg.temperature, "soft_loss": cfg.soft_loss.__name__,
             "hints": [list(p) for p in cfg.hints], "hint_weight": cfg.hint_weight,
             "hint_loss": cfg.hint_loss.__name__, "teacher_labelled": n_extra,
             "teacher_on_whole_images": cfg.teacher_on_whole_images}
    extra_params = list(adapters.parameters()) if adapters is not None else None
    return fit(student, train_set, val_set, cfg, step_loss, extra_params=extra_params, notes=notes, **resuming)
