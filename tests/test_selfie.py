"""MediaPipe's selfie segmenter rebuilt in PyTorch: the graph reader, TensorFlow's SAME padding, the
architecture's shapes and checkpoints, clear errors for wrong files, and parity with LiteRT on photos.

Tests that need ``data/models/selfie_segmentation.tflite`` (not committed; ``bash course.sh models``
fetches it) skip with that command, as in ``test_mediapipe.py``."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobileunet import mediapipe as mp
from mobileunet import models
from mobileunet.checkpoint import load_checkpoint, save_checkpoint
from mobileunet.profile import count_flops, count_params
from mobileunet.tflite_graph import Op, TfliteGraph, read_tflite
from mobileunet.selfie import (SELFIE_BLOCKS, LeanSelfieSegmenter, SameConv2d, SelfieEncoder, ShuffleUp,
                               SkipGateBlock, lean_selfie_student, load_tflite_weights, mediapipe_selfie,
                               selfie_segmenter, selfie_student)

NEED_SELFIE = pytest.mark.skipif(not mp.available("selfie_segmentation"),
                                 reason=f"selfie_segmentation.tflite not fetched: run {mp.FETCH}")
NEED_FACE = pytest.mark.skipif(not mp.available("face_detection_short_range"),
                               reason=f"face_detection_short_range.tflite not fetched: run {mp.FETCH}")


def tflite_installed() -> bool:
    try:
        import tflite  # noqa: F401
        return True
    except ImportError:
        return False


NEED_TFLITE = pytest.mark.skipif(not tflite_installed(), reason="the tflite parser is missing: "
                                 "pip install -e \".[mediapipe]\"")


@pytest.mark.parametrize("side,kernel", [(256, 3), (32, 5), (75, 3), (9, 5)])
def test_same_conv_pads_as_tensorflow(side, kernel):
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, 2, 0)
    x = torch.randn(1, 2, side, side)
    out = -(-side // 2)
    total = max((out - 1) * 2 + kernel - side, 0)                 # TensorFlow: the odd pixel at the end
    want = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), want)
    assert conv(x).shape[-1] == out


def test_the_architecture_has_mediapipes_shapes_and_flops():
    m = selfie_segmenter().eval()
    assert [tuple(f.shape[1:]) for f in m.encoder(torch.zeros(1, 3, 256, 256))] == [
        (16, 128, 128), (16, 64, 64), (24, 32, 32), (32, 16, 16)]
    assert count_flops(m, torch.zeros(1, 3, 256, 256)) == 118_431_488      # the graph's count, op by op
    assert models.builders("segmentation")["selfie_segmenter"] is selfie_segmenter


@pytest.mark.parametrize("build", [selfie_segmenter, selfie_student, lean_selfie_student])
def test_any_size_trains_and_round_trips(build, tmp_path):
    m = build(in_channels=1, out_channels=1)
    m(torch.randn(2, 1, 64, 64)).mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    for h, w in [(75, 90), (33, 97), (64, 64)]:
        assert m(torch.zeros(1, 1, h, w)).shape == (1, 1, h, w)
    with pytest.raises(ValueError, match="channel"):
        m(torch.zeros(1, 3, 64, 64))
    x = torch.randn(1, 1, 64, 64)
    again, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", m, {}))
    assert type(again) is type(m) and again.config == m.config
    torch.testing.assert_close(again(x), m(x))


def test_the_lean_student_is_selfie_students_layers_written_for_the_runtimes():
    lean, plain = lean_selfie_student().eval(), selfie_student().eval()
    assert isinstance(lean, LeanSelfieSegmenter) and models.builders("segmentation")["lean_selfie_student"] \
        is lean_selfie_student
    assert not any(isinstance(m, (SameConv2d, torch.nn.ConvTranspose2d)) for m in lean.modules())
    assert isinstance(lean.encoder.stem[2], torch.nn.ReLU) and isinstance(lean.out, ShuffleUp)
    x = torch.zeros(1, 3, 256, 256)
    assert [f.shape for f in lean.encoder(x)] == [f.shape for f in plain.encoder(x)]
    # the only weights that go: MediaPipe's 1x1 16 -> 16 expand conv and its norm before the first block
    assert count_params(plain) - count_params(lean) == 16 * 16 + 2 * 16 - 3
    assert lean(x).shape == (1, 1, 256, 256) and lean.config == plain.config


def test_shuffle_up_is_the_transposed_conv():
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(16, 3, 2, stride=2)
    up = ShuffleUp(16, 3).from_transposed(conv)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(up(x), conv(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(16, 3, 2, stride=2\)"):
        up.from_transposed(torch.nn.ConvTranspose2d(16, 3, 3, stride=2))
    with pytest.raises(ValueError, match="out_ch"):
        ShuffleUp(16, 0)


def test_bad_layer_choices_give_clear_errors():
    with pytest.raises(TypeError, match=r"strided_conv=.*SameConv2d .* or nn.Conv2d"):
        SelfieEncoder(strided_conv=torch.nn.Linear)
    with pytest.raises(TypeError, match=r"stem_act='relu': give an activation class"):
        SelfieEncoder(stem_act="relu")
    with pytest.raises(TypeError, match="expand_same_width"):
        SelfieEncoder(expand_same_width=0)


def test_projecting_before_the_resize_is_the_same_function():
    torch.manual_seed(0)
    late, early = SkipGateBlock(32, 16).eval(), SkipGateBlock(32, 16, project_first=True).eval()
    early.load_state_dict(late.state_dict())
    x, skip = torch.randn(1, 32, 8, 8), torch.randn(1, 16, 16, 16)
    torch.testing.assert_close(early(x, skip), late(x, skip), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="project_first"):
        SkipGateBlock(32, 16, project_first="yes")


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="path"):
        load_tflite_weights(selfie_segmenter(), 42)
    with pytest.raises(FileNotFoundError, match="missing"):
        mediapipe_selfie(tmp_path / "none.tflite")
    not_tflite = tmp_path / "weights.tflite"
    torch.save({"w": torch.zeros(2)}, not_tflite)
    with pytest.raises(ValueError, match="not a TFLite model"):
        mediapipe_selfie(not_tflite)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a TFLite model"):
        read_tflite(empty)
    with pytest.raises(TypeError, match="path"):
        read_tflite(b"TFL3")


def test_a_corrupt_file_names_itself_and_the_fetch(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\xff\xff\xff\x7fTFL3" + bytes(64))          # the root table points past the end
    with pytest.raises(ValueError, match=r"corrupt\.tflite is truncated or corrupt.*course\.sh models"):
        read_tflite(corrupt)


def test_bad_inputs_and_tables_give_clear_errors():
    m = selfie_segmenter().eval()
    with pytest.raises(TypeError, match=r"float tensor, RGB in \[0, 1\], got torch.uint8: use x.float\(\) / 255"):
        m(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"row 2 of the encoder table .*7 values, \(kernel, hidden, out_ch, SE, act"):
        SelfieEncoder(blocks=[SELFIE_BLOCKS[0], SELFIE_BLOCKS[1][:6]])
    with pytest.raises(ValueError, match=r"row 1 of the encoder table has act='RELU': use one of \['HS', 'RE'\]"):
        SelfieEncoder(blocks=[(3, 16, 16, True, "RELU", 2, 4)])
    with pytest.raises(ValueError, match="row 1's hidden"):
        SelfieEncoder(blocks=[(3, "16", 16, True, "RE", 2, 4)])
    with pytest.raises(TypeError, match="nn.Module"):
        load_tflite_weights("x", m)


def test_an_integer_weight_is_refused_not_cast(tmp_path):
    conv = Op(0, "CONV_2D", (0, 1, 2), (3,), (1, 8, 8, 2), (1, 8, 8, 4), kernel=(1, 1))
    tensors = [{"name": n, "shape": (), "dtype": "?"} for n in ("x", "w", "b", "y")]
    graph = TfliteGraph(tmp_path / "int8.tflite", "", [conv], tensors,
                        {1: np.ones((4, 1, 1, 2), np.int8), 2: np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match=r"tensor 1 \(w\) of int8.tflite is int8.*integer-quantised"):
        graph.conv_weights()


def photo_input(name: str) -> torch.Tensor:
    """A bundled photo resized to the selfie model's 256x256, as (1, 3, 256, 256) RGB in [0, 1]."""
    from skimage.transform import resize

    from mobileunet.photos import load_photo

    image = resize(load_photo(name), (256, 256), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(image).permute(2, 0, 1)[None]


@NEED_TFLITE
@NEED_SELFIE
def test_the_graph_reader_sees_the_production_model():
    from mobileunet.tflite_graph import by_resolution, op_counts, read_tflite

    g = read_tflite(mp.model_path("selfie_segmentation"))
    counts = {r["op"]: r["count"] for r in op_counts(g)}
    assert counts["CONV_2D"] == 43 and counts["DEPTHWISE_CONV_2D"] == 11 and counts["HARD_SWISH"] == 11
    assert counts["Convolution2DTransposeBias"] == 1 and counts["RESIZE_BILINEAR"] == 3
    assert g.flops() == 118_431_488 and g.param_count() == 106_401
    strided = [op for op in g.compute_ops if op.stride == (2, 2) and op.kind != "Convolution2DTransposeBias"]
    assert [(op.kernel, op.padding) for op in strided] == [((3, 3), "SAME")] * 3 + [((5, 5), "SAME")]
    assert all(op.half_pixel for op in g.ops if op.kind == "RESIZE_BILINEAR")
    assert not any(op.fused for op in g.compute_ops)             # every activation is its own op
    assert [r["map side"] for r in by_resolution(g)] == [256, 128, 64, 32, 16, 1]


@NEED_TFLITE
@NEED_FACE
def test_another_models_file_is_refused():
    with pytest.raises(ValueError, match="not this architecture"):
        mediapipe_selfie(mp.model_path("face_detection_short_range"))


@NEED_TFLITE
@NEED_SELFIE
@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_the_rebuild_matches_litert_on_photos(photo):
    pytest.importorskip("ai_edge_litert", reason='LiteRT is in the `mediapipe` extra: pip install -e ".[mediapipe]"')
    x = photo_input(photo)                                       # (1, 3, 256, 256) RGB in [0, 1]
    want = mp.TfliteRunner(mp.model_path("selfie_segmentation"))(x.permute(0, 2, 3, 1).contiguous().numpy())
    with torch.no_grad():
        got = torch.sigmoid(mediapipe_selfie(mp.model_path("selfie_segmentation"))(x)).numpy()
    assert np.abs(got[0, 0] - want[0, ..., 0]).max() < 1e-3
    assert 0.2 < (want > 0.5).mean() < 0.8, "a portrait: the person covers part of the frame"


@NEED_TFLITE
@NEED_SELFIE
def test_the_production_files_errors_are_clear(tmp_path, monkeypatch):
    import tflite

    path = mp.model_path("selfie_segmentation")
    half = tmp_path / "half.tflite"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"half\.tflite is truncated or corrupt.*course\.sh models"):
        read_tflite(half)
    for other in (selfie_student(), lean_selfie_student()):
        with pytest.raises(ValueError, match=r"fit only selfie_segmenter\(\)'s architecture"):
            load_tflite_weights(other, path)
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    mediapipe_selfie(path)
    assert torch.equal(torch.rand(3), want), "loading the weights must leave the caller's RNG where it was"
    monkeypatch.setattr(tflite.ResizeBilinearOptions, "AlignCorners", lambda self: True)
    with pytest.raises(ValueError, match=r"op \d+ of selfie_segmentation\.tflite is a RESIZE_BILINEAR with "
                                         r"align_corners"):
        read_tflite(path)
