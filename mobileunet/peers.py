"""Peer models the student is measured against (lesson 04, ``benchmarks/``).

Each builder returns a plain ``(B, in_channels, H, W) -> (B, out_channels, H, W)``
module with random weights: nothing is downloaded.

* torchvision's LRASPP-MobileNetV3-Large (Howard et al. 2019, Sec. 6.4): a
  segmentation head on 1/8 and 1/16 features, upsampled to the input;
* torchvision's DeepLabV3-MobileNetV3-Large: an ASPP head at stride 16;
* segmentation_models_pytorch's ``Unet(encoder_name="mobilenet_v2")``: the
  usual off-the-shelf MobileNet UNet (needs the ``bench`` extra).
"""
from __future__ import annotations

import torch
from torch import nn

from .encoders import short_training_batchnorm


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model that returns its ``"out"`` tensor, for any channel count.

    torchvision's models take RGB and return a dict; for ``in_channels != 3``
    the backbone's stem conv is replaced by one with that many input channels.
    BatchNorm momentum is set to torch's default 0.1 (torchvision's 0.01 suits
    long ImageNet runs, not a lesson's few hundred steps; see
    ``encoders.short_training_batchnorm``). Neither changes the cost of a forward pass.
    """

    def __init__(self, model: nn.Module, in_channels: int = 3):
        super().__init__()
        short_training_batchnorm(model)
        if in_channels != 3:
            stem = model.backbone["0"]
            old = stem[0]
            stem[0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                old.padding, bias=old.bias is not None)
        self.model, self.in_channels = model, in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}: check the channel count")
        return self.model(x)["out"]


def lraspp_mobilenet_v3(in_channels: int = 3, out_channels: int = 1) -> TorchvisionSegmentation:
    """torchvision's LRASPP-MobileNetV3-Large, random weights (``weights=None, weights_backbone=None``)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return TorchvisionSegmentation(
        lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=out_channels),
        in_channels)


def deeplabv3_mobilenet_v3(in_channels: int = 3, out_channels: int = 1) -> TorchvisionSegmentation:
    """torchvision's DeepLabV3-MobileNetV3-Large, random weights, no auxiliary head."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return TorchvisionSegmentation(
        deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=out_channels,
                                     aux_loss=False),
        in_channels)


def smp_unet_mobilenet_v2(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """segmentation_models_pytorch ``Unet(encoder_name="mobilenet_v2", encoder_weights=None)``."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise ImportError("segmentation_models_pytorch is missing: pip install 'mobileunet[bench]'") from err
    return smp.Unet(encoder_name="mobilenet_v2", encoder_weights=None, in_channels=in_channels,
                    classes=out_channels)
