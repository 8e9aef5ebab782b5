"""The command line on tiny data: train, evaluate, distill, their manifests, and clear errors."""
import json

import pytest
import torch

from mobileunet import load_checkpoint
from mobileunet.checkpoint import sha256
from mobileunet.cli import main, read_manifest

TINY = ["--n-train", "8", "--n-val", "3", "--size", "32", "--crop", "24", "--steps", "2",
        "--batch-size", "4", "--eval-every", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "teacher.pt"
    assert main(["train", "--model", "unet_teacher", *TINY, "--store-dtype", "float16",
                 "--out", str(out)]) == 0
    return out


def test_train_writes_a_checkpoint_and_its_manifest(teacher):
    m = read_manifest(teacher)
    assert m["command"].startswith("python -m mobileunet train --model unet_teacher --n-train 8")
    assert m["seed"] == 0
    assert m["data"]["train"] == {"split": "train", "n": 8, "size": 32, "seed": 0}
    assert m["data"]["val"] == {"split": "val", "n": 3, "size": 32, "seed": 0}
    assert m["model"]["builder"] == "unet_teacher" and m["model"]["params"] == 7_762_465
    assert m["training"]["steps"] == 2 and m["training"]["loss"] == "weighted_bce_loss"
    assert m["training"]["device"] == "cpu" and m["training"]["threads"] >= 1
    assert m["package_version"] and "git_commit" in m and "git_dirty" in m
    assert m["checkpoint"]["sha256"] == sha256(teacher)
    assert m["checkpoint"]["dtype"] == "float16" and m["checkpoint"]["bytes"] < 16.5e6
    assert set(m["metrics"]) >= {"split", "iou", "dice", "instance_f1"}
    assert set(m["metrics_float32"]) >= {"iou", "dice"}     # fp16 runs also score the fp32 weights
    model, meta = load_checkpoint(teacher)
    assert meta["command"] == m["command"] and meta["manifest"] == "teacher.json"
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())


def test_evaluate_reproduces_the_manifest(teacher, capsys):
    assert main(["evaluate", str(teacher), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == {"split": "val", "n": 3, "size": 32, "seed": 0}
    assert out["sha256_matches"]
    for k in ("iou", "dice", "instance_f1"):
        assert out["metrics"][k] == pytest.approx(out["manifest_metrics"][k], abs=1e-6)
    assert main(["evaluate", str(teacher), "--n-val", "2"]) == 0
    assert "2 validation images of 32x32" in capsys.readouterr().out


def test_distill_writes_a_student_that_names_its_teacher(teacher, tmp_path):
    out = tmp_path / "student.pt"
    assert main(["distill", "--teacher", str(teacher), *TINY, "--soft-weight", "0.5",
                 "--temperature", "2", "--soft-loss", "weighted_kl", "--hint", "ups.2:decoder.blocks.3",
                 "--unlabelled", "4",
                 "--out", str(out)]) == 0
    m = read_manifest(out)
    assert m["model"]["builder"] == "default_student"
    assert m["model"]["teacher"]["sha256"] == sha256(teacher)
    assert m["training"]["soft_weight"] == 0.5 and m["training"]["temperature"] == 2.0
    assert m["training"]["soft_loss"] == "weighted_soft_target_kl"
    assert m["training"]["hints"] == [["ups.2", "decoder.blocks.3"]]
    assert m["training"]["hint_weight"] == 1.0 and m["training"]["teacher_labelled"] == 4
    assert m["data"]["unlabelled"]["n"] == 4
    assert m["checkpoint"]["dtype"] == "float32" and m["checkpoint"]["sha256"] == sha256(out)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "distill", "evaluate", "bench"):
        assert cmd in out


@pytest.mark.parametrize("argv,match", [
    (["train", "--model", "resnet", "--out", "x.pt"], "invalid choice: 'resnet'"),
    (["train", "--steps", "0", "--out", "x.pt"], "0 must be a whole number from 1 to"),
    (["train", "--out", "model.pth"], "NAME.pt"),
    (["distill", "--hint", "ups.2", "--out", "x.pt"], "TEACHER_MODULE:STUDENT_MODULE"),
    (["distill", "--soft-weight", "2", "--out", "x.pt"], "between 0 and 1"),
    (["train", "--out", "x.pt", "--lr", "fast"], "'fast' is not a number"),
])
def test_bad_arguments_are_refused_by_the_parser(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["train", *TINY, "--crop", "40"], "--crop 40 is larger than --size 32"),
    (["train", *TINY, "--n-train", "2"], "--n-train 2 is smaller than --batch-size 4"),
    (["distill", *TINY, "--hint-weight", "1"], "needs at least one --hint"),
    (["distill", *TINY, "--teacher", "nowhere/teacher.pt"], "no checkpoint at nowhere/teacher.pt"),
    (["evaluate", "nowhere.pt"], "no checkpoint at nowhere.pt"),
])
def test_bad_values_give_a_clear_error_and_status_2(argv, match, tmp_path, capsys):
    if argv[0] != "evaluate":
        argv = [*argv, "--out", str(tmp_path / "x.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_a_bad_hint_module_is_named(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(teacher), *TINY, "--hint", "ups.9:decoder.blocks.3",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "no module 'ups.9'" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "1e309"), ("--weight-decay", "inf"),
                                        ("--lr", "nan")])
def test_non_finite_numbers_are_refused_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", flag, value, "--out", "x.pt"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}" in err and "not a finite number" in err


def test_distill_refuses_to_overwrite_its_teacher(teacher, capsys):
    before = sha256(teacher)
    assert main(["distill", "--teacher", str(teacher), *TINY, "--out", str(teacher)]) == 2
    assert "one of this run's inputs" in capsys.readouterr().err
    assert sha256(teacher) == before


def test_out_must_not_exist_unless_forced_and_shipped_checkpoints_are_guarded(tmp_path, capsys):
    from mobileunet.env import data_dir

    existing = tmp_path / "old.pt"
    existing.write_bytes(b"keep me")
    assert main(["train", "--model", "default_student", *TINY, "--out", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    shipped = data_dir() / "checkpoints" / "student_cells.pt"
    assert main(["train", "--model", "default_student", *TINY, "--out", str(shipped)]) == 2
    assert "shipped checkpoints" in capsys.readouterr().err
    assert main(["train", "--model", "default_student", *TINY, "--out", str(existing), "--force"]) == 0
    assert read_manifest(existing)["model"]["builder"] == "default_student"


def test_an_unwritable_out_fails_before_training(tmp_path, capsys):
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert main(["train", *TINY, "--out", str(folder / "x.pt")]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_a_diverging_run_stops_with_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.pt"
    assert main(["train", "--model", "default_student", *TINY, "--lr", "1e30", "--steps", "3",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "lower the learning rate" in err
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 592, b"not a checkpoint at all", b'{"json": true}'])
def test_broken_checkpoints_give_one_line_naming_the_file(content, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_pickled_module_is_refused_and_runs_no_code(tmp_path, capsys):
    import torch

    bad = tmp_path / "evil.pt"
    torch.save({"arch": "UNet", "state_dict": {}, "config": {}, "payload": torch.nn.ReLU()}, bad)
    assert main(["evaluate", str(bad)]) == 2
    assert "not a readable mobileunet checkpoint" in capsys.readouterr().err


def test_a_manifest_that_is_not_an_object_is_named(teacher, tmp_path, capsys):
    import shutil

    copy = tmp_path / "t.pt"
    shutil.copy(teacher, copy)
    copy.with_suffix(".json").write_text("[1, 2]")
    assert main(["evaluate", str(copy)]) == 2
    assert "t.json is not a manifest" in capsys.readouterr().err


@pytest.mark.parametrize("change,says", [
    (lambda m: m.pop("metrics"), "no 'metrics' object"),
    (lambda m: m["data"]["val"].update(size="32"), "data.val.size is '32'"),
    (lambda m: m["data"]["val"].update(size=200000), "data.val.size is 200000"),
    (lambda m: m["data"]["val"].update(n=-1), "data.val.n is -1"),
    (lambda m: m["metrics"].update(iou="high"), "metrics ['iou'] are not finite"),
    (lambda m: m["checkpoint"].update(sha256=7), "checkpoint.sha256"),
    (lambda m: m.update(manifest_version=99), "newer than this package reads"),
])
def test_a_manifest_with_a_wrong_layout_is_refused_before_any_work(teacher, tmp_path, capsys, change, says):
    import shutil

    copy = tmp_path / "t.pt"
    shutil.copy(teacher, copy)
    manifest = read_manifest(teacher)
    change(manifest)
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    for argv in (["evaluate", str(copy)], ["export", str(copy), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "t.json is not a valid manifest" in err and says in err and err.count("\n") == 1


def test_a_kill_during_the_save_leaves_the_old_checkpoint_whole(teacher, tmp_path):
    """SIGKILL a real process while it writes over a checkpoint: the old file and its manifest still load."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "keep.pt"
    shutil.copy(teacher, target)
    shutil.copy(teacher.with_suffix(".json"), target.with_suffix(".json"))
    before = sha256(target)
    script = (f"import torch, time\nfrom mobileunet.checkpoint import _atomic\n"
              f"def slow(f):\n    f.write(b'x' * 1000)\n    f.flush()\n    print('writing', flush=True)\n"
              f"    time.sleep(30)\n"
              f"_atomic({str(target)!r}, 'wb', slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert sha256(target) == before == read_manifest(target)["checkpoint"]["sha256"]
    load_checkpoint(target)
    time.sleep(0.1)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]   # the partial write is a stray temp


def test_atomic_writes_keep_the_usual_permissions(tmp_path):
    import os

    from mobileunet.checkpoint import atomic_write_text

    path = atomic_write_text("x", tmp_path / "f.json")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_changed_checkpoint_is_refused_unless_told(teacher, tmp_path, capsys):
    import shutil

    import torch

    copy = tmp_path / "t.pt"
    shutil.copy(teacher, copy)
    shutil.copy(teacher.with_suffix(".json"), copy.with_suffix(".json"))
    blob = torch.load(copy, weights_only=True)
    blob["meta"]["note"] = "edited"
    torch.save(blob, copy)
    assert main(["evaluate", str(copy)]) == 2
    assert "not the file its manifest describes" in capsys.readouterr().err
    assert main(["evaluate", str(copy), "--no-verify"]) == 0
    assert main(["distill", "--teacher", str(copy), *TINY, "--out", str(tmp_path / "s.pt")]) == 2
    assert "--no-verify" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["train", "--threads", "100000", "--out", "x.pt"], "more threads than this machine's"),
])
def test_impossible_resources_are_refused_by_the_parser(argv, match, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert match in capsys.readouterr().err


def test_a_dataset_too_big_for_memory_is_refused_before_making_it(tmp_path, capsys):
    assert main(["train", "--n-train", "1000000", "--size", "512", "--out", str(tmp_path / "x.pt")]) == 2
    assert "GB in memory" in capsys.readouterr().err


def test_a_kill_between_the_checkpoint_and_its_manifest_is_finished_or_undone_on_the_next_read(teacher, tmp_path):
    """commit_checkpoint's two replaces: killed between them, the reader rolls forward; before them, it keeps
    the old pair."""
    import os
    import shutil

    from mobileunet.manifest import commit_checkpoint, pending_path

    target = tmp_path / "keep.pt"
    shutil.copy(teacher, target)
    shutil.copy(teacher.with_suffix(".json"), target.with_suffix(".json"))
    old = read_manifest(target)
    new_file = tmp_path / ".keep.pt.new"
    torch.save(torch.load(target, weights_only=True) | {"meta": {"note": "new"}}, new_file)
    new = {**old, "checkpoint": {**old["checkpoint"], "sha256": sha256(new_file)}, "note": "new"}

    # killed after the pending manifest, before the checkpoint moved: the old pair stands
    pending_path(target).write_text(json.dumps(new))
    assert read_manifest(target)["checkpoint"]["sha256"] == old["checkpoint"]["sha256"] == sha256(target)
    assert not pending_path(target).exists()

    # killed between the two replaces: the new checkpoint with the old manifest and the pending one
    pending_path(target).write_text(json.dumps(new))
    os.replace(new_file, target)
    assert read_manifest(target)["note"] == "new" and read_manifest(target)["checkpoint"]["sha256"] == sha256(target)
    assert not pending_path(target).exists()

    # and the whole commit in one go
    torch.save(torch.load(target, weights_only=True) | {"meta": {"note": "third"}}, new_file)
    third = {**old, "checkpoint": {**old["checkpoint"], "sha256": sha256(new_file)}}
    commit_checkpoint(target, new_file, third)
    assert read_manifest(target) == third and sha256(target) == third["checkpoint"]["sha256"]


def test_out_refuses_to_replace_a_json_that_is_not_its_manifest(tmp_path, capsys):
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "m.json").mkdir()
    for name, says in (("notes.pt", "notes.json exists"), ("m.pt", "is a folder or a device")):
        assert main(["train", "--steps", "1", "--out", str(tmp_path / name)]) == 2
        assert says in capsys.readouterr().err
    assert (tmp_path / "notes.json").read_text() == "{}"


def test_train_resumes_an_interrupted_run_to_the_same_weights(tmp_path, monkeypatch, capsys):
    """Killed after step 3 of 4 (state saved at step 2), --resume gives the checkpoint an uninterrupted run gives."""
    import sys

    fit_module = sys.modules["mobileunet.train"]
    argv = ["train", "--model", "default_student", "--steps", "4", "--n-train", "8", "--n-val", "4", "--size", "32",
            "--batch-size", "4", "--crop", "0", "--eval-every", "2", "--save-every", "2", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "whole.pt")]) == 0
    real_step, calls = fit_module._step, []

    def dies_at_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*a, **k)

    monkeypatch.setattr(fit_module, "_step", dies_at_step_3)
    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(out)])
    state = out.with_suffix(".state.pt")
    assert torch.load(state, weights_only=True)["step"] == 2 and not out.exists()
    monkeypatch.setattr(fit_module, "_step", real_step)
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out and not state.exists()
    a = load_checkpoint(tmp_path / "whole.pt")[0].state_dict()
    b = load_checkpoint(out)[0].state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert read_manifest(out)["training"]["resumed"] and not read_manifest(tmp_path / "whole.pt")["training"]["resumed"]
    assert main([*argv[:-2], "--save-every", "0", "--threads", "1", "--out", str(out), "--resume"]) == 2


def test_an_out_name_too_long_for_the_file_system_is_refused_before_work(tmp_path, capsys):
    assert main(["train", "--steps", "1", "--out", str(tmp_path / ("M" * 252 + ".pt"))]) == 2
    assert "too long" in capsys.readouterr().err


def test_export_refuses_to_replace_a_file_or_its_checkpoint_unless_forced(teacher, tmp_path, capsys):
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep")
    assert main(["export", str(teacher), "--format", "onnx", "--out", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"keep"
    assert main(["export", str(teacher), "--format", "onnx", "--out", str(teacher), "--force"]) == 2
    assert "one of this run's inputs" in capsys.readouterr().err
