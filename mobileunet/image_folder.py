"""Your own images and masks from a folder, for ``python -m mobileunet train --data DIR`` (and ``distill``).

The layout::

    DIR/images/<name>.png | .jpg | .jpeg     the photos (any size; grey or colour)
    DIR/masks/<name>.png                     one per image, the same size: 0 background, 1 or 255 object

Every image needs its mask and every mask its image. Images are resized to
``size`` x ``size`` (bilinear; masks nearest), so they may differ in size from
each other. They are read as grey (one channel) when every image is grey,
otherwise as RGB. The split is fixed by file name: every fifth image in name
order (the 5th, 10th, ...) is validation, at least one. A folder in the
Oxford-IIIT Pet layout (``DIR/oxford-iiit-pet/``, see ``mobileunet.pets``) is
read by the Pet loader instead, with its own ``trainval`` and ``test`` splits.

A mask carries no instance borders, so the weight map is all ones: the default
border-weighted BCE is plain BCE here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .pets import pet_segmentation, pets_available

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "DIR/images/<name>.png|.jpg and DIR/masks/<name>.png"


def find_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` paths of folder ``root``, in name order; a ``ValueError`` naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder (the layout is {LAYOUT})")
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise ValueError(f"--data {root}: no folder {folder.name}/ in it (the layout is {LAYOUT})")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"--data {root}: no .png or .jpg images in {images_dir}")
    stems = [p.stem for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"--data {root}: two images named {twice[0]} (e.g. .png and .jpg): keep one, "
                         f"since both would take masks/{twice[0]}.png")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    lonely = [p.name for p in images if p.stem not in masks]
    if lonely:
        raise ValueError(f"--data {root}: {len(lonely)} image(s) without a mask, e.g. images/{lonely[0]}: "
                         f"add masks/{Path(lonely[0]).stem}.png or remove the image")
    orphans = sorted(set(masks) - set(stems))
    if orphans:
        raise ValueError(f"--data {root}: {len(orphans)} mask(s) without an image, e.g. masks/{orphans[0]}.png: "
                         f"add its image or remove the mask")
    return [(p, masks[p.stem]) for p in images]


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Mask ``path`` as a 0/1 float array; it must be ``size`` (width, height) and hold two values at most."""
    with Image.open(path) as im:
        if im.size != size:
            raise ValueError(f"mask {path} is {im.size[0]}x{im.size[1]} but its image is {size[0]}x{size[1]}: "
                             f"a mask must have its image's size")
        values = np.asarray(im.convert("L"))
    found = np.unique(values)
    if not (set(found.tolist()) <= {0, 1} or set(found.tolist()) <= {0, 255}):
        raise ValueError(f"mask {path} holds the values {found[:6].tolist()}{'...' if len(found) > 6 else ''}: "
                         f"a mask is 0 for background and 1 (or 255) for the object, nothing else")
    return (values > 0).astype(np.float32)


class MaskFolder(Dataset):
    """Images and masks from ``find_pairs`` as ``(image, mask, weight)`` tensors of ``size`` x ``size``.

    ``image`` is (C, S, S) in [0, 1] with C = 1 when every image is grey and 3
    otherwise; ``mask`` is (1, S, S) of 0/1; ``weight`` is all ones.

    Example:
        >>> MaskFolder([]).channels
        Traceback (most recent call last):
        ...
        ValueError: MaskFolder needs at least one (image, mask) pair
    """

    def __init__(self, pairs: list[tuple[Path, Path]], size: int = 128, channels: int | None = None):
        if not pairs:
            raise ValueError("MaskFolder needs at least one (image, mask) pair")
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size={size!r}: use an int of at least 16 pixels")
        self.channels = channels or image_channels([image for image, _ in pairs])
        images, masks = zip(*(self._load(image, mask, size) for image, mask in pairs))
        self.images, self.masks = torch.stack(images), torch.stack(masks)
        self.weights = torch.ones_like(self.masks)
        self.names = [image.name for image, _ in pairs]

    def _load(self, image_path: Path, mask_path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            with Image.open(image_path) as im:
                photo = im.convert("L" if self.channels == 1 else "RGB")
        except OSError as err:
            raise ValueError(f"image {image_path} cannot be read ({err}): replace or remove it") from None
        mask = read_mask(mask_path, photo.size)
        photo = np.asarray(photo.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
        image = torch.from_numpy(photo)[None] if self.channels == 1 else torch.from_numpy(photo).permute(2, 0, 1)
        return image, torch.from_numpy(mask.copy())[None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i], self.weights[i]


def image_channels(paths: list[Path]) -> int:
    """1 when every image at ``paths`` is grey (PIL mode L, I or 1), else 3."""
    modes = set()
    for path in paths:
        try:
            with Image.open(path) as im:
                modes.add(im.mode)
        except OSError as err:
            raise ValueError(f"image {path} cannot be read ({err}): replace or remove it") from None
    return 1 if modes <= {"L", "I", "I;16", "1"} else 3


def split_pairs(pairs: list) -> tuple[list, list]:
    """``(train, val)``: every fifth pair in name order is validation (the last one when there are fewer than 5)."""
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} image: a folder needs at least 2, one to train on and one to validate")
    val = set(range(4, len(pairs), 5)) or {len(pairs) - 1}
    return [p for i, p in enumerate(pairs) if i not in val], [p for i, p in enumerate(pairs) if i in val]


def folder_splits(root: str | Path, size: int = 128) -> tuple[Dataset, Dataset, dict]:
    """The ``(train, val)`` datasets of folder ``root`` and the manifest's record of them.

    A folder holding ``oxford-iiit-pet/`` goes to ``mobileunet.pets``; any
    other must have the layout of this module's docstring.
    """
    root = Path(root)
    if pets_available(root):
        train_set, val_set = pet_segmentation(size, root)
        return train_set, val_set, {"dataset": f"Oxford-IIIT Pet at {root} (mobileunet.pets)", "channels": 3,
                                    "train": {"split": "trainval", "n": len(train_set), "size": size},
                                    "val": {"split": "test", "n": len(val_set), "size": size}}
    train_pairs, val_pairs = split_pairs(find_pairs(root))
    channels = image_channels([image for image, _ in train_pairs + val_pairs])
    train_set, val_set = MaskFolder(train_pairs, size, channels), MaskFolder(val_pairs, size, channels)
    return train_set, val_set, {"dataset": f"image folder {root} (mobileunet.image_folder)", "channels": channels,
                                "train": {"n": len(train_set), "size": size},
                                "val": {"n": len(val_set), "size": size, "files": val_set.names}}
