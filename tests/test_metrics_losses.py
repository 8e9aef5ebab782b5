"""Metrics and losses on hand-made cases whose answers can be worked out on paper."""
import pytest
import torch

from mobileunet import bce_loss, dice, dice_loss, iou, weighted_bce_loss


def masks():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    pred[..., :2, :] = 1       # 8 pixels
    target[..., 1:3, :] = 1    # 8 pixels, 4 shared
    return pred, target


def test_iou_and_dice_by_hand():
    pred, target = masks()
    assert iou(pred, target) == pytest.approx(4 / 12)
    assert dice(pred, target) == pytest.approx(8 / 16)


def test_dice_equals_2iou_over_1_plus_iou():
    pred, target = masks()
    j = iou(pred, target)
    assert dice(pred, target) == pytest.approx(2 * j / (1 + j))


def test_logits_threshold_at_zero():
    pred, target = masks()
    assert iou(pred * 20 - 10, target, from_logits=True) == pytest.approx(4 / 12)


def test_empty_masks_are_a_perfect_match_and_shapes_must_agree():
    z = torch.zeros(1, 1, 3, 3)
    assert iou(z, z) == 1.0 and dice(z, z) == 1.0
    with pytest.raises(ValueError, match="shape"):
        iou(z, torch.zeros(1, 1, 3, 4))


def test_losses_are_small_for_confident_right_answers():
    _, target = masks()
    good = target * 20 - 10
    bad = -good
    w = torch.ones_like(target)
    for loss in (bce_loss, dice_loss, weighted_bce_loss):
        assert loss(good, target, w) < 0.01 < loss(bad, target, w)


def test_weighted_bce_puts_weight_where_the_map_says():
    _, target = masks()
    logits = torch.zeros_like(target)
    logits[..., 0, 0] = 10.0                    # one confidently wrong background pixel
    w = torch.ones_like(target)
    plain = weighted_bce_loss(logits, target, w)
    w[..., 0, 0] = 10.0
    assert weighted_bce_loss(logits, target, w) > plain
    with pytest.raises(ValueError, match="weight map"):
        weighted_bce_loss(logits, target, None)


def test_instance_f1_counts_a_merge_as_a_miss_and_a_false_blob():
    from mobileunet.metrics import instance_f1
    labels = torch.zeros(1, 1, 5, 9, dtype=torch.int32)
    labels[..., 1:4, 1:4] = 1
    labels[..., 1:4, 5:8] = 2
    split = (labels > 0).float()
    merged = split.clone()
    merged[..., 1:4, 4] = 1                      # the gap filled: two cells become one blob
    assert instance_f1(split, labels)["instance_f1"] == 1.0
    r = instance_f1(merged, labels)
    assert r["blobs"] == 1 and r["cells"] == 2
    assert r["instance_f1"] == 0.0               # the blob's IoU with either cell is 9/21 < 0.5
