"""The Oxford-IIIT Pet loader on a tiny fixture in the real on-disk layout."""
import numpy as np
import pytest
import torch
from PIL import Image

from mobileunet.pets import BACKGROUND, BORDER, PET, PetSegmentation, pet_segmentation, pets_available


def write_fixture(root, names_by_split):
    """Write images/, annotations/trimaps/ and the split lists as torchvision expects."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, names in names_by_split.items():
        lines = []
        for k, name in enumerate(names):
            photo = rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
            Image.fromarray(photo).save(base / "images" / f"{name}.jpg")
            trimap = np.full((40, 50), BACKGROUND, np.uint8)
            trimap[10:30, 10:40] = BORDER
            trimap[12:28, 12:38] = PET
            Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
            lines.append(f"{name} {k + 1} {1 + k % 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def pet_root(tmp_path):
    write_fixture(tmp_path, {"trainval": ["Abyssinian_1", "beagle_2", "Bengal_3"], "test": ["pug_4"]})
    return tmp_path


def test_fixture_loads_as_image_mask_weight(pet_root):
    train, val = pet_segmentation(size=32, root=pet_root)
    assert len(train) == 3 and len(val) == 1
    image, mask, weight = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.shape == weight.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    # the pet sits inside the border ring: no pixel is both pet and ignored
    assert (mask * (1 - weight)).sum() == 0
    assert (weight == 0).any()


def test_limit_and_index_errors(pet_root):
    ds = PetSegmentation("trainval", size=32, root=pet_root, limit=2)
    assert len(ds) == 2
    with pytest.raises(IndexError):
        ds[2]


def test_absent_dataset_says_what_it_would_download(tmp_path):
    assert not pets_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        pet_segmentation(root=tmp_path)


def test_bad_arguments(pet_root):
    with pytest.raises(ValueError, match="split"):
        PetSegmentation("val", root=pet_root)
    with pytest.raises(ValueError, match="size"):
        PetSegmentation("trainval", size=4, root=pet_root)
