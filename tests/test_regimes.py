"""Lesson 05's regimes: label noise, cached teacher logits, runs on worker processes, the gap closed."""
import numpy as np
import pytest
import torch

from mobileunet import cells_splits, weighted_bce_loss
from mobileunet.cli import main, read_manifest
from mobileunet.data import CellsDataset, NoisyLabels, corrupt_labels
from mobileunet.distill import DistillConfig, WithTeacherLogits, distill, teacher_logits
from mobileunet.metrics import gap_closed
from mobileunet.models import UNet
from mobileunet.regimes import REGIMES, Job, Regime, run_jobs, shared_data, summarise


@pytest.fixture(scope="module")
def cells():
    return CellsDataset("train", n=6, size=48)


def test_corrupt_labels_without_noise_changes_nothing(cells):
    lab = cells.labels[0, 0].numpy()
    assert np.array_equal(corrupt_labels(lab, np.random.default_rng(0), miss=0.0, dilate=0), lab)


def test_corrupt_labels_misses_grows_and_shrinks(cells):
    lab = cells.labels[0, 0].numpy()
    n_cells = len(np.unique(lab)) - 1
    assert (corrupt_labels(lab, np.random.default_rng(0), miss=1.0, dilate=0) == 0).all()
    missed = corrupt_labels(lab, np.random.default_rng(0), miss=0.5, dilate=0)
    assert 0 < len(np.unique(missed)) - 1 < n_cells
    assert set(np.unique(missed)) <= set(np.unique(lab))          # kept cells keep their ids
    grown = corrupt_labels(lab, np.random.default_rng(0), miss=0.0, dilate=3)
    shrunk = corrupt_labels(lab, np.random.default_rng(0), miss=0.0, dilate=0, erode=3)
    assert (grown > 0).sum() > (lab > 0).sum() > (shrunk > 0).sum()
    assert ((lab > 0) <= (grown > 0)).all()                        # growing never loses a cell pixel


def test_noisy_labels_are_seeded_and_leave_the_images_alone(cells):
    a, b = NoisyLabels(cells, 0.3, 2, seed=1), NoisyLabels(cells, 0.3, 2, seed=1)
    c = NoisyLabels(cells, 0.3, 2, seed=2)
    assert torch.equal(a.masks, b.masks) and not torch.equal(a.masks, c.masks)
    assert torch.equal(a.images, cells.images) and torch.equal(a.true_masks, cells.masks)
    assert not torch.equal(a.masks, cells.masks)
    assert a.weights.shape == cells.weights.shape and a.noise == {"miss": 0.3, "dilate": 2, "erode": 0, "seed": 1}


@pytest.mark.parametrize("kwargs,match", [
    ({"miss": 1.5}, "miss=1.5"), ({"miss": float("nan")}, "miss=nan"), ({"miss": -0.1}, "miss=-0.1"),
    ({"dilate": 99}, "dilate=99"), ({"erode": -1}, "erode=-1"), ({"dilate": 1.5}, "dilate=1.5"),
])
def test_bad_label_noise_is_a_clear_error(cells, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoisyLabels(cells, **{"miss": 0.3, "dilate": 2, **kwargs})
    with pytest.raises(ValueError, match=match.split("=")[0]):
        Regime("bad", **{k: v for k, v in kwargs.items()})


def test_gap_closed():
    assert gap_closed(0.95, 0.90, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.90, 0.90, 1.0) == 0.0 and gap_closed(0.85, 0.90, 1.0) < 0
    with pytest.raises(ValueError, match="no gap to close"):
        gap_closed(0.95, 0.97, 0.96)
    with pytest.raises(ValueError, match="not a number"):
        gap_closed(float("nan"), 0.9, 1.0)


def test_cached_whole_image_logits_give_the_same_losses_as_a_teacher_pass_per_step():
    """Without crops or flips the teacher sees the same image either way, so the two must agree."""
    train, _ = cells_splits(8, 2, size=32)
    teacher = UNet(base=8, depth=2).eval()
    losses = []
    for cached in (False, True):
        torch.manual_seed(0)
        student = UNet(base=4, depth=2)
        cfg = DistillConfig(steps=3, batch_size=4, crop=None, augment=None, loss=weighted_bce_loss,
                            soft_weight=0.5, temperature=2.0, eval_every=3)
        data = WithTeacherLogits(train, teacher_logits(teacher, train.images)) if cached else train
        hist = distill(student, teacher, data, None, cfg)
        losses.append(hist["loss_soft"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_whole_image_logits_refuse_hints():
    with pytest.raises(ValueError, match="soft targets only"):
        DistillConfig(soft_weight=0.5, teacher_on_whole_images=True, hints=(("a", "b"),), hint_weight=1.0)


def test_regime_runs_agree_in_one_process_and_in_two_workers():
    train, val = cells_splits(8, 3, size=32)
    shared = shared_data(UNet(base=8, depth=2), train, val)
    jobs = [Job(regime, distilled, steps=2, batch_size=4, crop=24) for regime in REGIMES
            for distilled in (False, True)]
    here = run_jobs(jobs, shared, workers=1, report=None)
    pool = run_jobs(jobs, shared, workers=2, report=None)
    assert [(r["regime"], r["recipe"]) for r in pool] == [(j.regime.name, j.recipe) for j in jobs]
    for a, b in zip(here, pool):
        assert a["iou"] == pytest.approx(b["iou"], abs=1e-6)
        assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-4)
    few = [r for r in here if r["regime"] == "few labels"]
    assert few[0]["final_loss"] != few[1]["final_loss"]            # the distilled run saw the pool


def test_summarise_pairs_distilled_with_scratch_by_seed():
    rows = [{"regime": "r", "recipe": rec, "seed": s, "steps": 10, "iou": iou, "instance_f1": f1}
            for rec, s, iou, f1 in (("scratch", 0, 0.80, 0.5), ("scratch", 1, 0.82, 0.6),
                                    ("distilled", 0, 0.90, 0.7), ("distilled", 1, 0.91, 0.8))]
    scratch, dist = summarise(rows, teacher_iou=1.0)
    assert scratch["IoU"] == pytest.approx(0.81) and "gap closed" not in scratch
    assert dist["gap closed min"] == pytest.approx(0.5) and dist["gap closed max"] == pytest.approx(0.5)
    assert dist["F1 change"] == pytest.approx(0.2) and dist["separated"]
    assert dist["F1 min"] == pytest.approx(0.7) and dist["F1 max"] == pytest.approx(0.8)
    assert dist["F1 separated"] and "F1 gap closed" not in dist
    _, dist = summarise(rows, teacher_iou=1.0, teacher_f1=1.0)
    assert dist["F1 gap closed min"] == pytest.approx(0.4) and dist["F1 gap closed max"] == pytest.approx(0.5)
    rows[2]["instance_f1"] = 0.55                                      # a distilled seed below a scratch seed
    assert not summarise(rows, teacher_iou=1.0)[1]["F1 separated"]


TINY = ["--n-train", "8", "--n-val", "3", "--size", "32", "--crop", "24", "--steps", "2",
        "--batch-size", "4", "--eval-every", "2", "--device", "cpu"]


def test_cli_trains_on_noisy_labels_and_reports_the_gap_closed(tmp_path, capsys):
    teacher, scratch, student = (tmp_path / f"{n}.pt" for n in ("teacher", "scratch", "student"))
    assert main(["train", "--model", "unet_teacher", *TINY, "--out", str(teacher)]) == 0
    assert main(["train", "--model", "default_student", *TINY, "--label-miss", "0.3", "--label-dilate", "2",
                 "--out", str(scratch)]) == 0
    assert read_manifest(scratch)["data"]["train"]["label_noise"] == {"miss": 0.3, "dilate": 2, "erode": 0,
                                                                      "seed": 0}
    assert main(["distill", "--teacher", str(teacher), *TINY, "--label-miss", "0.3", "--label-dilate", "2",
                 "--soft-weight", "0.9", "--teacher-whole-images", "--scratch", str(scratch),
                 "--out", str(student)]) == 0
    out = capsys.readouterr().out
    m = read_manifest(student)
    assert m["gap_closed"]["file"] == str(scratch) and m["training"]["teacher_on_whole_images"]
    assert ("closes" in out) == (m["gap_closed"]["share"] is not None)


@pytest.mark.parametrize("argv,match", [
    (["train", "--label-miss", "1.5", "--out", "x.pt"], "1.5 must be between 0 and 1"),
    (["train", "--label-miss", "nan", "--out", "x.pt"], "'nan' is not a finite number"),
    (["train", "--label-dilate", "99", "--out", "x.pt"], "99 must be a whole number of pixels from 0 to 8"),
    (["distill", "--label-erode", "-1", "--out", "x.pt"], "from 0 to 8"),
])
def test_bad_label_noise_flags_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_distill_scratch_without_a_manifest_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "lone.pt").write_bytes(b"")
    assert main(["distill", *TINY, "--scratch", str(tmp_path / "lone.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_prediction_report_and_the_map_figure():
    from mobileunet.plotting import plot_regime_map
    from mobileunet.regimes import prediction_report

    rows = [{"regime": g, "recipe": rec, "seed": s, "steps": 10, "iou": iou + 0.001 * s, "instance_f1": 0.5}
            for g, base, gain in (("clean labels", 0.9, 0.01), ("noisy labels", 0.8, 0.15))
            for rec, iou in (("scratch", base), ("distilled", base + gain)) for s in (0, 1)]
    summary = summarise(rows, teacher_iou=1.0)
    assert "right" in prediction_report("noisy labels", summary)
    assert "not what the map says" in prediction_report("clean labels", summary)
    assert "no prediction" in prediction_report(None, summary)
    fig = plot_regime_map(rows, summary, {"iou": 1.0, "instance_f1": 0.9})
    assert len(fig.axes) == 2 and fig.axes[1].get_ylim()[1] >= 0.93


def test_a_kept_student_comes_back_from_its_row():
    from mobileunet.regimes import student_of

    train, val = cells_splits(8, 2, size=32)
    shared = shared_data(UNet(base=8, depth=2), train, val)
    row = run_jobs([Job(REGIMES[0], False, steps=1, batch_size=4, crop=24, keep=True)], shared, workers=1,
                   report=None)[0]
    assert student_of(row)(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="keep=True"):
        student_of({k: v for k, v in row.items() if k != "state_dict"})
