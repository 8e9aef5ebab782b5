"""BlazeFace decoding: anchors, boxes and keypoints, weighted NMS and the mapping back to frame pixels,
on synthetic tensors (no model file needed); then the real detector on scikit-image's astronaut,
skipped with the fetch command when the model has not been fetched."""
import warnings

import numpy as np
import pytest

from mobileunet import blazeface as bf
from mobileunet import mediapipe as mp
from mobileunet.realtime import Region

HAVE_MODEL = mp.available("face_detection_short_range")
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"face_detection_short_range.tflite not fetched: "
                                                        f"run {mp.FETCH}")


def region_iou(a: Region, b: Region) -> float:
    h = max(0, min(a.top + a.height, b.top + b.height) - max(a.top, b.top))
    w = max(0, min(a.left + a.width, b.left + b.width) - max(a.left, b.left))
    inter = h * w
    return inter / (a.height * a.width + b.height * b.width - inter)


def test_anchor_layout_of_the_short_range_model():
    a = bf.ssd_anchors()
    assert a.shape == (896, 2) and a.dtype == np.float32
    # stride 8: a 16x16 grid, two anchors a cell, x fastest
    np.testing.assert_allclose(a[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(a[1], [1 / 32, 1 / 32])
    np.testing.assert_allclose(a[2], [3 / 32, 1 / 32])
    np.testing.assert_allclose(a[32], [1 / 32, 3 / 32])           # second row
    np.testing.assert_allclose(a[511], [31 / 32, 31 / 32])
    # three stride-16 layers share one 8x8 grid: six anchors a cell
    np.testing.assert_allclose(a[512:518], np.full((6, 2), 1 / 16))
    np.testing.assert_allclose(a[518], [3 / 16, 1 / 16])
    np.testing.assert_allclose(a[-1], [15 / 16, 15 / 16])
    assert len(bf.ssd_anchors(128, (8, 16, 16, 16), per_layer=1)) == 16 * 16 + 8 * 8 * 3
    with pytest.raises(ValueError, match="strides"):
        bf.ssd_anchors(strides=())


def synthetic_outputs(k: int, box_px=(6.4, -3.2, 32.0, 40.0), logit=3.0):
    """Regressors and logits where only anchor ``k`` fires: centre offset (x, y), width, height in
    input pixels, and keypoints at fixed offsets from the anchor."""
    reg = np.zeros((896, 16), np.float32)
    reg[k, :4] = box_px
    reg[k, 4:] = np.arange(12, dtype=np.float32)              # keypoint offsets 0..11 px
    logits = np.full((896, 1), -10.0, np.float32)
    logits[k] = logit
    return reg[None], logits[None]


def test_decode_one_synthetic_face():
    k = 600
    a = bf.ssd_anchors()[k]
    d = bf.decode(*synthetic_outputs(k))
    assert len(d) == 1
    cx, cy = a[0] + 6.4 / 128, a[1] - 3.2 / 128
    np.testing.assert_allclose(d.boxes[0], [cy - 20 / 128, cx - 16 / 128, cy + 20 / 128, cx + 16 / 128], atol=1e-6)
    np.testing.assert_allclose(d.keypoints[0], a + np.arange(12).reshape(6, 2) / 128, atol=1e-6)
    np.testing.assert_allclose(d.scores, [1 / (1 + np.exp(-3.0))], rtol=1e-6)
    assert d.keypoints.shape == (1, len(bf.KEYPOINTS), 2)
    assert len(bf.decode(*synthetic_outputs(k, logit=-1.0))) == 0, "below the 0.5 threshold"
    assert len(bf.decode(*synthetic_outputs(k, logit=-1.0), score_threshold=0.2)) == 1


def test_decode_explains_bad_shapes():
    reg, logits = synthetic_outputs(0)
    with pytest.raises(ValueError, match="895 scores and 896 anchors"):
        bf.decode(reg, logits[:, :895])
    with pytest.raises(ValueError, match="15 numbers per anchor"):
        bf.decode(reg[..., :15], logits)
    with pytest.raises(ValueError, match="score_threshold=1.5"):
        bf.decode(reg, logits, score_threshold=1.5)


def test_sigmoid_of_huge_logits_is_finite_and_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = bf.sigmoid(np.array([-1e6, -100.0, 0.0, 100.0, 1e6], np.float32))
    assert s.dtype == np.float32 and s[2] == 0.5 and s[0] < 1e-40 and s[-1] == 1.0


def detections(boxes, scores):
    boxes = np.asarray(boxes, np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, axis=1)               # keypoints at each box's top-left corner
    return bf.Detections(boxes, kps, np.asarray(scores, np.float32))


def test_weighted_nms_merges_one_face_and_keeps_another():
    d = detections([[0.10, 0.10, 0.50, 0.50],      # face A, best
                    [0.12, 0.12, 0.52, 0.52],      # face A again, shifted
                    [0.60, 0.60, 0.90, 0.90]],     # face B
                   [0.6, 0.9, 0.7])
    out = bf.weighted_nms(d, 0.3)
    assert len(out) == 2
    np.testing.assert_allclose(out.scores, [0.9, 0.7])
    merged = (0.9 * d.boxes[1] + 0.6 * d.boxes[0]) / 1.5
    np.testing.assert_allclose(out.boxes[0], merged, atol=1e-6)
    np.testing.assert_allclose(out.keypoints[0], np.repeat(merged[None, :2], 6, 0), atol=1e-6)
    np.testing.assert_allclose(out.boxes[1], d.boxes[2])
    plain = bf.nms(d, 0.3)
    np.testing.assert_allclose(plain.boxes, d.boxes[[1, 2]])
    assert len(bf.weighted_nms(d, 0.99)) == 3, "nothing overlaps that much: all three kept"
    empty = bf.weighted_nms(detections(np.zeros((0, 4)), []), 0.3)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="iou_threshold=1"):
        bf.nms(d, 1)


def test_letterbox_pads_to_a_centred_square_in_minus_one_to_one():
    frame = np.ones((60, 100, 3), np.float32)
    x, (side, top, left) = bf.letterbox(frame, 128)
    assert x.shape == (1, 128, 128, 3) and x.dtype == np.float32
    assert (side, top, left) == (100, 20, 0)
    assert x.min() == -1.0 and x.max() == pytest.approx(1.0)
    assert np.allclose(x[0, :20], -1) and np.allclose(x[0, -20:], -1) and np.allclose(x[0, 30:90], 1)
    grey, _ = bf.letterbox(np.zeros((50, 50, 1), np.float32))
    assert grey.shape == (1, 128, 128, 3)
    with pytest.raises(TypeError, match="uint8"):
        bf.letterbox(np.zeros((8, 8, 3), np.uint8))


class FakeRunner:
    """Stands in for the .tflite model: one face at a given box of the 128x128 input."""

    def __init__(self, k, box_px):
        self.reg, self.logits = synthetic_outputs(k, box_px)

    def outputs(self, x):
        assert x.shape == (1, 128, 128, 3)
        return {"regressors": self.reg, "classificators": self.logits}


def test_detector_maps_boxes_back_to_a_non_square_frame():
    det = object.__new__(bf.BlazeFaceDetector)        # no model file: the decoding and mapping only
    det.margin, det.fallback, det.score_threshold, det.iou_threshold = 0.25, 0.6, 0.5, 0.3
    det.anchors = bf.ssd_anchors()
    k = 512 + (4 * 8 + 3) * 6                         # the stride-16 cell in row 4, column 3:
    ax, ay = det.anchors[k] * 128                     # its centre at (56, 72) input pixels
    det.runner = FakeRunner(k, (0.0, 0.0, 32.0, 32.0))
    frame = np.zeros((120, 200, 3), np.float32)       # letterboxed: side 200, 40 rows of padding on top
    (face,) = det.detect(frame)
    scale = 200 / 128
    assert face.region.top == round((ay - 16) * scale - 40) and face.region.left == round((ax - 16) * scale)
    assert face.region.height == round((ay + 16) * scale - 40) - face.region.top
    assert face.region.source == "face" and 0.9 < face.score < 1
    np.testing.assert_allclose(face.keypoints[0], [ax * scale, (ay + 1) * scale - 40], atol=1e-3)  # offsets 0, 1 px
    grown = det(frame)
    assert grown.height == pytest.approx(face.region.height * 1.5, abs=2) and grown.top < face.region.top
    det.runner = FakeRunner(k, (0.0, 0.0, 32.0, 32.0))
    det.runner.logits[:] = -10                        # nobody there
    assert det(frame).source == "centre" and det.faces(frame) == []


def test_detector_without_the_model_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEUNET_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="course.sh models"):
        bf.BlazeFaceDetector()


@needs_model
def test_blazeface_finds_the_astronauts_face_where_the_cascade_does():
    pytest.importorskip("ai_edge_litert")
    import skimage.data
    from skimage.util import img_as_float32

    from mobileunet.realtime import FaceDetector

    photo = img_as_float32(skimage.data.astronaut())              # 512x512, one face
    cascade = FaceDetector().faces(photo)[0]                      # Region(67, 172, 96, 96) with scikit-image 0.24+
    det = bf.BlazeFaceDetector(threads=1)
    faces = det.detect(photo)
    assert len(faces) == 1 and faces[0].score > 0.8
    assert region_iou(faces[0].region, cascade) > 0.5, (faces[0].region, cascade)
    kp = dict(zip(bf.KEYPOINTS, faces[0].keypoints))
    assert kp["right eye"][0] < kp["nose tip"][0] < kp["left eye"][0]       # her right eye is on the image's left
    assert max(kp["right eye"][1], kp["left eye"][1]) < kp["nose tip"][1] < kp["mouth"][1]
    assert det(np.zeros((256, 256, 3), np.float32)).source == "centre"


@needs_model
def test_blazeface_drives_the_pipeline():
    pytest.importorskip("ai_edge_litert")
    from mobileunet.realtime import Pipeline, VirtualCamera, run_pipelines

    camera = VirtualCamera("astronaut", size=96, n_frames=3, centre=(0.35, 0.45))
    run = run_pipelines({"bf": Pipeline(lambda x: x, detector=bf.BlazeFaceDetector(), size=32)}, camera,
                        warmup=0)["bf"]
    assert [r.source for r in run.regions] == ["face"] * 3
