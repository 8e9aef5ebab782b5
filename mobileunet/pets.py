"""Oxford-IIIT Pet segmentation, opt-in: nothing downloads unless asked.

The real-photo dataset for learners with a network (about 800 MB in two
archives). It reads torchvision's on-disk layout::

    ROOT/oxford-iiit-pet/images/<name>.jpg
    ROOT/oxford-iiit-pet/annotations/trimaps/<name>.png     1 pet, 2 background, 3 border
    ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt    "<name> <class> <species> <breed>"

The trimap's uncertain border becomes weight 0, so a loss that takes the
weight map (``weighted_bce_loss``) ignores it, as the dataset's authors intend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .env import data_dir

PET, BACKGROUND, BORDER = 1, 2, 3
DOWNLOAD_NOTE = ("Oxford-IIIT Pet is not downloaded: pet_segmentation(..., download=True) "
                 "fetches images.tar.gz (~760 MB) and annotations.tar.gz (~19 MB) through "
                 "torchvision into {root}. The course's embedded cells data needs no download.")


def default_root() -> Path:
    return data_dir() / "pets"


def pets_available(root: str | Path | None = None) -> bool:
    """True when the dataset's folders exist under ``root``: no network involved."""
    base = Path(root or default_root()) / "oxford-iiit-pet"
    return (base / "images").is_dir() and (base / "annotations" / "trimaps").is_dir()


class PetSegmentation(Dataset):
    """Pet photos resized to ``size`` x ``size`` as ``(image, mask, weight)``.

    ``image`` is (3, S, S) in [0, 1]; ``mask`` is 1 on the pet; ``weight`` is 0 on
    the trimap border and 1 elsewhere. ``limit`` keeps the first N images (a
    quick look, or a laptop-sized subset).
    """

    def __init__(self, split: str = "trainval", size: int = 128, root: str | Path | None = None,
                 download: bool = False, limit: int | None = None):
        from torchvision.datasets import OxfordIIITPet

        if split not in ("trainval", "test"):
            raise ValueError(f"split={split!r}: Oxford-IIIT Pet has 'trainval' and 'test'")
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size={size!r}: use an int of at least 16 pixels")
        root = Path(root or default_root())
        if not download and not pets_available(root):
            raise FileNotFoundError(DOWNLOAD_NOTE.format(root=root))
        self.size = size
        self.base = OxfordIIITPet(str(root), split=split, target_types="segmentation", download=download)
        self.n = len(self.base) if limit is None else min(limit, len(self.base))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        photo, trimap = self.base[i]
        photo = photo.resize((self.size, self.size), Image.BILINEAR)
        trimap = np.asarray(trimap.resize((self.size, self.size), Image.NEAREST))
        image = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mask = torch.from_numpy((trimap == PET).astype(np.float32))[None]
        weight = torch.from_numpy((trimap != BORDER).astype(np.float32))[None]
        return image, mask, weight


def pet_segmentation(size: int = 128, root: str | Path | None = None, download: bool = False,
                     limit: int | None = None) -> tuple[PetSegmentation, PetSegmentation]:
    """The (train, val) pair: torchvision's ``trainval`` and ``test`` splits.

    Raises ``FileNotFoundError`` saying what would be downloaded when the data
    is absent and ``download`` is False.
    """
    return (PetSegmentation("trainval", size, root, download, limit),
            PetSegmentation("test", size, root, download, limit))
