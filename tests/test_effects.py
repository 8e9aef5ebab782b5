"""Lesson 06's pieces: the teacher effect, the photos and their cached pairs, the image metrics,
the effect student's losses and a tiny training run. Small images throughout: the whole file
runs in seconds on one core."""
import json

import numpy as np
import pytest
import torch

from mobileunet.effect_distill import (EffectConfig, PatchDiscriminator, RandomFeatures, distill_effect,
                                       error_budget, evaluate_effect, perceptual_loss, perceptual_network,
                                       speed_comparison)
from mobileunet.effects import CartoonParams, bilateral, bilateral_reference, cartoon, soft_quantise
from mobileunet.metrics import psnr, ssim
from mobileunet.models import EffectStudent, effect_student
from mobileunet.photos import (TRAIN_PHOTOS, VAL_PHOTOS, EffectPairs, PairSpec, load_photo, paste_occluder,
                               random_sample, teacher_pairs)
from mobileunet.plotting import wipe_image

CHEAP = CartoonParams(n_smooth=1)


def _photo_crop(size=40):
    return np.ascontiguousarray(load_photo("astronaut")[100:100 + size, 200:200 + size])


# --- the effect ------------------------------------------------------------------------------


def test_cartoon_is_deterministic_in_range_and_keeps_the_type():
    image = _photo_crop()
    a, b = cartoon(image, CHEAP), cartoon(image.copy(), CHEAP)
    assert a.dtype == np.float32 and a.shape == image.shape
    assert np.array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not np.allclose(a, image, atol=0.02)                 # it does change the picture
    t = torch.from_numpy(image).permute(2, 0, 1)
    out = cartoon(t[None].repeat(2, 1, 1, 1), CHEAP)
    assert out.shape == (2, 3, 40, 40)
    assert torch.equal(out[0], torch.from_numpy(a).permute(2, 0, 1))


def test_cartoon_keeps_a_flat_image_flat_up_to_its_border():
    flat = np.empty((24, 24, 3), np.float32)
    flat[:] = (0.65, 0.4, 0.25)                                  # wood; black padding darkened such borders
    out = cartoon(flat, CartoonParams(n_smooth=2))
    spread = np.ptp(out.reshape(-1, 3), axis=0).max()
    assert spread < 1e-5, "the corners differ from the centre: the bilateral passes padded with black"


def _impulse_response(smooth, size=31):
    """What one pass does to a faint dot on grey: the filter's spatial weights, ``(size, size)``."""
    image = np.full((size, size, 3), 0.5)
    image[size // 2, size // 2] += 1e-4
    return (smooth(image)[..., 0] - 0.5) / 1e-4


def test_bilateral_weights_are_centred_and_symmetric():
    k = _impulse_response(lambda im: bilateral(im, 2.0, 0.1))
    assert np.unravel_index(k.argmax(), k.shape) == (15, 15)
    assert np.allclose(k, k[::-1, ::-1]) and np.allclose(k, k.T)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)


def test_bilateral_as_scikit_image_lays_out_its_table_is_off_centre():
    """The teacher of EFFECT_VERSION 2: the peak of its weights is not where the dot is."""
    from skimage.restoration import denoise_bilateral

    sheared = _impulse_response(lambda im: bilateral(im, 2.0, 0.1, centred=False))
    peak = np.unravel_index(sheared.argmax(), sheared.shape)
    assert peak != (15, 15) and not np.allclose(sheared, sheared[::-1, ::-1], atol=1e-3)
    ours = _impulse_response(lambda im: denoise_bilateral(im, sigma_color=0.1, sigma_spatial=2.0, channel_axis=-1,
                                                          mode="reflect"))
    if np.unravel_index(ours.argmax(), ours.shape) != (15, 15):   # this scikit-image still reads it that way
        assert np.allclose(ours, sheared, atol=1e-3)


def test_bilateral_equals_its_numpy_reference():
    image = np.random.default_rng(0).random((20, 26, 3))
    for centred in (True, False):
        fast, slow = bilateral(image, 2.0, 0.1, centred), bilateral_reference(image, 2.0, 0.1, centred)
        assert np.abs(fast - slow).max() < 1e-3                   # scikit-image bins the colour weight


def test_cartoon_rejects_bad_input():
    with pytest.raises(TypeError, match="img_as_float"):
        cartoon(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        cartoon(np.full((8, 8, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match="alpha"):
        cartoon(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="n_smooth"):
        CartoonParams(n_smooth=0)
    with pytest.raises(ValueError, match="edge_tau"):
        CartoonParams(edge_tau=1.5)


def test_soft_quantise_is_a_continuous_staircase():
    x = np.linspace(0, 1, 2001)
    q = soft_quantise(x, levels=4, sharpness=6.0)
    assert np.all(np.diff(q) >= -1e-12)                          # monotone
    assert np.abs(np.diff(q)).max() < 0.01                       # no jumps
    flat = soft_quantise(np.array([0.02, 0.23, 0.27]), 4, 50.0)  # flat near each level, steep between
    assert flat.tolist() == pytest.approx([0.0, 0.25, 0.25], abs=1e-6)


# --- photos, occlusions, pairs ---------------------------------------------------------------


def test_photos_are_split_by_photo():
    assert not set(TRAIN_PHOTOS) & set(VAL_PHOTOS)
    assert len(TRAIN_PHOTOS) >= 4 and len(VAL_PHOTOS) >= 2
    for name in TRAIN_PHOTOS + VAL_PHOTOS:
        image = load_photo(name)
        assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("lena")


@pytest.mark.parametrize("kind", ["sunglasses", "hand"])
def test_occluder_is_pasted_without_touching_the_original(kind):
    image = np.full((64, 64, 3), 0.5, np.float32)
    out = paste_occluder(image, np.random.default_rng(0), kind)
    changed = np.abs(out - image).max(axis=-1) > 0.05
    assert 0.02 < changed.mean() < 0.6                           # a visible, partial occluder
    assert np.all(image == 0.5) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="occluder"):
        paste_occluder(image, np.random.default_rng(0), "hat")


def test_random_sample_is_deterministic_given_the_seed():
    photos = {"a": _photo_crop(60), "b": _photo_crop(60)[::-1].copy()}
    a, name_a = random_sample(photos, 24, np.random.default_rng(3))
    b, name_b = random_sample(photos, 24, np.random.default_rng(3))
    assert name_a == name_b and np.array_equal(a, b) and a.shape == (24, 24, 3)
    with pytest.raises(ValueError, match="larger than photo"):
        random_sample(photos, 100, np.random.default_rng(0))


def test_pairs_are_cached_and_remade_when_the_params_change(tmp_path):
    spec = PairSpec("val", n=2, size=24, seed=1)
    first = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    assert first.inputs.shape == first.targets.shape == (2, 3, 24, 24)
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
    assert len(files) == 2                                       # NAME.pt + NAME.json (+ NAME.lock)
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["spec"]["seed"] == 1 and set(manifest["photos"]) == set(VAL_PHOTOS)
    assert manifest["effect"]["params"]["n_smooth"] == 1
    again = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.targets, first.targets) and "teacher_seconds" in again.manifest
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == files   # from the cache
    other = teacher_pairs(spec, CartoonParams(n_smooth=1, levels=4), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2                 # new params, new pairs
    assert torch.equal(other.inputs, first.inputs)               # same inputs, a different effect
    assert not torch.equal(other.targets, first.targets)
    with pytest.raises(ValueError, match="split"):
        PairSpec("test")


def _pairs_in_a_process(cache_dir: str) -> tuple[float, list]:
    pairs = teacher_pairs(PairSpec("val", n=6, size=32, seed=2), CHEAP, cache_dir=cache_dir, progress=False)
    return pairs.manifest["teacher_seconds"], pairs.targets.flatten()[:20].tolist()


def test_two_processes_needing_the_same_pairs_make_them_once(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        a, b = pool.map(_pairs_in_a_process, [str(tmp_path)] * 2)
    assert a == b                     # the same teacher_seconds: the second process read what the first made


def test_an_unreadable_cache_entry_is_made_again(tmp_path, capsys):
    spec = PairSpec("val", n=2, size=24, seed=1)
    first = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    next(tmp_path.glob("*.pt")).write_bytes(b"not a torch file")
    again = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    assert "cannot be read" in capsys.readouterr().out and torch.equal(again.targets, first.targets)


# --- metrics -----------------------------------------------------------------------------------


def test_psnr_and_ssim_on_hand_cases():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)   # MSE 0.01 -> 20 dB
    assert psnr(x, x + 0.01).tolist() == pytest.approx([40.0, 40.0], abs=1e-3)
    assert ssim(x, 1 - x).mean() < 0.1
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:1])
    with pytest.raises(ValueError, match="window"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 32, 40, generator=gen)
    b = (a + 0.1 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    ref = structural_similarity(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(),
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, channel_axis=-1)
    assert ssim(a, b).item() == pytest.approx(float(ref), abs=1e-5)


def test_wipe_image_joins_two_images():
    a, b = np.zeros((4, 10, 3)), np.ones((4, 10, 3)) * 0.5
    w = wipe_image(a, b, 0.3)
    assert (w[:, :3] == 0).all() and (w[:, 4:] == 0.5).all() and (w[:, 3] == 1).all()
    with pytest.raises(ValueError, match="position"):
        wipe_image(a, b, 1.5)


# --- the student and its losses ----------------------------------------------------------------


def test_effect_student_starts_as_the_identity_and_checks_its_channels():
    model = effect_student(residual=True).eval()
    for p in model.head.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(model(x), x.clamp(1e-3, 1 - 1e-3), atol=1e-5)
    assert model.config["residual"] is True
    with pytest.raises(ValueError, match="out_channels"):
        EffectStudent(in_channels=3, out_channels=1)


def test_full_res_skip_feeds_the_input_to_the_last_stage_and_rebuilds_from_its_config(tmp_path):
    from mobileunet.checkpoint import load_checkpoint, save_checkpoint

    model = effect_student().eval()
    assert model.config["full_res_skip"] is True
    last = model.decoder.blocks[-1]
    assert last.skip_ch == 3 and last.in_ch + last.skip_ch == 8 + 3          # stride-2 stage + RGB
    seen = {}
    last.register_forward_pre_hook(lambda mod, args: seen.update(skip=args[1]))
    x = torch.rand(2, 3, 67, 90)                                  # odd sizes work
    y = model(x)
    assert y.shape == x.shape
    assert seen["skip"] is x, "the last decoder stage must get the input image as its skip"
    save_checkpoint(tmp_path / "s.pt", model)
    again, _ = load_checkpoint(tmp_path / "s.pt")
    assert again.config == model.config and again.full_res_skip
    assert torch.allclose(again.eval()(x), y, atol=1e-6)
    assert not effect_student(full_res_skip=False).config["full_res_skip"]
    with pytest.raises(ValueError, match="5 decoder_channels"):
        EffectStudent(decoder_channels=(64, 32, 24, 16), full_res_skip=True)
    with pytest.raises(TypeError, match="full_res_skip"):
        EffectStudent(full_res_skip="yes")


def test_loss_config_errors():
    with pytest.raises(ValueError, match="all 0"):
        EffectConfig(l1=0.0, adversarial=1.0)
    with pytest.raises(ValueError, match="ssim"):
        EffectConfig(ssim=-1.0)
    with pytest.raises(ValueError, match="perceptual_net"):
        EffectConfig(perceptual=1.0, perceptual_net="resnet")
    with pytest.raises(ValueError, match="window"):
        EffectConfig(ssim=1.0, crop=8)
    with pytest.raises(ValueError, match="is not one of"):
        perceptual_network("alexnet")
    with pytest.raises(TypeError, match="EffectConfig"):
        distill_effect(effect_student(), None, object())


def test_perceptual_net_is_fixed_and_its_loss_is_zero_on_equal_images():
    a, b = RandomFeatures(), RandomFeatures()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not any(p.requires_grad for p in a.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert perceptual_loss(a, x, x).item() == 0.0
    assert perceptual_loss(a, x, x.flip(-1)).item() > 0
    assert PatchDiscriminator()(x, x).shape == (2, 1, 2, 2)


def test_a_tiny_run_records_every_term_and_is_scored():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=gen)
    pairs = EffectPairs(x, x.flip(-1), ["p"] * 8, {})
    torch.manual_seed(0)
    model = effect_student()
    cfg = EffectConfig(steps=4, batch_size=4, ssim=0.5, perceptual=0.5, adversarial=0.01, seed=0)
    hist = distill_effect(model, pairs, cfg)
    assert len(hist["loss"]) == 4
    assert {"loss_l1", "loss_ssim", "loss_perceptual", "loss_adversarial", "loss_disc"} <= set(hist)
    assert hist["config"]["task"] == "effect" and hist["config"]["ssim"] == 0.5
    scores = evaluate_effect(model, pairs)
    assert set(scores) == {"psnr", "ssim", "line_f1"} and np.isfinite(scores["psnr"])
    assert 0 <= scores["line_f1"] <= 1


class _Copy(torch.nn.Module):
    """A 'student' that returns its input (or a fixed image): its error budget is known."""

    def __init__(self, fixed=None):
        super().__init__()
        self.fixed, self.anchor = fixed, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x if self.fixed is None else self.fixed[:len(x)]


def test_error_budget_splits_the_error_between_smoothing_quantiser_and_lines():
    crops = [_photo_crop(), np.ascontiguousarray(load_photo("rocket")[200:240, 100:140])]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    pairs = EffectPairs(x, cartoon(x, CHEAP), ["astronaut", "rocket"], {})
    budget = error_budget(_Copy(), pairs, CHEAP)
    db = {(r["image"], r["vs"]): r["psnr"] for r in budget["rows"]}
    # the copying student is exactly the unchanged input
    assert db[("student", "teacher")] == pytest.approx(db[("input, unchanged", "teacher")])
    # each step of the teacher put back brings an image closer to the teacher's
    assert (db[("input, unchanged", "teacher")] < db[("teacher's smoothing only", "teacher")]
            < db[("teacher without its lines", "teacher")])
    assert 0 < budget["line_pixels"] < 0.5 and 0 < budget["line_error"] <= 1
    assert set(budget["per_photo"]) == {"astronaut", "rocket"}
    # a student that draws the teacher's image without its lines errs only on the line pixels
    no_lines = cartoon(x, CartoonParams(n_smooth=1, edge_tau=1e-6))
    lineless = error_budget(_Copy(no_lines), pairs, CHEAP)
    assert lineless["line_error"] > 0.9
    with pytest.raises(TypeError, match="CartoonParams"):
        error_budget(_Copy(), pairs, {"n_smooth": 1})
    with pytest.raises(ValueError, match="empty"):
        error_budget(_Copy(), EffectPairs(x[:0], x[:0], [], {}), CHEAP)


def test_speed_comparison_times_teacher_and_student_in_the_same_rounds():
    rows = speed_comparison(effect_student(), torch.rand(3, 32, 32), CHEAP, repeats=3, runtimes=("eager",))
    assert [(r["model"], r["runtime"]) for r in rows] == [("teacher (cartoon effect)", "scikit-image"),
                                                          ("student", "eager")]
    assert [r["runs"] for r in rows] == [3, 3]                   # one teacher call per round, as the student
    assert rows[0]["speed-up"] == 1.0
    assert rows[1]["speed-up"] == pytest.approx(rows[0]["median_ms"] / rows[1]["median_ms"])
    with pytest.raises(ValueError, match=r"one \(3, H, W\) image"):
        speed_comparison(effect_student(), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="threads=0"):
        speed_comparison(effect_student(), torch.rand(3, 32, 32), threads=0)


def test_wipe_explorer_redraws_when_the_slider_moves():
    pytest.importorskip("ipywidgets")
    from mobileunet.widgets import wipe_explorer

    box = wipe_explorer(np.zeros((16, 16, 3)), np.ones((16, 16, 3)))
    slider, picture = box.children
    before = picture.value
    slider.value = 0.9
    assert picture.value != before and picture.value[:4] == b"\x89PNG"


# --- the guided student, exact lines, the command line's resume ----------------------------------


def test_line_factor_equals_the_teachers_lines():
    from skimage.color import rgb2lab
    from skimage.filters import gaussian

    from mobileunet.effects import line_factor

    p = CartoonParams()
    image = _photo_crop(48).astype(np.float64)
    lum = rgb2lab(image)[..., 0] / 100
    dog = gaussian(lum, p.edge_sigma) - p.edge_tau * gaussian(lum, 1.6 * p.edge_sigma)
    want = np.where(dog > 0, 1.0, 1.0 + np.tanh(p.edge_phi * dog))
    got = line_factor(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].numpy()
    assert np.abs(got - want).max() < 1e-6 and want.min() < 0.5            # there are lines, and they agree


def test_quantise_lightness_equals_the_teachers_quantiser_and_passes_gradients_straight_through():
    from skimage.color import lab2rgb, rgb2lab

    from mobileunet.effects import quantise_lightness

    p = CartoonParams()
    image = _photo_crop(48).astype(np.float64)
    lab = rgb2lab(image)
    lab[..., 0] = 100 * soft_quantise(lab[..., 0] / 100, p.levels, p.sharpness)
    want = lab2rgb(lab)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    got = quantise_lightness(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 1e-6 and np.abs(want - image).max() > 0.02   # it moved colours, the same way
    x = x.float().requires_grad_()
    y = quantise_lightness(x, straight_through=True)
    assert torch.allclose(y, quantise_lightness(x), atol=1e-6)
    y.sum().backward()                                    # identity-like: mid-grey moves about one for one
    assert 0.5 < x.grad[0, :, 24, 24].abs().mean() < 2


def test_exact_quantise_needs_exact_lines(tmp_path, capsys):
    from mobileunet.cli import main
    from mobileunet.models import GuidedEffectStudent

    with pytest.raises(ValueError, match="exact_lines=True"):
        GuidedEffectStudent(exact_quantise=True)
    assert main(["effect", "--student", "guided_effect_student", "--exact-quantise",
                 "--out", str(tmp_path / "e.pt")]) == 2
    assert "--exact-quantise needs --exact-lines" in capsys.readouterr().err


def test_light_decoder_is_lighter_rebuilds_and_needs_the_guided_student(tmp_path, capsys):
    from mobileunet.checkpoint import load_checkpoint, save_checkpoint
    from mobileunet.cli import main
    from mobileunet.models import LIGHT_DECODER, guided_effect_student
    from mobileunet.profile import count_flops

    light = guided_effect_student(exact_quantise=True, smooth_base=True, **LIGHT_DECODER).eval()
    full = guided_effect_student(exact_quantise=True, smooth_base=True).eval()
    x = torch.rand(1, 3, 64, 64)
    assert count_flops(light, x) < 0.5 * count_flops(full, x)
    save_checkpoint(tmp_path / "light.pt", light)
    again, _ = load_checkpoint(tmp_path / "light.pt")
    assert again.config["expand"] == 2 and torch.equal(again.eval()(x), light(x))
    with pytest.raises(ValueError, match="expand"):
        guided_effect_student(expand=0)
    assert main(["effect", "--light-decoder", "--out", str(tmp_path / "e.pt")]) == 2
    assert "--light-decoder needs --student guided_effect_student" in capsys.readouterr().err


@pytest.mark.parametrize("exact_lines,exact_quantise", [(False, False), (True, False), (True, True)])
def test_guided_student_keeps_odd_sizes_range_and_rebuilds_from_its_config(exact_lines, exact_quantise, tmp_path):
    from mobileunet.checkpoint import load_checkpoint, save_checkpoint
    from mobileunet.models import guided_effect_student

    torch.manual_seed(0)
    model = guided_effect_student(exact_lines=exact_lines, exact_quantise=exact_quantise).eval()
    x = torch.rand(2, 3, 45, 62)
    y = model(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    save_checkpoint(tmp_path / "g.pt", model)
    back, _ = load_checkpoint(tmp_path / "g.pt")
    assert torch.allclose(back(x), y, atol=1e-6)
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.rand(1, 1, 32, 32))


def test_the_guided_students_fast_steps_are_the_plain_formulas():
    from mobileunet.models import half_size, logit_residual

    for shape in ((1, 3, 32, 32), (2, 4, 45, 62), (1, 1, 7, 8)):      # even, odd, one side odd
        x = torch.rand(shape)
        want = torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True)
        assert half_size(x).shape == want.shape and torch.allclose(half_size(x), want, atol=1e-7)
    y = torch.linspace(-60, 60, 241).view(1, 1, 1, -1).repeat(1, 3, 5, 1).requires_grad_()
    start = torch.rand(1, 3, 5, 241)
    got = logit_residual(y, start)
    assert torch.allclose(got, torch.sigmoid(y + torch.logit(start.clamp(1e-3, 1 - 1e-3))), atol=1e-6)
    got.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_guided_upsample_of_the_guide_is_the_guide():
    from mobileunet.models import guided_upsample

    x = torch.rand(1, 3, 32, 32)
    lo = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(guided_upsample(lo, lo, x, r=1, eps=1e-8), x, atol=1e-3)


def test_line_f1_tolerates_a_pixel_and_scores_the_identity_low():
    from mobileunet.metrics import line_f1, line_mask

    img = torch.ones(1, 3, 20, 20)
    img[..., 10, 3:17] = 0.2                                              # one dark line
    moved = torch.roll(img, 1, dims=-2)
    assert line_mask(img).sum() == 14
    assert line_f1(line_mask(moved), line_mask(img))["f1"] == 1.0
    assert line_f1(line_mask(moved), line_mask(img), tolerance=0)["f1"] == 0.0
    assert line_f1(line_mask(torch.ones_like(img)), line_mask(img))["f1"] == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        line_f1(line_mask(img), line_mask(img), tolerance=-1)


def test_effect_command_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    """A run killed after its last saved state picks up there with --resume and writes the curve."""
    from mobileunet import effect_distill, photos
    from mobileunet.cli import main, read_manifest

    gen = torch.Generator().manual_seed(0)
    fake = {s: EffectPairs(torch.rand(8, 3, 32, 32, generator=gen), torch.rand(8, 3, 32, 32, generator=gen),
                           ["astronaut"] * 8, {"hash": s, "photos": {"astronaut": "x"}}) for s in ("train", "val")}
    monkeypatch.setattr(photos, "teacher_pairs", lambda spec, params=None, **kw: fake[spec.split])

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(effect_distill, "speed_comparison", crash)
    out = tmp_path / "e.pt"
    argv = ["effect", "--n-train", "8", "--n-val", "4", "--size", "32", "--steps", "4", "--batch-size", "4",
            "--save-every", "2", "--eval-every", "2", "--time-repeats", "1", "--student", "guided_effect_student",
            "--exact-lines", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    state = out.with_suffix(".state.pt")
    assert state.is_file() and torch.load(state, weights_only=True)["step"] == 4
    rows = [{"model": "teacher (cartoon effect)", "runtime": "scikit-image", "median_ms": 100.0, "speed-up": 1.0,
             "runs": 1}, {"model": "student", "runtime": "eager", "median_ms": 10.0, "speed-up": 10.0, "runs": 1}]
    monkeypatch.setattr(effect_distill, "speed_comparison", lambda *a, **k: rows)
    assert main([*argv, "--resume"]) == 0
    m = read_manifest(out)
    assert m["training"]["resumed"] and m["training"]["curve"]["step"] == [2, 4]
    assert set(m["training"]["curve"]) >= {"psnr", "ssim", "line_f1"} and "line_f1" in m["metrics"]
    assert m["model"]["builder"] == "guided_effect_student" and m["model"]["config"]["exact_lines"]
    assert not state.exists()
    assert main([*argv[:-2], "--steps", "6", "--out", str(out), "--resume"]) == 2
    assert "no training state" in capsys.readouterr().err


def test_predict_effect_with_reflect_padding_keeps_the_size():
    from mobileunet.effect_distill import predict_effect

    x = torch.rand(3, 3, 40, 44)
    model = effect_student().eval()
    assert predict_effect(model, x, pad=8).shape == x.shape
    with pytest.raises(ValueError, match="pad"):
        predict_effect(model, x, pad=40)


def test_a_cache_entry_changed_behind_its_manifest_is_made_again(tmp_path, capsys):
    spec = PairSpec("val", n=2, size=24, seed=1)
    first = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    blob = next(tmp_path.glob("*.pt"))
    torch.save({"inputs": first.inputs, "targets": torch.zeros_like(first.targets)}, blob)   # same shapes
    again = teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    assert "not the file their manifest describes" in capsys.readouterr().out
    assert torch.equal(again.targets, first.targets)
    with pytest.raises(ValueError, match="finite"):
        CartoonParams(sigma_color=float("nan"))
    for bad in ({"seed": -1}, {"jitter": float("nan")}, {"size": 1}):
        with pytest.raises(ValueError, match="PairSpec"):
            PairSpec("val", **bad)


def test_a_cache_path_that_is_a_folder_is_a_clear_error(tmp_path):
    spec = PairSpec("val", n=2, size=24, seed=1)
    teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    pt = next(tmp_path.glob("*.pt"))
    pt.unlink()
    pt.mkdir()
    with pytest.raises(ValueError, match="is a folder or a device"):
        teacher_pairs(spec, CHEAP, cache_dir=tmp_path, progress=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="cannot make the folder"):
        teacher_pairs(spec, CHEAP, cache_dir=tmp_path / "afile", progress=False)


def test_the_guided_student_with_both_exact_steps_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from mobileunet.export import check_parity, export, load_runner, photo_frames
    from mobileunet.models import guided_effect_student

    torch.manual_seed(0)
    model = guided_effect_student(exact_quantise=True).eval()
    result = export(model, tmp_path / "e.onnx", "onnx", False, 64, False, None)
    assert check_parity(model, load_runner(result.path), photo_frames(2, 64), False)["ok"]


# --- the teacher's intermediate images as hints, and the self-guided start -------------------

def test_smoothing_stages_recompose_the_teacher_exactly():
    from mobileunet.effects import lines_from_lightness, quantise_lightness, smoothing_stages

    x = torch.from_numpy(_photo_crop(32)).permute(2, 0, 1)[None].float()
    stages = smoothing_stages(x, CHEAP)
    assert stages.shape == (1, 4, 32, 32) and 0 <= stages.min() and stages.max() <= 1
    rebuilt = (quantise_lightness(stages[:, :3], CHEAP) * lines_from_lightness(stages[:, 3:], CHEAP)).clamp(0, 1)
    assert (rebuilt - cartoon(x, CHEAP)).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        smoothing_stages(x[0])


def test_teacher_hints_are_cached_with_the_pairs_and_made_again_when_corrupt(tmp_path, capsys):
    from mobileunet.photos import teacher_hints

    pairs = teacher_pairs(PairSpec("val", 2, 24, seed=0), CHEAP, cache_dir=tmp_path, progress=False)
    hints = teacher_hints(pairs, cache_dir=tmp_path)
    (path,) = tmp_path.glob("effect_hints_val_*.pt")
    assert hints.shape == (2, 4, 24, 24) and torch.equal(teacher_hints(pairs, cache_dir=tmp_path), hints)
    path.write_bytes(b"not a checkpoint")
    assert torch.equal(teacher_hints(pairs, cache_dir=tmp_path), hints)
    assert "cannot be read" in capsys.readouterr().out


def test_self_guided_smooth_flattens_texture_and_keeps_an_edge():
    from mobileunet.models import self_guided_smooth

    torch.manual_seed(0)
    step = torch.zeros(1, 1, 32, 32)
    step[..., 16:] = 0.8
    noisy = step + 0.02 * torch.randn(step.shape)
    out = self_guided_smooth(noisy)
    assert out[..., 4:12].std() < 0.5 * noisy[..., 4:12].std()                 # texture flattened
    blurred = torch.nn.functional.avg_pool2d(noisy, 7, stride=1, padding=3, count_include_pad=False)
    contrast = lambda t: float(t[..., 16:18].mean() - t[..., 14:16].mean())  # noqa: E731
    assert contrast(out) > 0.5 > contrast(blurred)                            # the edge kept, unlike a box blur
    with pytest.raises(ValueError, match="passes"):
        self_guided_smooth(noisy, passes=0)
    with pytest.raises(ValueError, match="eps"):
        self_guided_smooth(noisy, eps=2.0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        self_guided_smooth(noisy[0])


def test_a_hint_only_run_trains_the_half_resolution_image_and_is_refused_for_other_students(tmp_path):
    from mobileunet.models import guided_effect_student

    pairs = teacher_pairs(PairSpec("train", 4, 24, seed=0), CHEAP, cache_dir=tmp_path, progress=False)
    student = guided_effect_student(exact_quantise=True, smooth_base=True)
    y = student.half_resolution(pairs.inputs)
    assert y.shape == (4, 4, 12, 12) and student.config["smooth_base"] is True
    hist = distill_effect(student, pairs, EffectConfig(steps=2, batch_size=2, l1=0, ssim=0, hint=1.0))
    assert len(hist["loss_hint"]) == 2 and "loss_l1" not in hist
    assert any(tmp_path.glob("effect_hints_train_*.pt"))                       # cached beside the pairs
    with pytest.raises(ValueError, match="exact_quantise=True"):
        distill_effect(effect_student(), pairs, EffectConfig(steps=1, batch_size=2, hint=1.0))
    with pytest.raises(ValueError, match="needs residual=True and exact_quantise=True"):
        guided_effect_student(smooth_base=True)
    with pytest.raises(ValueError, match="perceptual=0"):
        EffectConfig(hint=1.0, perceptual=1.0)


@pytest.mark.parametrize("smooth_base", [False, True])
def test_after_half_resolution_is_the_rest_of_the_forward_pass(smooth_base):
    from mobileunet.models import guided_effect_student

    torch.manual_seed(0)
    model = guided_effect_student(exact_quantise=True, smooth_base=smooth_base).eval()
    x = torch.rand(2, 3, 45, 62)
    with torch.no_grad():
        assert torch.equal(model.after_half_resolution(x, model.half_resolution(x)), model(x))
    with pytest.raises(ValueError, match="as half_resolution"):
        model.after_half_resolution(x, torch.rand(2, 3, 23, 31))


def test_quarter_resolution_student_is_cheaper_rebuilds_and_refuses_other_scales(tmp_path, capsys):
    from mobileunet.checkpoint import load_checkpoint, save_checkpoint
    from mobileunet.cli import main
    from mobileunet.models import GuidedEffectStudent, guided_effect_student
    from mobileunet.profile import count_flops

    quarter = guided_effect_student(exact_quantise=True, smooth_base=True, scale=4).eval()
    half = guided_effect_student(exact_quantise=True, smooth_base=True).eval()
    x = torch.rand(1, 3, 70, 90)
    assert quarter(x).shape == x.shape and quarter.half_resolution(x).shape == (1, 4, 35, 45)
    assert count_flops(quarter, x) < 0.4 * count_flops(half, x)
    save_checkpoint(tmp_path / "q.pt", quarter)
    again, _ = load_checkpoint(tmp_path / "q.pt")
    assert again.config["scale"] == 4 and torch.equal(again.eval()(x), quarter(x))
    assert "scale" not in half.config                             # older checkpoints rebuild unchanged
    with pytest.raises(ValueError, match="scale=3"):
        GuidedEffectStudent(scale=3)
    assert main(["effect", "--quarter-resolution", "--out", str(tmp_path / "e.pt")]) == 2
    assert "--quarter-resolution needs --student guided_effect_student" in capsys.readouterr().err
