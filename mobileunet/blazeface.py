"""BlazeFace, MediaPipe's short-range face detector, decoded in NumPy: anchors, boxes, keypoints, NMS.

The network (Bazarevsky et al. 2019; the file ``face_detection_short_range.tflite``
that ``mobileunet.mediapipe.fetch`` brings) is an SSD-style detector on a
128x128 RGB image scaled to [-1, 1]. It predicts, for each of 896 fixed
anchors, one score logit and 16 numbers: a box (centre x, centre y, width,
height) and six keypoints (x, y each: the eyes, the nose tip, the mouth, the
ear tragions), all in input pixels relative to the anchor. Turning that into
faces is the work of this module:

1. ``ssd_anchors``: the anchor centres, laid out the way MediaPipe's SSD anchor
   options for this model lay them out (strides 8, 16, 16, 16; two anchors a
   layer; layers of equal stride share one grid; every anchor 1x1, so only
   the centres matter): 16x16x2 + 8x8x6 = 896;
2. ``decode``: offsets / 128 + anchor centre, sigmoid of the clipped logits,
   a score threshold;
3. ``weighted_nms``: overlapping boxes of one face are merged into their
   score-weighted mean (MediaPipe's choice for this model; steadier from frame
   to frame than keeping only the best box), or ``nms`` keeps only the best;
4. ``BlazeFaceDetector``: letterbox a frame of any size to 128x128, run, decode,
   and map the boxes back to the frame's pixels as ``realtime.Region`` boxes,
   the format ``realtime.FaceDetector`` returns, so lesson 08's ``Pipeline``
   takes either.

Boxes are ``(N, 4)`` arrays of ``ymin, xmin, ymax, xmax`` in [0, 1] of the
model's input, keypoints ``(N, 6, 2)`` of ``x, y``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .mediapipe import TfliteRunner, verify
from .realtime import Region, _check_frame, centre_box, grow_box

INPUT_SIZE = 128
STRIDES = (8, 16, 16, 16)
"""One entry per anchor layer (MediaPipe's ``strides`` for the short-range model)."""
ANCHORS_PER_LAYER = 2
"""Aspect ratio 1.0 plus the interpolated-scale anchor: two anchors per layer and grid cell."""
KEYPOINTS = ("right eye", "left eye", "nose tip", "mouth", "right ear tragion", "left ear tragion")
"""The six keypoints in the order the model predicts them (the person's right and left)."""
SCORE_CLIP = 100.0
"""Logits are clipped to +-100 before the sigmoid, as in MediaPipe's decoder options."""


def ssd_anchors(input_size: int = INPUT_SIZE, strides: Sequence[int] = STRIDES,
                per_layer: int = ANCHORS_PER_LAYER, offset: float = 0.5) -> np.ndarray:
    """Anchor centres ``(N, 2)`` as ``x, y`` in [0, 1], in the order the model's outputs come.

    Consecutive layers with the same stride are one grid: each of its cells
    holds ``per_layer`` anchors for each of those layers. Cells go row by row
    (y, then x); a cell's centre is ``(index + offset) / grid size``.
    """
    if input_size < 1 or per_layer < 1 or not strides or min(strides) < 1:
        raise ValueError(f"input_size={input_size}, strides={tuple(strides)}, per_layer={per_layer}: "
                         f"need positive values and at least one stride")
    centres, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = int(np.ceil(input_size / strides[i]))
        yy, xx = np.meshgrid((np.arange(grid) + offset) / grid, (np.arange(grid) + offset) / grid, indexing="ij")
        cells = np.stack([xx.ravel(), yy.ravel()], axis=1)                 # (grid*grid, 2), x first
        centres.append(np.repeat(cells, per_layer * (j - i), axis=0))      # every anchor of a cell together
        i = j
    return np.concatenate(centres).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function of ``x`` clipped to +-``SCORE_CLIP``, in float64 (exp(100) overflows float32)."""
    z = np.clip(np.asarray(x, np.float64), -SCORE_CLIP, SCORE_CLIP)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


@dataclass
class Detections:
    """Faces in the model's input frame: ``boxes (N, 4)`` ymin, xmin, ymax, xmax in [0, 1];
    ``keypoints (N, 6, 2)`` x, y in [0, 1]; ``scores (N,)`` in (0, 1), highest first after NMS."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index) -> "Detections":
        return Detections(self.boxes[index], self.keypoints[index], self.scores[index])


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray | None = None,
           input_size: int = INPUT_SIZE, score_threshold: float = 0.5) -> Detections:
    """The raw outputs as boxes, keypoints and scores, only those scoring at least ``score_threshold``.

    ``regressors`` is ``(1, N, 16)`` or ``(N, 16)``: per anchor, the box centre
    x, y, its width and height, then six keypoints' x, y, all in input pixels,
    centres and keypoints relative to the anchor's centre. ``logits`` is
    ``(1, N, 1)``, ``(N, 1)`` or ``(N,)``.
    """
    anchors = ssd_anchors(input_size) if anchors is None else np.asarray(anchors, np.float32)
    reg = np.asarray(regressors, np.float32).reshape(-1, np.shape(regressors)[-1])
    logit = np.asarray(logits, np.float32).reshape(-1)
    if reg.shape[1] < 4 or (reg.shape[1] - 4) % 2:
        raise ValueError(f"regressors have {reg.shape[1]} numbers per anchor; expected 4 box numbers plus "
                         f"x, y per keypoint (16 for BlazeFace)")
    if not len(reg) == len(logit) == len(anchors):
        raise ValueError(f"{len(reg)} regressor rows, {len(logit)} scores and {len(anchors)} anchors: "
                         f"they must match (896 for the 128x128 short-range model)")
    if not 0 <= score_threshold < 1:
        raise ValueError(f"score_threshold={score_threshold}: use a probability in [0, 1)")
    scores = sigmoid(logit)
    keep = scores >= score_threshold
    reg, a, scores = reg[keep] / input_size, anchors[keep], scores[keep]
    cx, cy = reg[:, 0] + a[:, 0], reg[:, 1] + a[:, 1]
    half_w, half_h = reg[:, 2] / 2, reg[:, 3] / 2
    boxes = np.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=1)
    keypoints = reg[:, 4:].reshape(len(reg), (reg.shape[1] - 4) // 2, 2) + a[:, None, :]
    return Detections(boxes, keypoints, scores)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box with each of ``(N, 4)`` boxes (ymin, xmin, ymax, xmax); 0 for empty boxes."""
    top, left = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    bottom, right = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(dets: Detections, iou_threshold: float = 0.3) -> Detections:
    """Plain non-maximum suppression: the best box, then the next one overlapping none kept by more
    than ``iou_threshold``, and so on; highest score first."""
    _check_iou(iou_threshold)
    order, kept = list(np.argsort(-dets.scores, kind="stable")), []
    while order:
        best, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        kept.append(best)
        order = [i for i, o in zip(rest, box_iou(dets.boxes[best], dets.boxes[rest])) if o <= iou_threshold]
    return dets.take(np.asarray(kept, dtype=np.int64))


def weighted_nms(dets: Detections, iou_threshold: float = 0.3) -> Detections:
    """Non-maximum suppression that merges instead of dropping (MediaPipe's "weighted" variant).

    Take the best remaining box and every remaining box overlapping it by more
    than ``iou_threshold`` (itself included); replace the group by its
    score-weighted mean box and keypoints, scored as its best member; repeat.
    Several anchors fire on one face, and their mean moves less from frame to
    frame than any one of them.
    """
    _check_iou(iou_threshold)
    order = np.argsort(-dets.scores, kind="stable")
    boxes, kps, scores = [], [], []
    while len(order):
        overlap = box_iou(dets.boxes[order[0]], dets.boxes[order])
        group, order = order[overlap > iou_threshold], order[overlap <= iou_threshold]
        if len(group) == 0:                     # an empty best box overlaps nothing, not even itself
            group, order = order[:1], order[1:]
        w = dets.scores[group] / dets.scores[group].sum()
        boxes.append((w[:, None] * dets.boxes[group]).sum(0))
        kps.append((w[:, None, None] * dets.keypoints[group]).sum(0))
        scores.append(dets.scores[group[0]])
    n_kp = dets.keypoints.shape[1] if dets.keypoints.ndim == 3 else len(KEYPOINTS)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.asarray(kps, np.float32).reshape(-1, n_kp, 2), np.asarray(scores, np.float32))


def _check_iou(iou_threshold: float) -> None:
    if not 0 <= iou_threshold < 1:
        raise ValueError(f"iou_threshold={iou_threshold}: use an overlap in [0, 1), e.g. 0.3")


# --- on a frame ------------------------------------------------------------------------------


def letterbox(frame: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``frame`` (H, W, C) padded with black to a centred square, resized to ``size`` and scaled to
    [-1, 1]: the ``(1, size, size, 3)`` float32 input, and ``(side, pad_top, pad_left)`` to map boxes back.

    The resize is Pillow's bilinear filter, widened when shrinking (the same
    numbers as torch's ``interpolate(..., antialias=True)`` to 1e-7), on one
    thread: a detector should not compete with the model for cores.
    """
    from PIL import Image

    frame = _check_frame(frame)
    H, W, C = frame.shape
    side = max(H, W)
    top, left = (side - H) // 2, (side - W) // 2
    square = np.zeros((side, side, 3), np.float32)
    square[top:top + H, left:left + W] = frame if C == 3 else np.repeat(frame, 3, axis=-1)
    if side != size:
        square = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(square[..., c])).resize(
            (size, size), Image.BILINEAR)) for c in range(3)], axis=-1)           # (size, size, 3)
    return np.ascontiguousarray(square[None] * 2 - 1, dtype=np.float32), (side, top, left)


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixels: its box (no margin), score and six keypoints ``(6, 2)`` x, y."""

    region: Region
    score: float
    keypoints: np.ndarray


class BlazeFaceDetector:
    """The largest face by MediaPipe's BlazeFace (short range), grown by ``margin``; else a centre box.

    A drop-in for ``realtime.FaceDetector`` in lesson 08's ``Pipeline``: call
    it on an ``(H, W, C)`` float frame in [0, 1] and it returns a ``Region``
    (``source="face"``, or ``"centre"`` when it sees no face); ``faces(frame)``
    lists every face, largest first, without margin; ``detect(frame)`` adds
    scores and keypoints. The frame is letterboxed to 128x128 (the model sees
    faces up to about 2 m from a phone camera: those filling a fifth of the
    frame or more). ``path`` defaults to the fetched model, checked against
    its pinned sha256; any other path must hold a model with the same tensors.

    Example:
        >>> det = BlazeFaceDetector(threads=1)                  # doctest: +SKIP
        >>> det(frame)                                         # doctest: +SKIP
        Region(top=20, left=70, height=78, width=78, source='face')
    """

    def __init__(self, path: str | Path | None = None, margin: float = 0.25, fallback: float = 0.6,
                 score_threshold: float = 0.5, iou_threshold: float = 0.3, threads: int = 1):
        name = "face_detection_short_range"
        path = verify(name) if path is None else Path(path)
        if margin < 0:
            raise ValueError(f"margin={margin}: the share of the face box added on each side, 0 or more")
        centre_box((1, 1), fallback)                          # validates fallback
        _check_iou(iou_threshold)
        if not 0 <= score_threshold < 1:
            raise ValueError(f"score_threshold={score_threshold}: use a probability in [0, 1), e.g. 0.5")
        self.runner = TfliteRunner(path, threads)
        shapes = {t["name"]: t["shape"] for t in self.runner.tensors if t["kind"] == "output"}
        if self.runner.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3) or \
                sorted(shapes.values()) != [(1, 896, 1), (1, 896, 16)]:
            raise ValueError(f"{path.name} takes {self.runner.input_shape} and returns {sorted(shapes.values())}; "
                             f"BlazeFace short range takes (1, 128, 128, 3) and returns (1, 896, 16) and "
                             f"(1, 896, 1): use face_detection_short_range.tflite")
        self.margin, self.fallback = margin, fallback
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.anchors = ssd_anchors()

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network alone on a ``(1, 128, 128, 3)`` input in [-1, 1]: regressors ``(896, 16)``, logits ``(896,)``."""
        out = self.runner.outputs(x)
        by_width = {v.shape[-1]: v for v in out.values()}
        return by_width[16][0], by_width[1][0, :, 0]

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Every face, best score first, in the frame's own pixels (boxes clipped to it)."""
        frame = _check_frame(frame)
        x, (side, top, left) = letterbox(frame)
        dets = weighted_nms(decode(*self.raw(x), self.anchors, INPUT_SIZE, self.score_threshold),
                            self.iou_threshold)
        H, W = frame.shape[:2]
        faces = []
        for box, kp, score in zip(dets.boxes, dets.keypoints, dets.scores):
            y0, x0 = box[0] * side - top, box[1] * side - left
            y1, x1 = box[2] * side - top, box[3] * side - left
            y0, x0 = int(np.clip(round(y0), 0, H - 1)), int(np.clip(round(x0), 0, W - 1))
            y1, x1 = int(np.clip(round(y1), y0 + 1, H)), int(np.clip(round(x1), x0 + 1, W))
            pixels = kp * side - np.array([left, top], np.float32)
            faces.append(Face(Region(y0, x0, y1 - y0, x1 - x0, "face"), float(score), pixels))
        return faces

    def faces(self, frame: np.ndarray) -> list[Region]:
        """Every face's box, largest first, without margin (as ``FaceDetector.faces``)."""
        return sorted((f.region for f in self.detect(frame)), key=lambda r: r.height * r.width, reverse=True)

    def __call__(self, frame: np.ndarray) -> Region:
        faces = self.faces(frame)
        if not faces:
            return centre_box(frame.shape, self.fallback)
        return grow_box(faces[0], self.margin, frame.shape)
