"""Export round trips on a tiny UNet at 64x64: every format and precision, parity within tolerance.

(Timings are never tested; ``benchmarks/`` measures them.)
"""
import builtins

import pytest
import torch

from mobileunet import UNet, save_checkpoint
from mobileunet import export as ex
from mobileunet.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("executorch")

SIZE = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(in_channels=1, out_channels=1, base=4, depth=2, upsample="bilinear").eval()


@pytest.fixture(scope="module")
def data():
    images, masks = ex.cells_frames("val", 4, SIZE, image_size=32)
    return images, masks


@pytest.fixture(scope="module")
def calibration():
    return ex.cells_frames("unlabelled", 8, SIZE, image_size=32)[0]


@pytest.fixture(scope="module")
def exported(model, calibration, tmp_path_factory):
    """``exported(fmt, int8)``: the tiny model exported once per format and precision (lowering is slow)."""
    folder, cache = tmp_path_factory.mktemp("export"), {}

    def get(fmt, int8):
        if (fmt, int8) not in cache:
            dynamic = fmt == "onnx" and not int8         # ONNX fp32 also proves any multiple of 32 works
            cache[fmt, int8] = ex.export(model, folder / f"m{'_int8' if int8 else ''}.{fmt}", fmt, int8=int8,
                                         size=SIZE, dynamic=dynamic, calibration=calibration)
        return cache[fmt, int8]
    return get


@pytest.mark.parametrize("fmt,int8", [("onnx", False), ("onnx", True), ("pte", False), ("pte", True)])
def test_round_trip_within_tolerance(model, data, exported, fmt, int8):
    dynamic = fmt == "onnx" and not int8
    out = exported(fmt, int8)
    assert out.single_file and out.bytes > 0 and out.precision == ("int8" if int8 else "fp32")
    if fmt == "pte":
        assert out.outside_delegate == {}            # bilinear UNet: all of it runs in XNNPACK
    images, masks = data
    run = ex.load_runner(out.path)
    parity = ex.check_parity(model, run, images, int8, masks=masks)
    assert parity["ok"], parity
    assert parity["metric"] == "IoU" and parity["max abs diff"] <= (ex.FP32_MAX_ABS if not int8 else 1.0)
    if dynamic:
        x = torch.rand(1, 1, 96, 128)
        y = run(x.numpy())                           # numpy in, numpy out
        assert y.shape == (1, 1, 96, 128) and abs(torch.from_numpy(y) - model(x)).max() < ex.FP32_MAX_ABS


def test_nearest_upsampling_stays_outside_the_delegate(model):
    edge = ex.lower_xnnpack(ex.with_upsampling(model, "nearest"), ex.example_input(model, SIZE))
    assert ex.outside_delegate(edge) == {"aten.upsample_nearest2d.vec": 2}


def test_psnr_parity_for_an_effect(tmp_path):
    torch.manual_seed(0)
    effect = UNet(in_channels=3, out_channels=3, base=4, depth=2, upsample="bilinear").eval()
    images = ex.photo_frames(2, SIZE)
    out = ex.export(effect, tmp_path / "e.onnx", "onnx", size=SIZE)
    parity = ex.check_parity(effect, ex.load_runner(out.path), images, False, targets=images)
    assert parity["metric"] == "PSNR" and parity["ok"] and abs(parity["change"]) < 0.01


@pytest.mark.parametrize("kwargs,match", [
    ({"fmt": "tflite"}, "not one of"),
    ({"size": 250}, "250 is not a positive multiple of 32"),
    ({"fmt": "pte", "dynamic": True}, "static shape"),
])
def test_bad_input_names_the_fix(model, tmp_path, kwargs, match):
    fmt = kwargs.pop("fmt", "onnx")
    with pytest.raises(ValueError, match=match):
        ex.export(model, tmp_path / f"m.{fmt}", fmt, **kwargs)
    with pytest.raises(ValueError, match="should be named"):
        ex.export(model, tmp_path / "m.pte", "onnx", size=SIZE)
    with pytest.raises(TypeError, match="load_checkpoint"):
        ex.export("model.pt", tmp_path / "m.onnx")


def test_missing_dependency_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_executorch)
    monkeypatch.setattr(ex.importlib, "import_module", lambda name: no_executorch(name))
    with pytest.raises(ImportError, match=r'pip install -e "\.\[export\]"'):
        ex.require("executorch.exir")


def test_cli_writes_and_checks(model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model)
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--size", "64",
                 "--n-val", "2"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "one self-contained file" in text and "IoU" in text and "True" in text


def test_cli_errors_are_clear(model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model)
    assert main(["export", str(tmp_path / "missing.pt"), "--format", "onnx", "--out", "x.onnx"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "x.onnx"),
                 "--size", "100"]) == 2
    assert "100 is not a positive multiple of 32" in capsys.readouterr().err


def test_mismatched_architecture_fails_clearly(model, tmp_path, capsys):
    ckpt = tmp_path / "wrong.pt"
    save_checkpoint(ckpt, model)
    saved = torch.load(ckpt, weights_only=True)
    saved["config"]["base"] = 8                  # the manifest says base 8, the weights are base 4
    torch.save(saved, ckpt)
    assert main(["export", str(ckpt), "--format", "pte", "--out", str(tmp_path / "w.pte")]) == 2
    err = capsys.readouterr().err
    assert "does not fit UNet" in err and "shape mismatches" in err and "same arguments" in err


def test_pte_runner_reloads_after_a_threadpool_reset(exported):
    path = exported("pte", False).path
    x = torch.rand(1, 1, SIZE, SIZE)
    one = ex.load_runner(path, threads=1)
    y1 = one(x)
    two = ex.load_runner(path, threads=2)          # resets ExecuTorch's process-wide pool
    assert torch.allclose(two(x), y1, atol=1e-5)
    with pytest.raises(RuntimeError, match="load it again"):
        one(x)


def test_native_quiet_drops_only_native_notes(capsys):
    with ex.native_quiet():
        print("[threadpool.cpp:66] Resetting threadpool to 2 threads.")
        print("a line of the lesson's own")
    assert capsys.readouterr().out == "a line of the lesson's own\n"
