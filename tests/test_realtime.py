"""The real-time pipeline: frame sources, regions, compositing, timings, flicker, animation."""
import numpy as np
import pytest
import torch
from torch import nn

from mobileunet.realtime import (BUDGET_MS, STAGES, FaceDetector, MaskOverlay, MovingCells, Pipeline,
                                 Region, VirtualCamera, Webcam, animation_gif, centre_box, composite,
                                 feather_mask, flicker, plot_time_budget, run_pipelines, stability_table,
                                 stage_table)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.fixture(scope="module")
def cam():
    return VirtualCamera("astronaut", size=64, n_frames=6, centre=(0.35, 0.45))


@pytest.fixture(scope="module")
def cells():
    return MovingCells(size=48, n_frames=5, drift=4)


# --- frame sources -----------------------------------------------------------------------------

def test_virtual_camera_is_deterministic_and_shaped(cam):
    frames = list(cam)
    assert len(frames) == len(cam) == 6
    assert all(f.shape == (64, 64, 3) and f.dtype == np.float32 for f in frames)
    assert all(0 <= f.min() and f.max() <= 1 for f in frames)
    again = VirtualCamera("astronaut", size=64, n_frames=6, centre=(0.35, 0.45))
    assert np.array_equal(again[3], frames[3])                  # same seed, same pixels, any order
    other = VirtualCamera("astronaut", size=64, n_frames=6, centre=(0.35, 0.45), seed=1)
    assert not np.array_equal(other[3], frames[3])
    assert np.abs(frames[1] - frames[0]).mean() > 0              # the camera moves
    with pytest.raises(IndexError):
        cam[6]


def test_virtual_camera_takes_an_array_and_rectangular_sizes():
    photo = np.random.default_rng(0).random((90, 120, 3)).astype(np.float32)
    assert VirtualCamera(photo, size=(32, 48), n_frames=2)[1].shape == (32, 48, 3)


def test_moving_cells_are_deterministic_with_masks(cells):
    f = cells[2]
    assert f.shape == (48, 48, 1) and f.dtype == np.float32
    assert np.array_equal(MovingCells(size=48, n_frames=5, drift=4)[2], f)
    m = cells.mask(2)
    assert m.shape == (48, 48) and set(np.unique(m)) <= {0.0, 1.0} and 0 < m.mean() < 1
    assert not np.array_equal(cells.mask(0), cells.mask(2))      # the slide drifts


@pytest.mark.parametrize("kwargs", [dict(n_frames=1), dict(zoom=(0.5, 1.0)), dict(size=8), dict(pan=0.6)])
def test_virtual_camera_rejects_bad_arguments(kwargs):
    photo = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(ValueError):
        VirtualCamera(photo, **{"size": 32, **kwargs})


def test_frame_sources_reject_bad_photos():
    with pytest.raises(TypeError, match="img_as_float32"):
        VirtualCamera(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        VirtualCamera(np.zeros((64, 64, 4), np.float32))
    with pytest.raises(ValueError, match="unknown photo"):
        VirtualCamera("no such photo")


def test_webcam_is_optional():
    assert Webcam.available(index=99) is False                  # never raises, whatever is installed


# --- regions -----------------------------------------------------------------------------------

def test_face_detector_finds_the_astronaut():
    frame = VirtualCamera("astronaut", size=96, n_frames=6, centre=(0.35, 0.45))[2]
    region = FaceDetector(min_size=24)(frame)
    assert region.source == "face"
    assert 0 <= region.top and region.top + region.height <= 96 and region.left + region.width <= 96
    assert 24 <= region.height <= 96


def test_face_detector_falls_back_to_a_centre_box():
    flat = np.full((60, 80, 3), 0.5, np.float32)
    region = FaceDetector(fallback=0.5)(flat)
    assert region == Region(15, 20, 30, 40, "centre") == centre_box(flat.shape, 0.5)


def test_centre_box_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        centre_box((10, 10), 1.5)


# --- compositing -------------------------------------------------------------------------------

def test_feather_mask_ramps_from_border_to_one():
    m = feather_mask(20, 30, 0.25)
    assert m.shape == (20, 30) and m.dtype == np.float32
    assert m[10, 15] == 1 and m[0, 0] < 0.05 and 0 <= m.min() and m.max() <= 1
    assert np.allclose(m, m[::-1, ::-1])                         # symmetric
    assert (feather_mask(5, 7, 0) == 1).all()
    with pytest.raises(ValueError, match="feather"):
        feather_mask(5, 5, 0.7)


def test_composite_mask_zero_keeps_original_and_one_takes_edit():
    rng = np.random.default_rng(0)
    frame = rng.random((20, 24, 3)).astype(np.float32)
    region = Region(4, 6, 10, 12)
    edited = rng.random((10, 12, 3)).astype(np.float32)
    before = frame.copy()
    assert np.array_equal(composite(frame, edited, region, 0.0), frame)
    out = composite(frame, edited, region, np.ones((10, 12), np.float32))
    assert np.array_equal(out[region.slices], edited)
    outside = np.ones((20, 24), bool)
    outside[region.slices] = False
    assert np.array_equal(out[outside], frame[outside])
    half = composite(frame, edited, region, 0.5)
    assert np.allclose(half[region.slices], (frame[region.slices] + edited) / 2)
    assert np.array_equal(frame, before)                        # the input frame is left alone


def test_composite_makes_grey_frames_rgb_for_a_colour_edit():
    out = composite(np.zeros((8, 8, 1), np.float32), np.ones((8, 8, 3), np.float32), Region(0, 0, 8, 8), 1.0)
    assert out.shape == (8, 8, 3) and (out == 1).all()


@pytest.mark.parametrize("edited, mask, region, match", [
    (np.ones((5, 5, 3)), 1.0, Region(0, 0, 4, 4), "edited has shape"),
    (np.ones((4, 4, 3)), np.ones((3, 3)), Region(0, 0, 4, 4), "mask has shape"),
    (np.ones((4, 4, 3)), 2.0, Region(0, 0, 4, 4), r"\[0, 1\]"),
    (np.ones((4, 4, 3)), 1.0, Region(6, 6, 4, 4), "does not fit"),
])
def test_composite_rejects_bad_input(edited, mask, region, match):
    with pytest.raises(ValueError, match=match):
        composite(np.zeros((8, 8, 3), np.float32), edited, region, mask)


# --- the pipeline ------------------------------------------------------------------------------

def test_pipeline_records_every_stage_of_every_frame(cam):
    run = Pipeline(identity, FaceDetector(), size=32).run(cam, n_frames=4, warmup=1)
    assert len(run.timings) == len(run.outputs) == len(run.inputs) == len(run.regions) == 4
    for row in run.timings.rows:
        assert all(row[f"{s}_ms"] >= 0 for s in STAGES)
        assert row["total_ms"] == pytest.approx(sum(row[f"{s}_ms"] for s in STAGES))
    assert sum(run.stage_ms().values()) == pytest.approx(run.total_ms)     # means add up
    assert set(run.stage_ms(np.median)) == set(STAGES)
    summary = run.summary("identity")
    assert run.fps == pytest.approx(1000 / summary["total ms"])
    assert min(run.timings.column("total_ms")) <= summary["p95 ms"] <= max(run.timings.column("total_ms"))
    late = run.tail()["miss rate"]
    assert summary["30 fps"] == ("yes" if late <= 0.01 else f"no ({late:.0%} late)")
    assert "identity" in str(stage_table({"identity": run}))


def test_identity_model_returns_the_input_frames(cam):
    run = Pipeline(identity, size=None).run(cam, n_frames=3, warmup=0)
    for x, y in zip(run.inputs, run.outputs):
        assert np.allclose(x, y, atol=1e-6)


def test_pipeline_with_a_module_and_mask_overlay_on_cells(cells):
    model = nn.Conv2d(1, 1, 3, padding=1)
    run = Pipeline(model, size=None, apply=MaskOverlay(), feather=0).run(cells, warmup=0)
    assert len(run.outputs) == 5 and run.outputs[0].shape == (48, 48, 3)
    assert {r.source for r in run.regions} == {"frame"}


def test_detect_every_reuses_the_region(cam):
    calls = []

    def detector(frame):
        calls.append(1)
        return centre_box(frame.shape, 0.5)

    Pipeline(identity, detector, size=32, detect_every=3).run(cam, n_frames=6, warmup=0)
    assert len(calls) == 2


def test_run_pipelines_interleaves_on_the_same_frames(cam):
    runs = run_pipelines({"a": Pipeline(identity, size=32), "b": Pipeline(lambda x: 1 - x, size=32)},
                         cam, n_frames=3, warmup=0)
    assert [len(r.timings) for r in runs.values()] == [3, 3]
    assert all(np.array_equal(a, b) for a, b in zip(runs["a"].inputs, runs["b"].inputs))
    assert runs["a"].timings.column("capture_ms") == runs["b"].timings.column("capture_ms")


def test_pipeline_rejects_bad_models_and_frames(cam):
    with pytest.raises(TypeError, match="callable"):
        Pipeline("not a model")
    with pytest.raises(ValueError, match="detect_every"):
        Pipeline(identity, detect_every=0)
    with pytest.raises(ValueError, match=r"expected \(1, C, H, W\)"):
        Pipeline(lambda x: x[0], size=32).step(cam[0])
    with pytest.raises(ValueError, match="channels"):
        Pipeline(lambda x: x[:, :1], size=32).step(cam[0])
    with pytest.raises(TypeError, match="img_as_float32"):
        Pipeline(identity).step(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        Pipeline(identity).run([])


def test_plot_time_budget_draws_a_bar_per_run(cam):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = run_pipelines({"a": Pipeline(identity, size=32), "b": Pipeline(identity, size=48)}, cam,
                         n_frames=2, warmup=0)
    fig = plot_time_budget(runs)
    assert len(fig.axes[0].patches) == 2 * len(STAGES)
    plt.close(fig)


# --- temporal stability ------------------------------------------------------------------------

def test_flicker_on_hand_cases(cam):
    frames = [cam[t] for t in range(4)]
    assert flicker([frames[0]] * 4, frames) == 0                 # a constant output never flickers
    assert flicker(frames, frames) == pytest.approx(1)           # identity passes the change through
    doubled = [2 * f for f in frames]
    assert flicker(doubled, frames) == pytest.approx(2)
    run = Pipeline(identity, size=None).run(cam, n_frames=4, warmup=0)
    table = stability_table({"identity": run})
    assert table.rows[0]["flicker"] == pytest.approx(1, abs=1e-4)


def test_flicker_rejects_bad_input(cam):
    f = cam[0]
    with pytest.raises(ValueError, match="never change"):
        flicker([f, f], [f, f])
    with pytest.raises(ValueError, match="same frames"):
        flicker([f], [f, f])
    with pytest.raises(ValueError, match="at least 2"):
        flicker([f], [f])


# --- animation ---------------------------------------------------------------------------------

def test_animation_gif_is_small_and_valid(cam):
    import io

    from PIL import Image

    frames = list(cam)
    data = animation_gif({"in": frames, "out": [1 - f for f in frames]}, height=64)
    assert data[:6] in (b"GIF87a", b"GIF89a") and len(data) < 300_000
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == len(frames) and gif.size == (2 * 64 + 2, 64)
    with pytest.raises(ValueError, match="same"):
        animation_gif({"a": frames, "b": frames[:2]})


# --- deadlines, tracking, structure flicker ------------------------------------------------------

def _run_with_times(totals):
    from mobileunet.profile import Table
    from mobileunet.realtime import PipelineRun

    rows = [{"frame": i, **{f"{s}_ms": 0.0 for s in STAGES}, "model_ms": t, "total_ms": t}
            for i, t in enumerate(totals)]
    return PipelineRun(timings=Table(rows))


def test_tail_counts_deadline_misses_that_the_mean_hides():
    from mobileunet.realtime import deadline_table

    run = _run_with_times([10.0] * 95 + [40.0] * 5)             # the mean (11.5 ms) fits, 5 frames do not
    tail = run.tail(BUDGET_MS)
    assert tail["misses"] == 5 and tail["miss rate"] == pytest.approx(0.05)
    assert tail["median ms"] == 10 and tail["worst ms"] == 40 and tail["p99 ms"] == pytest.approx(40)
    assert run.total_ms < BUDGET_MS
    row = deadline_table({"x": run}).rows[0]
    assert list(row) == ["pipeline", "frames", "median ms", "p95 ms", "p99 ms", "worst ms", "missed at 30 fps",
                         "missed at 60 fps"]
    assert row["missed at 30 fps"] == pytest.approx(0.05) and row["missed at 60 fps"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="budget_ms"):
        run.tail(0)


def test_timeline_marks_the_missed_frames():
    from mobileunet.realtime import plot_timeline

    fig = plot_timeline(_run_with_times([10.0, 50.0, 10.0, 60.0]))
    assert "missed (2)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_downscaled_detection_finds_the_face_in_frame_pixels(cam):
    big = VirtualCamera("astronaut", size=192, n_frames=2, centre=(0.35, 0.45))
    full, small = FaceDetector()(big[0]), FaceDetector(downscale=2, min_size=48, scale_factor=1.4)(big[0])
    assert full.source == small.source == "face"
    centre = lambda r: (r.top + r.height / 2, r.left + r.width / 2)  # noqa: E731
    assert np.hypot(*np.subtract(centre(full), centre(small))) < 0.25 * full.height
    with pytest.raises(ValueError, match="24-pixel window"):
        FaceDetector(downscale=4, min_size=32)


def test_smoothed_boxes_move_part_of_the_way():
    from mobileunet.realtime import _blend_boxes

    a, b = Region(0, 0, 10, 10, "face"), Region(10, 10, 10, 10, "face")
    assert _blend_boxes(a, b, 0.5, (64, 64)) == Region(5, 5, 10, 10, "face")
    assert _blend_boxes(None, b, 0.5, (64, 64)) == b and _blend_boxes(a, b, 0.0, (64, 64)) == b
    with pytest.raises(ValueError, match="smooth"):
        Pipeline(identity, smooth=1.0)


def test_structure_flicker_ignores_the_scenes_light():
    from mobileunet.realtime import structure_flicker

    rng = np.random.default_rng(0)
    scene = rng.random((16, 16, 3)).astype(np.float32)
    frames = [np.clip(scene * (1 + 0.05 * t), 0, 1) for t in range(4)]      # only the light changes
    flat = [np.full_like(f, f.mean()) for f in frames]                       # an output that follows the light
    assert flicker(flat, frames) > 0.1                                       # plain flicker sees the light
    assert structure_flicker(flat, frames) < 1e-3                            # the structure never moves
    assert structure_flicker(frames, frames) == pytest.approx(1)
