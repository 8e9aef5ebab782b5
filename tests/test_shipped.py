"""The checkpoints the course ships: each reloads with ``weights_only=True``, is the file its
manifest describes, and still scores what the manifest says on the validation split."""
from pathlib import Path

import pytest
import torch

from mobileunet import CellsDataset, evaluate, load_checkpoint
from mobileunet.checkpoint import sha256
from mobileunet.manifest import read_manifest

CHECKPOINTS = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
SHIPPED = ["unet_teacher_cells", "student_cells"]
TOLERANCE = 0.005
"""Scores may move this much (absolute) between machines and thread counts: float sums in
another order flip a few pixels at the 0.5 threshold, and an instance-F1 match with them."""


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reproduces_its_manifest(name):
    path = CHECKPOINTS / f"{name}.pt"
    manifest = read_manifest(path)
    assert manifest is not None, f"{name}.json is missing beside {path}"
    assert manifest["command"].startswith("python -m mobileunet ")
    assert manifest["checkpoint"]["sha256"] == sha256(path), "the file is not the one the manifest describes"
    assert path.stat().st_size <= 32e6
    torch.load(path, weights_only=True)                  # plain tensors and numbers, no pickled code
    model, meta = load_checkpoint(path)
    assert meta["command"] == manifest["command"]
    val = manifest["data"]["val"]
    scores = evaluate(model, CellsDataset("val", val["n"], val["size"], val["seed"]))
    for key in ("iou", "dice", "instance_f1"):
        assert scores[key] == pytest.approx(manifest["metrics"][key], abs=TOLERANCE), key


def test_the_shipped_student_is_the_default_student_distilled_from_the_shipped_teacher():
    from mobileunet.models import default_student

    student = read_manifest(CHECKPOINTS / "student_cells.pt")
    assert student["command"].startswith("python -m mobileunet distill")
    assert student["model"]["teacher"]["sha256"] == sha256(CHECKPOINTS / "unet_teacher_cells.pt")
    assert student["model"]["config"] == default_student(in_channels=1, out_channels=1).config, (
        "default_student() changed since student_cells.pt was distilled: re-run the command in "
        "data/checkpoints/student_cells.json to ship a matching student")


EFFECT_TOLERANCE = {"psnr": 0.05, "ssim": 0.002, "line_f1": 0.01}
"""PSNR (dB) and SSIM may move this much between machines: the teacher's float64 filters and the
student's convolutions sum in another order; a changed effect or student moves them by far more."""


def test_the_shipped_effect_student_reproduces_its_manifest(tmp_path):
    from mobileunet.effect_distill import evaluate_effect
    from mobileunet.effects import CartoonParams
    from mobileunet import models
    from mobileunet.photos import PairSpec, teacher_pairs

    path = CHECKPOINTS / "effect_student.pt"
    manifest = read_manifest(path)
    assert manifest is not None, f"effect_student.json is missing beside {path}"
    assert manifest["command"].startswith("python -m mobileunet effect")
    assert manifest["checkpoint"]["sha256"] == sha256(path), "the file is not the one the manifest describes"
    assert path.stat().st_size <= 8e6
    torch.load(path, weights_only=True)
    model, meta = load_checkpoint(path)
    assert meta["command"] == manifest["command"]
    config = manifest["model"]["config"]
    builder = getattr(models, manifest["model"]["builder"])
    kwargs = {k: config[k] for k in ("residual", "exact_lines", "exact_quantise", "smooth_base", "scale", "expand")
              if k in config}
    assert config == builder(**kwargs).config, (
        f"models.{manifest['model']['builder']}() changed since the effect student was trained: re-run the command "
        f"in data/checkpoints/effect_student.json")
    # the first few held-out pairs, made again by the teacher (seconds), scored again
    val, check = manifest["data"]["val"], manifest["check"]
    spec = PairSpec("val", check["n"], val["size"], val["seed"], val["occlusion"], val["jitter"])
    pairs = teacher_pairs(spec, CartoonParams(**manifest["effect"]["params"]), cache_dir=tmp_path, progress=False)
    assert sorted(pairs.manifest["photos"]) == val["photos"]
    scores = evaluate_effect(model, pairs)
    for key, tol in EFFECT_TOLERANCE.items():
        if key in check:
            assert scores[key] == pytest.approx(check[key], abs=tol), key
