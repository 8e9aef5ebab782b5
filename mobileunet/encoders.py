"""MobileNet encoders for the UNet student (lesson 04): torchvision backbones, tapped.

The encoder contract (any encoder that honours it plugs into ``MobileUNet``):
``forward(x)`` returns the feature maps at strides 2, 4, 8, 16, 32, from high
to low resolution, and ``out_channels`` lists their channel counts.

The backbones are torchvision's; what this module adds is *where to tap them*.
The tables below are the papers' architecture tables at width 1.0, with the
blocks whose outputs become skips marked. Each MobileNet ends in a wide 1x1
conv (1280, 960 or 576 channels) made for the classifier; the taps stop before
it, which saves its cost in the encoder and in the decoder block that would
read it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from .validate import whole_number

STRIDES = (2, 4, 8, 16, 32)
"""The output strides of the five feature maps every encoder returns."""

# MobileNetV2 (Sandler et al. 2018, Table 2). features[0] is the 3x3 stem conv, stride 2;
# each row below is a stage of n blocks, features[1] onwards.
#  t (expand), c (out_ch), n (repeats), s (stride of the first block), tap (stride of the skip)
MOBILENET_V2 = [
    (1,  16, 1, 1,  2),    # features[1]       <- skip at stride 2
    (6,  24, 2, 2,  4),    # features[2:4]     <- skip at stride 4
    (6,  32, 3, 2,  8),    # features[4:7]     <- skip at stride 8
    (6,  64, 4, 2,  0),    # features[7:11]
    (6,  96, 3, 1, 16),    # features[11:14]   <- skip at stride 16
    (6, 160, 3, 2,  0),    # features[14:17]
    (6, 320, 1, 1, 32),    # features[17]      <- skip at stride 32 (not the 1280-ch conv after it)
]

# MobileNetV3-Large (Howard et al. 2019, Table 1). features[0] is the stem (16 ch, stride 2,
# hard-swish); features[i] is row i. RE = ReLU, HS = hard-swish.
#  kernel, hidden, out_ch, SE, act, stride, tap (stride of the skip)
MOBILENET_V3_LARGE = [
    (3,  16,  16, False, "RE", 1,  2),   # features[1]   <- skip at stride 2
    (3,  64,  24, False, "RE", 2,  0),
    (3,  72,  24, False, "RE", 1,  4),   # features[3]   <- skip at stride 4
    (5,  72,  40, True,  "RE", 2,  0),
    (5, 120,  40, True,  "RE", 1,  0),
    (5, 120,  40, True,  "RE", 1,  8),   # features[6]   <- skip at stride 8
    (3, 240,  80, False, "HS", 2,  0),
    (3, 200,  80, False, "HS", 1,  0),
    (3, 184,  80, False, "HS", 1,  0),
    (3, 184,  80, False, "HS", 1,  0),
    (3, 480, 112, True,  "HS", 1,  0),
    (3, 672, 112, True,  "HS", 1, 16),   # features[12]  <- skip at stride 16
    (5, 672, 160, True,  "HS", 2,  0),
    (5, 960, 160, True,  "HS", 1,  0),
    (5, 960, 160, True,  "HS", 1, 32),   # features[15]  <- skip at stride 32 (not the 960-ch conv)
]

# MobileNetV3-Small (Howard et al. 2019, Table 2): its first block already strides, so the
# stride-2 skip is the stem itself (features[0], 16 ch).
#  kernel, hidden, out_ch, SE, act, stride, tap
MOBILENET_V3_SMALL = [
    (3,  16,  16, True,  "RE", 2,  4),   # features[1]   <- skip at stride 4
    (3,  72,  24, False, "RE", 2,  0),
    (3,  88,  24, False, "RE", 1,  8),   # features[3]   <- skip at stride 8
    (5,  96,  40, True,  "HS", 2,  0),
    (5, 240,  40, True,  "HS", 1,  0),
    (5, 240,  40, True,  "HS", 1,  0),
    (5, 120,  48, True,  "HS", 1,  0),
    (5, 144,  48, True,  "HS", 1, 16),   # features[8]   <- skip at stride 16
    (5, 288,  96, True,  "HS", 2,  0),
    (5, 576,  96, True,  "HS", 1,  0),
    (5, 576,  96, True,  "HS", 1, 32),   # features[11]  <- skip at stride 32 (not the 576-ch conv)
]

ENCODERS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")

# torchvision's ImageNet weights for each backbone (published for width 1.0 only).
_WEIGHTS = {"mobilenet_v2": "MobileNet_V2_Weights", "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
            "mobilenet_v3_large": "MobileNet_V3_Large_Weights"}


def tap_indices(encoder: str) -> tuple[int, ...]:
    """The ``features[i]`` indices tapped for strides 2..32, read off the tables above."""
    if encoder == "mobilenet_v2":
        taps, index = [], 0
        for _t, _c, n, _s, tap in MOBILENET_V2:
            index += n
            if tap:
                taps.append(index)
        return tuple(taps)
    table = {"mobilenet_v3_large": MOBILENET_V3_LARGE, "mobilenet_v3_small": MOBILENET_V3_SMALL}[encoder]
    taps = [i for i, row in enumerate(table, start=1) if row[-1]]
    return tuple([0] + taps) if len(taps) == 4 else tuple(taps)   # V3-Small taps its stem


class MobileNetEncoder(nn.Module):
    """A torchvision MobileNet cut after its last tap, returning five skips.

    Args:
        encoder: ``"mobilenet_v2"``, ``"mobilenet_v3_small"`` or ``"mobilenet_v3_large"``.
        width_mult: scales every layer's channels (rounded to multiples of 8);
            0.35-1.0 is the useful range.
        in_channels: image channels. Other than 3, the stem conv is replaced
            (pretrained: its RGB filters are summed for 1 channel, cycled for more).
        pretrained: load torchvision's ImageNet weights (width 1.0 only). They come
            from torch's hub cache, or are downloaded into it; offline with an
            empty cache this raises an error saying which file to put where.
            The weights expect ImageNet-normalised RGB input.

    Example:
        >>> enc = MobileNetEncoder("mobilenet_v2", width_mult=0.5)
        >>> [tuple(f.shape[1:]) for f in enc(torch.zeros(1, 3, 64, 64))]
        [(8, 32, 32), (16, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)]
    """

    def __init__(self, encoder: str = "mobilenet_v2", width_mult: float = 1.0,
                 in_channels: int = 3, pretrained: bool = False):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r} is not one of {ENCODERS}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0.1 <= width_mult <= 2.0:
            raise ValueError(f"width_mult={width_mult!r}: use a number between 0.1 and 2.0 (e.g. 0.5)")
        whole_number("in_channels", in_channels, fix="1 grey, 3 RGB")
        if pretrained and width_mult != 1.0:
            raise ValueError(f"pretrained=True with width_mult={width_mult}: torchvision publishes "
                             f"ImageNet weights for width_mult=1.0 only; use 1.0 or pretrained=False")
        import torchvision.models as tvm

        backbone = getattr(tvm, encoder)(weights=None, width_mult=float(width_mult))
        short_training_batchnorm(backbone)
        if pretrained:
            backbone.load_state_dict(_imagenet_state_dict(encoder))
        self.name, self.width_mult, self.in_channels = encoder, float(width_mult), in_channels
        self.taps = tap_indices(encoder)
        self.features = backbone.features[: self.taps[-1] + 1]   # drop the classifier's wide conv
        if in_channels != 3:
            _replace_stem(self.features[0][0], self.features[0], in_channels, keep=pretrained)
        self.out_channels: tuple[int, ...] = tuple(self.features[i].out_channels for i in self.taps)
        self.strides = STRIDES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)                                   # (B, C_i, H/s_i, W/s_i)
            if i in self.taps:
                feats.append(x)
        return feats                                       # strides 2, 4, 8, 16, 32


def short_training_batchnorm(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    """Set every BatchNorm's running-statistics momentum to torch's default, 0.1.

    torchvision's MobileNetV3 uses 0.01 (TensorFlow's 0.99 decay), made for
    ImageNet runs of hundreds of thousands of steps. After the few hundred steps
    of a CPU lesson its running statistics are still near their initial values,
    and a model that trains well scores near zero in eval mode.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    return model


def _replace_stem(conv: nn.Conv2d, parent: nn.Sequential, in_channels: int, keep: bool) -> None:
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    if keep:                                              # reuse the pretrained RGB filters
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(1, keepdim=True))   # a grey image is R = G = B
            else:
                new.weight.copy_(torch.stack([w[:, i % 3] for i in range(in_channels)], 1) * 3 / in_channels)
    parent[0] = new


def weights_cache_path(encoder: str) -> Path:
    """Where torch's hub cache keeps (or would keep) ``encoder``'s ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights_enum(encoder).url).name


def _weights_enum(encoder: str):
    import torchvision.models as tvm

    return getattr(tvm, _WEIGHTS[encoder]).IMAGENET1K_V1


def _imagenet_state_dict(encoder: str) -> dict:
    weights = _weights_enum(encoder)
    try:
        return weights.get_state_dict(progress=False)      # the hub cache first, else a download
    except Exception as err:                               # URLError, socket errors, HTTP errors
        raise RuntimeError(
            f"pretrained=True needs torchvision's ImageNet weights for {encoder}: tried to fetch "
            f"{weights.url} and could not ({type(err).__name__}: {err}). Offline, copy that file "
            f"to {weights_cache_path(encoder)} (torch's hub cache; set TORCH_HOME to move it), "
            f"or build the encoder with pretrained=False."
        ) from err
