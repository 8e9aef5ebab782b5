"""Distillation: each loss term on hand-made cases, the adapters, and short runs of the loop."""
import pytest
import torch
from torch import nn

from mobileunet import TrainConfig, UNet, cells_splits, set_seed, train, weighted_bce_loss
from mobileunet.distill import (DistillConfig, FeatureTap, HintAdapters, TeacherLabelled, distill,
                                hint_adapters, hint_cosine, hint_mse, logit_mse, soft_target_kl,
                                weighted_soft_target_kl)


@pytest.fixture(scope="module")
def data():
    return cells_splits(12, 4, size=32)


# --- soft targets ------------------------------------------------------------------------------

def test_kd_loss_is_zero_when_the_student_equals_the_teacher():
    z = torch.randn(2, 1, 8, 8) * 5
    for t in (1.0, 2.0, 7.5):
        assert soft_target_kl(z, z.clone(), t).item() == 0.0
    assert soft_target_kl(z + 1, z, 2.0).item() > 0


def test_kd_loss_is_the_bernoulli_kl_times_t_squared():
    s, t, T = torch.tensor([0.3, -2.0]), torch.tensor([1.5, 0.5]), 2.0
    ps, pt = torch.sigmoid(s / T), torch.sigmoid(t / T)
    kl = pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))
    assert soft_target_kl(s, t, T).item() == pytest.approx(T**2 * kl.mean().item(), rel=1e-5)


def test_t_squared_keeps_the_gradient_scale_independent_of_temperature():
    # for high T the gradient tends to (z_s - z_t) / (4 N): the T**2 factor cancels the 1/T**2
    teacher = torch.tensor([0.5, -1.0, 2.0, 0.0])
    grads = {}
    for T in (4.0, 8.0, 16.0):
        s = torch.tensor([1.0, -0.5, 1.0, 0.3], requires_grad=True)
        soft_target_kl(s, teacher, T).backward()
        grads[T] = s.grad
    limit = (torch.tensor([1.0, -0.5, 1.0, 0.3]) - teacher) / (4 * 4)
    for T, g in grads.items():
        assert torch.allclose(g, limit, rtol=0.1, atol=1e-4), (T, g, limit)
    assert torch.allclose(grads[8.0], grads[16.0], rtol=0.05)


def test_weighted_kd_loss_counts_pixels_by_the_weight_map():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0]])      # they differ at pixel 0 only
    assert weighted_soft_target_kl(s, t, 2.0, torch.ones(1, 2)).item() == pytest.approx(
        soft_target_kl(s, t, 2.0).item())
    only_first, only_second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert weighted_soft_target_kl(s, t, 2.0, only_first).item() == pytest.approx(
        2 * soft_target_kl(s, t, 2.0).item())
    assert weighted_soft_target_kl(s, t, 2.0, only_second).item() == 0.0
    with pytest.raises(ValueError, match="weight map"):
        weighted_soft_target_kl(s, t, 2.0)


def test_logit_mse_matches_logits_and_ignores_temperature():
    s, t = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    assert logit_mse(s, t, 1.0).item() == logit_mse(s, t, 9.0).item() == 4.0


def test_temperature_must_be_positive():
    z = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="temperature=0"):
        soft_target_kl(z, z, 0)


# --- hints ----------------------------------------------------------------------------------------

def test_hint_losses_on_hand_made_features():
    a = torch.randn(2, 4, 3, 3)
    assert hint_mse(a, a).item() == 0.0
    assert hint_mse(a, a + 1).item() == pytest.approx(1.0)
    assert hint_cosine(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)    # direction, not length
    assert hint_cosine(a, -a).item() == pytest.approx(2.0, abs=1e-6)


def test_adapters_map_student_channels_to_teacher_channels_at_the_student_size():
    adapters = HintAdapters(student_channels=[16, 8], teacher_channels=[64, 32])
    s = [torch.randn(2, 16, 8, 8), torch.randn(2, 8, 16, 16)]
    t = [torch.randn(2, 64, 16, 16), torch.randn(2, 32, 16, 16)]     # first at another stride
    pairs = adapters(s, t)
    assert [tuple(a.shape) for a, _ in pairs] == [(2, 64, 8, 8), (2, 32, 16, 16)]
    assert [tuple(b.shape) for _, b in pairs] == [(2, 64, 8, 8), (2, 32, 16, 16)]
    # shrinking the teacher's map by 2 averages each 2x2 block
    assert torch.allclose(pairs[0][1], nn.functional.avg_pool2d(t[0], 2), atol=1e-6)
    assert torch.equal(pairs[1][1], t[1])


def test_hint_adapters_are_sized_from_the_named_modules():
    teacher, student = UNet(base=8, depth=3), UNet(base=4, depth=2)
    adapters = hint_adapters(student, teacher, [("ups.1", "ups.0"), ("downs.0", "inc")],
                             torch.zeros(1, 1, 32, 32))
    assert [(c.in_channels, c.out_channels) for c in adapters.convs] == [(8, 16), (4, 16)]


def test_feature_tap_names_a_missing_module_and_a_silent_one():
    model = UNet(base=8, depth=2)
    with pytest.raises(ValueError, match="no module 'ups.7'.*ups.0"):
        FeatureTap(model, ["ups.7"], "teacher")
    with FeatureTap(model, ["downs"]) as tap:          # a ModuleList is never called itself
        model(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="did not run"):
        tap.outputs()


# --- teacher-made labels ----------------------------------------------------------------------

class Threshold(nn.Module):
    """A 'teacher' that says cell wherever the image is brighter than 0.5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.constant_(self.conv.weight, 40.0)
        nn.init.constant_(self.conv.bias, -20.0)

    def forward(self, x):
        return self.conv(x)


def test_teacher_labels_replace_the_dataset_labels(data):
    images = data[0].images[:3]
    labelled = TeacherLabelled(Threshold(), images)
    assert len(labelled) == 3
    image, mask, weight = labelled[1]
    assert torch.equal(mask, (images[1] > 0.5).float())
    assert not torch.equal(mask, data[0].masks[1])
    assert torch.isfinite(weight).all() and weight.min() > 0
    assert weight.max() > 2 * weight.median()       # border weights peak in the gaps


def test_distill_reuses_teacher_labels_made_once(data):
    labelled = TeacherLabelled(Threshold(), data[0].images[:4])
    cfg = DistillConfig(steps=1, batch_size=4, crop=24, eval_every=1)
    hist = distill(UNet(base=4, depth=2), UNet(base=4, depth=2), *data, cfg, unlabelled=labelled)
    assert hist["config"]["teacher_labelled"] == 4


# --- the loop ---------------------------------------------------------------------------------

def test_distill_with_every_term_off_is_train(data):
    def run(fn, cfg_cls, **kw):
        set_seed(0)
        model = UNet(base=4, depth=2)
        cfg = cfg_cls(steps=4, batch_size=4, crop=24, loss=weighted_bce_loss, eval_every=2, **kw)
        return fn(model, cfg)

    a = run(lambda m, c: train(m, *data, c), TrainConfig)
    b = run(lambda m, c: distill(m, UNet(base=8, depth=2), *data, c), DistillConfig)
    assert a["loss"] == b["loss"] and a["val_iou"] == b["val_iou"]
    assert set(a) <= set(b) and b["loss_hard"] == b["loss"]


def test_a_short_distill_run_lowers_its_loss(data):
    set_seed(0)
    teacher = UNet(base=8, depth=2)
    train(teacher, *data, TrainConfig(steps=15, batch_size=4, crop=24, loss=weighted_bce_loss))
    set_seed(1)
    student = UNet(base=4, depth=2)
    cfg = DistillConfig(steps=30, batch_size=4, crop=24, loss=weighted_bce_loss, eval_every=15,
                        soft_weight=0.5, temperature=2.0, hints=(("ups.1", "ups.1"),), hint_weight=0.5)
    hist = distill(student, teacher, *data, cfg, unlabelled=cells_splits(4, 1, size=32)[0])
    assert hist["config"]["teacher_labelled"] == 4 and hist["eval_step"] == [15, 30]
    for key in ("loss", "loss_hard", "loss_soft", "loss_hint"):
        first, last = sum(hist[key][:5]) / 5, sum(hist[key][-5:]) / 5
        assert last < 0.9 * first, key


@pytest.mark.parametrize("kwargs,err,match", [
    ({"soft_weight": 1.5}, ValueError, "soft_weight"),
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"hint_weight": 1.0}, ValueError, "no hints"),
    ({"hints": (("ups.1", "ups.1"),)}, ValueError, "hint_weight=0"),
    ({"hints": ("ups.1",), "hint_weight": 1.0}, ValueError, "name pairs"),
    ({"soft_loss": "kl"}, TypeError, "logit_mse"),
])
def test_bad_distill_config(kwargs, err, match):
    with pytest.raises(err, match=match):
        DistillConfig(**kwargs)


def test_distill_rejects_a_train_config(data):
    with pytest.raises(TypeError, match="DistillConfig"):
        distill(UNet(base=4, depth=2), UNet(base=4, depth=2), *data, TrainConfig(steps=1))


# --- the pictures of lesson 05 ----------------------------------------------------------------

def test_soft_target_figure_and_explorer(data):
    import matplotlib
    matplotlib.use("Agg")
    from mobileunet.plotting import plot_soft_targets, soft_targets_explorer

    image, mask, _ = data[1][0]
    z = (mask * 2 - 1) * 6
    fig = plot_soft_targets(image, z, temperatures=(1, 4))
    assert len(fig.axes) == 4                      # image, two temperatures, the row profile
    panel = soft_targets_explorer(image, z)
    slider, picture = panel.children
    first = picture.value
    slider.value = 8.0                             # moving the slider redraws the picture
    assert picture.value[:4] == b"\x89PNG" and picture.value != first
