"""Your own data: ``train`` / ``distill --data DIR`` on a folder of images and masks (``mobileunet.image_folder``).

The fixture is written here, in the documented layout (``DIR/images/<name>.png``,
``DIR/masks/<name>.png``); each bad layout gets a sentence that names the file
and the fix.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobileunet.cli import main
from mobileunet.image_folder import MaskFolder, find_pairs, folder_splits, split_pairs

REPO = Path(__file__).resolve().parents[1]


def write_folder(root: Path, n: int = 5, size: tuple[int, int] = (40, 36), grey: bool = False) -> Path:
    """``n`` photos of a bright disc on noise and their 0/255 masks, as ``root/images`` and ``root/masks``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[: size[1], : size[0]]
    for i in range(n):
        disc = (yy - size[1] / 2) ** 2 + (xx - size[0] / 2 - i) ** 2 < (6 + i) ** 2
        photo = rng.uniform(0, 80, (size[1], size[0], 3)) + 150 * disc[..., None]
        image = Image.fromarray(photo.astype(np.uint8))
        (image.convert("L") if grey else image).save(root / "images" / f"photo{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"photo{i}.png")
    return root


def test_a_folder_reads_as_images_masks_and_a_fixed_split(tmp_path):
    root = write_folder(tmp_path / "own", n=7)
    train_set, val_set, spec = folder_splits(root, size=32)
    assert (len(train_set), len(val_set)) == (6, 1) and val_set.names == ["photo4.jpg"]
    image, mask, weight = train_set[0]
    assert image.shape == (3, 32, 32) and mask.shape == weight.shape == (1, 32, 32)
    assert 0 <= image.min() and image.max() <= 1 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert weight.eq(1).all() and spec["channels"] == 3 and spec["val"]["files"] == ["photo4.jpg"]
    grey, _, spec = folder_splits(write_folder(tmp_path / "grey", n=2, grey=True), size=16)
    assert grey[0][0].shape == (1, 16, 16) and spec["channels"] == 1
    assert split_pairs(list(range(12)))[1] == [4, 9]


def _break(root: Path, how: str) -> str:
    """Spoil a good folder one way; returns what the error must say."""
    if how == "no masks folder":
        for p in (root / "masks").iterdir():
            p.unlink()
        (root / "masks").rmdir()
        return "no folder masks/ in it"
    if how == "image without mask":
        (root / "masks" / "photo3.png").unlink()
        return "1 image(s) without a mask, e.g. images/photo3.png: add masks/photo3.png"
    if how == "mask without image":
        (root / "images" / "photo3.png").unlink()
        return "1 mask(s) without an image, e.g. masks/photo3.png"
    if how == "mask of another size":
        Image.new("L", (20, 20)).save(root / "masks" / "photo2.png")
        return "is 20x20 but its image is 40x36: a mask must have its image's size"
    if how == "grey levels in a mask":
        Image.fromarray(np.arange(40 * 36, dtype=np.uint8).reshape(36, 40) % 5).save(root / "masks" / "photo1.png")
        return "holds the values [0, 1, 2, 3, 4]: a mask is 0 for background and 1 (or 255)"
    if how == "no images":
        for p in (root / "images").iterdir():
            p.unlink()
        return "no .png or .jpg images in"
    if how == "one image":
        for i in range(1, 5):
            (root / "images" / f"photo{i}.{'png' if i % 2 else 'jpg'}").unlink()
            (root / "masks" / f"photo{i}.png").unlink()
        return "1 image: a folder needs at least 2"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["no masks folder", "image without mask", "mask without image",
                                 "mask of another size", "grey levels in a mask", "no images", "one image"])
def test_a_bad_layout_is_named_with_its_fix(tmp_path, how):
    root = write_folder(tmp_path / "own")
    message = _break(root, how)
    with pytest.raises(ValueError) as err:
        folder_splits(root, size=32)
    assert message in str(err.value)


def test_a_missing_folder_and_bad_values_from_the_command(tmp_path, capsys):
    out = ["--out", str(tmp_path / "x.pt"), "--steps", "1", "--size", "32", "--crop", "0"]
    assert main(["train", "--data", str(tmp_path / "nowhere"), *out]) == 2
    assert f"--data {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    root = write_folder(tmp_path / "own")
    assert main(["train", "--data", str(root), "--batch-size", "8", *out]) == 2
    assert "has 4 training images, fewer than --batch-size 8" in capsys.readouterr().err
    assert main(["train", "--data", str(root), "--label-miss", "0.3", *out]) == 2
    assert "--label-miss corrupts the generated cells' labels" in capsys.readouterr().err
    assert main(["distill", "--data", str(root), "--unlabelled", "4", *out]) == 2
    assert "--unlabelled works on the generated cells" in capsys.readouterr().err
    assert main(["distill", "--data", str(root), "--batch-size", "2", *out]) == 2     # the shipped 1-channel teacher
    assert "takes 1-channel images, but --data" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


TWO_STEPS = ["--size", "32", "--crop", "0", "--steps", "2", "--batch-size", "2", "--eval-every", "2",
             "--device", "cpu", "--threads", "1"]


def test_train_and_distill_on_a_folder_from_the_command_line(tmp_path):
    root = write_folder(tmp_path / "own")
    teacher = tmp_path / "teacher.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mobileunet", "train", "--data", str(root), "--model",
                           "default_student", *TWO_STEPS, "--out", str(teacher)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(teacher.with_suffix(".json").read_text())
    assert manifest["data"]["dataset"].startswith("image folder") and manifest["data"]["channels"] == 3
    assert manifest["data"]["val"] == {"n": 1, "size": 32, "files": ["photo4.jpg"]}
    assert manifest["model"]["config"]["in_channels"] == 3 and manifest["training"]["steps"] == 2
    assert 0 <= manifest["metrics"]["iou"] <= 1
    student = tmp_path / "student.pt"
    assert main(["distill", "--data", str(root), "--teacher", str(teacher), "--soft-weight", "0.5",
                 *TWO_STEPS, "--out", str(student)]) == 0
    assert json.loads(student.with_suffix(".json").read_text())["model"]["teacher"]["file"] == str(teacher)
    assert main(["evaluate", str(student)]) == 2                     # it scores on the cells: refused, said why


def test_mask_folder_needs_pairs():
    with pytest.raises(ValueError, match="at least one"):
        MaskFolder([])
    with pytest.raises(ValueError, match="no such folder"):
        find_pairs("/nonexistent/own")


def test_a_pet_folder_is_read_by_the_pet_loader(tmp_path):
    from test_pets import write_fixture                 # the Pet loader's own fixture, in torchvision's layout

    write_fixture(tmp_path, {"trainval": ["Abyssinian_1", "beagle_2", "Bengal_3"], "test": ["pug_4"]})
    out = tmp_path / "pets.pt"
    assert main(["train", "--data", str(tmp_path), "--model", "default_student", *TWO_STEPS, "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())["data"]
    assert data["dataset"].startswith("Oxford-IIIT Pet") and data["val"] == {"split": "test", "n": 1, "size": 32}
