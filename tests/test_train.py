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


def test_a_resumed_run_matches_an_uninterrupted_one(data):
    """N steps, a saved state, then the rest in a new model gives the weights of one run of N + M."""
    from mobileunet.train import fit

    def step_loss(model, image, mask, weight):
        return weighted_bce_loss(model(image), mask, weight), {}

    cfg = TrainConfig(steps=6, batch_size=4, crop=32, eval_every=3, loss=weighted_bce_loss)
    set_seed(0)
    whole, states = UNet(base=8, depth=2), []
    hist = fit(whole, *data, cfg, step_loss, save_every=3, save_state=states.append)
    assert [s["step"] for s in states] == [3, 6] and states[0]["history"]["step"] == [1, 2, 3]
    set_seed(123)                                   # a different init: everything must come from the state
    resumed = UNet(base=8, depth=2)
    rest = fit(resumed, *data, cfg, step_loss, state=states[0])
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert rest["loss"] == pytest.approx(hist["loss"]) and rest["step"] == list(range(1, 7))
    assert rest["eval_step"] == [3, 6] and rest["val_iou"] == pytest.approx(hist["val_iou"])


def test_resume_refuses_another_budget(data):
    from mobileunet.train import fit

    cfg = TrainConfig(steps=4, batch_size=4, crop=32, eval_every=2)
    states = []
    fit(UNet(base=8, depth=2), *data, cfg, lambda m, i, k, w: (cfg.loss(m(i), k, w), {}), save_every=2,
        save_state=states.append)
    with pytest.raises(ValueError, match="resume with the same budget and seed"):
        fit(UNet(base=8, depth=2), *data, TrainConfig(steps=8, batch_size=4, crop=32),
            lambda m, i, k, w: (cfg.loss(m(i), k, w), {}), state=states[0])


def test_bf16_and_channels_last_train_the_same_model_and_are_recorded(data):
    """bfloat16 autocast and channels-last change the arithmetic's layout, not what is learnt: the losses of a
    few steps stay close to float32's, and the history says which was used."""
    from mobileunet.models import default_student

    train_set, val_set = data
    losses = {}
    for precision, channels_last in (("fp32", False), ("bf16", False), ("fp32", True)):
        torch.manual_seed(0)
        model = default_student(in_channels=1, out_channels=1)
        cfg = TrainConfig(steps=3, batch_size=4, crop=None, eval_every=3, device="cpu", precision=precision,
                          channels_last=channels_last)
        hist = train(model, train_set, val_set, cfg)
        losses[precision, channels_last] = hist["loss"]
        assert hist["config"].get("precision", "fp32") == precision
        assert next(model.parameters()).dtype == torch.float32          # the weights stay float32
    assert losses["fp32", True] == pytest.approx(losses["fp32", False], abs=2e-3)   # another summation order
    assert losses["bf16", False] == pytest.approx(losses["fp32", False], abs=0.05)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
