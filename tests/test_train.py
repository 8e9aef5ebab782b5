"""The training loop: it learns, it is reproducible, it rejects bad configs."""
import pytest
import torch

from mobileunet import TrainConfig, UNet, cells_splits, evaluate, set_seed, train, weighted_bce_loss
from mobileunet.train import random_crop


@pytest.fixture(scope="module")
def data():
    return cells_splits(16, 4, size=48)


def run(data, steps=30):
    set_seed(0)
    model = UNet(base=8, depth=2)
    cfg = TrainConfig(steps=steps, batch_size=4, crop=32, eval_every=10, loss=weighted_bce_loss)
    return model, train(model, *data, cfg)


def test_training_lowers_the_loss_and_beats_chance(data):
    model, hist = run(data)
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert last < 0.8 * first
    assert hist["eval_step"] == [10, 20, 30]
    # predicting "all cell" scores the foreground fraction as IoU; a trained model must beat it
    frac = data[1].masks.mean().item()
    assert evaluate(model, data[1])["iou"] > frac + 0.1


def test_same_seed_same_history(data):
    _, a = run(data, steps=5)
    _, b = run(data, steps=5)
    assert a["loss"] == b["loss"]


def test_random_crop_cuts_the_same_window_from_each_tensor():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a, b = random_crop((x, x.clone()), 4, torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 4, 4) and torch.equal(a, b)
    with pytest.raises(ValueError, match="crop 9"):
        random_crop((x,), 9)


@pytest.mark.parametrize("kwargs,err", [
    ({"steps": 0}, ValueError), ({"batch_size": 2.5}, ValueError), ({"loss": "dice"}, TypeError)])
def test_bad_config(kwargs, err):
    with pytest.raises(err):
        TrainConfig(**kwargs)


def test_batch_larger_than_dataset(data):
    with pytest.raises(ValueError, match="batch_size"):
        train(UNet(base=8, depth=2), data[1], None, TrainConfig(steps=1, batch_size=8))
