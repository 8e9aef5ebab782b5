"""The embedded cells data: deterministic, split cleanly, weight map as in the paper."""
import numpy as np
import pytest
import torch

from mobileunet import CellsDataset, border_weight_map, cells_splits, make_cell_image


def test_same_seed_same_pixels():
    a, b = make_cell_image(64, seed=3), make_cell_image(64, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.image, make_cell_image(64, seed=4).image)


def test_dataset_is_deterministic_and_splits_do_not_overlap():
    train1, val1 = cells_splits(4, 3, size=48)
    train2, _ = cells_splits(4, 3, size=48)
    assert torch.equal(train1.images, train2.images)
    for v in val1.images:
        assert not any(torch.equal(v, t) for t in train1.images)


def test_first_images_do_not_depend_on_how_many_are_asked_for():
    assert torch.equal(CellsDataset("val", 2, 48).images, CellsDataset("val", 5, 48).images[:2])


def test_item_shapes_and_ranges():
    image, mask, weight = CellsDataset("train", 2, 64)[1]
    assert image.shape == mask.shape == weight.shape == (1, 64, 64)
    assert 0 <= image.min() and image.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (weight > 0).all()


def test_cells_touch_and_gaps_carry_the_largest_weights():
    s = make_cell_image(128, seed=0)
    assert len(np.unique(s.labels)) > 10
    # touching cells: some background pixels have two different cells within 2 px
    from scipy import ndimage
    near = [ndimage.binary_dilation(s.labels == k, iterations=2) for k in np.unique(s.labels) if k]
    gap = (np.sum(near, axis=0) >= 2) & (s.labels == 0)
    assert gap.sum() > 20
    assert s.weight[gap].mean() > 3 * s.weight[s.labels > 0].mean()


def test_weight_map_formula_on_two_cells():
    labels = np.zeros((1, 21), np.int32)
    labels[0, :5] = 1
    labels[0, 16:] = 2
    w = border_weight_map(labels, w0=10, sigma=5)
    frac = 10 / 21
    # pixel 10: 6 px from cell 1 (ends at 4) and 6 px from cell 2 (starts at 16)
    expected = 0.5 / (1 - frac) + 10 * np.exp(-(6 + 6) ** 2 / (2 * 5**2))
    assert w[0, 10] == pytest.approx(expected, rel=1e-5)
    assert w[0, 0] == pytest.approx(0.5 / frac, rel=1e-5)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="split='test'"):
        CellsDataset("test")
    with pytest.raises(ValueError, match="n=0"):
        CellsDataset("train", n=0)
    with pytest.raises(ValueError, match="too small"):
        make_cell_image(8)
