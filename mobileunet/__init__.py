"""mobileunet: from UNet anatomy to a real-time MobileNet UNet student.

The package behind the course notebooks in ``notebooks/``. Importing it has no
side effects: it seeds nothing, styles no plots, downloads nothing.
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .data import CellsDataset, border_weight_map, cells_splits, make_cell_image
from .env import FAST, env_report, get_device, set_seed
from .layers import DoubleConv, Down, Up
from .losses import bce_dice_loss, bce_loss, dice_loss, weighted_bce_loss
from .metrics import dice, iou
from .models import UNet, unet_2015, unet_teacher
from .models import (MobileUNet, default_student, mobile_unet_v2, mobile_unet_v3_large,
                     mobile_unet_v3_small)
from .profile import count_params, receptive_field, trace_shapes
from .profile import Table, activation_memory, count_flops, measure_latency, peak_gflops
from .train import TrainConfig, evaluate, predict, train

__version__ = "0.1.0"

__all__ = [
    "FAST", "env_report", "get_device", "set_seed",
    "CellsDataset", "border_weight_map", "cells_splits", "make_cell_image",
    "DoubleConv", "Down", "Up", "UNet", "unet_2015", "unet_teacher",
    "bce_loss", "dice_loss", "weighted_bce_loss", "bce_dice_loss", "iou", "dice",
    "TrainConfig", "train", "evaluate", "predict", "save_checkpoint", "load_checkpoint",
    "count_params", "trace_shapes", "receptive_field",
    "MobileUNet", "default_student", "mobile_unet_v2", "mobile_unet_v3_small", "mobile_unet_v3_large",
    "Table", "count_flops", "activation_memory", "measure_latency", "peak_gflops",
]
