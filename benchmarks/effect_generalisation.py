"""Why the effect student stops improving (lesson 06): it learns its training photos, not the smoothing.

    python benchmarks/effect_generalisation.py             # about 10 minutes on 2 cores (three 800-step probes)
    python benchmarks/effect_generalisation.py --no-probes # the shipped student's tables only (~20 s)
    python benchmarks/effect_generalisation.py --missing   # only the probes the last results lack

``benchmarks/effect_ceiling.py`` shows that the student's error is the
smoothing it draws at half resolution. This script asks why more steps, more
pairs and a wider network no longer move it. With the shipped checkpoint:

* **fit**: the half-resolution smoothing of the input, the self-guided filter
  and the student against the teacher's (pooled 2x2), on the 384 training
  pairs and on the 48 held-out pairs; and the student's final image against
  the teacher on both. What the network adds to the filter on photos it was
  trained on, against what it adds on photos it has never seen, is its
  generalisation gap;
* **where**: on the held-out pairs, each kind of pixel's share of the
  smoothing's squared error: textured pixels (the input's local standard
  deviation above 0.05), pixels where the teacher's smoothing has an edge
  (a step above 0.05 to a neighbour), and flat ones (below 0.01);
* **probes** (800 steps, the recipe of ``effect_levers.py``'s shipped row: both
  cheap steps exact, self-guided start, L1 + 0.5 SSIM, batch 8, lr 5e-3,
  seed 0, 1 thread each): the same student trained on 384 pairs whose input's
  colour channels are randomly permuted before the teacher runs (one of the six
  orders per pair: new colours, the same textures), and a student whose network sees every
  full-resolution pixel (the input ``pixel_unshuffle``-d to 12 channels at half
  resolution) instead of the 2x2 average, and the student trained on pairs cut
  from photos shrunk by a random 0.5-1x (the same photos' textures at new scales).

Writes ``benchmarks/results/effect_generalisation.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
STEPS = 800
pool = lambda t: F.avg_pool2d(t, 2, ceil_mode=True)  # noqa: E731


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from mobileunet.metrics import psnr
    return round(float(psnr(a.clamp(0, 1), b).mean()), 2)


def fit_rows(student, pairs: dict) -> list[dict]:
    """Half-resolution smoothing and final image against the teacher, on the training and held-out pairs."""
    from mobileunet.models import SMOOTH_BASE, self_guided_smooth
    from mobileunet.photos import teacher_hints

    rows = []
    for split, p in pairs.items():
        smooth = pool(teacher_hints(p)[:, :3])
        x_lo = pool(p.inputs)
        with torch.no_grad():
            drawn = torch.cat([student.half_resolution(p.inputs[i:i + 64]) for i in range(0, len(p), 64)])
            final = student.after_half_resolution(p.inputs, drawn)      # the rest of the forward pass
        filtered = self_guided_smooth(x_lo, **SMOOTH_BASE)
        rows.append({"pairs": f"{split} ({len(p)})", "input": mean_psnr(x_lo, smooth),
                     "filter": mean_psnr(filtered, smooth), "student": mean_psnr(drawn[:, :3], smooth),
                     "student_gain": round(mean_psnr(drawn[:, :3], smooth) - mean_psnr(filtered, smooth), 2),
                     "student_final_image": mean_psnr(final, p.targets)})
    return rows


def where_rows(student, val) -> list[dict]:
    """Shares of the held-out smoothing error by kind of pixel, for the student and the filter."""
    from mobileunet.models import SMOOTH_BASE, box_filter, self_guided_smooth
    from mobileunet.photos import teacher_hints

    smooth, x_lo = pool(teacher_hints(val)[:, :3]), pool(val.inputs)
    texture = (box_filter(x_lo * x_lo, 2) - box_filter(x_lo, 2) ** 2).clamp_min(0).mean(1, keepdim=True).sqrt()
    step_y = F.pad((smooth[:, :, 1:] - smooth[:, :, :-1]).abs().mean(1, keepdim=True), (0, 0, 0, 1))
    step_x = F.pad((smooth[..., 1:] - smooth[..., :-1]).abs().mean(1, keepdim=True), (0, 1))
    edge = torch.maximum(step_x, step_y)
    kinds = {"textured (input local std > 0.05)": texture > 0.05, "teacher edge (step > 0.05)": edge > 0.05,
             "flat (teacher step < 0.01)": edge < 0.01}
    with torch.no_grad():
        images = {"student": student.half_resolution(val.inputs)[:, :3],
                  "filter": self_guided_smooth(x_lo, **SMOOTH_BASE)}
    rows = []
    for kind, mask in kinds.items():
        row = {"pixels": kind, "share_of_pixels_pct": round(100 * float(mask.float().mean()), 1)}
        for name, image in images.items():
            err = ((image - smooth) ** 2).mean(1, keepdim=True)
            row[f"{name}_error_share_pct"] = round(100 * float(err[mask].sum() / err.sum()), 1)
            row[f"{name}_psnr"] = round(float(-10 * torch.log10(err[mask].mean())), 2)
        rows.append(row)
    return rows


def unshuffled_student():
    """The shipped design, but its network sees ``pixel_unshuffle(x, 2)``: 12 channels, every full-resolution pixel."""
    from mobileunet.decoders import DecoderBlock
    from mobileunet.encoders import MobileNetEncoder
    from mobileunet.models import GUIDED_DECODER, GuidedEffectStudent

    class Unshuffled(GuidedEffectStudent):
        def _guides(self, x):
            self._full = x                                   # _half reads the full-resolution input from here
            return super()._guides(x)

        def _half(self, guide_lo):
            inp = F.pixel_unshuffle(self._full, 2)           # (B, 12, H/2, W/2)
            y = self.head(self.decoder(self.skips(inp), tuple(inp.shape[-2:])))
            return torch.sigmoid(y + torch.logit(self._start(guide_lo).clamp(1e-3, 1 - 1e-3)))

    model = Unshuffled("mobilenet_v3_small", 1.0, GUIDED_DECODER, residual=True, full_res_skip=True,
                       exact_lines=True, exact_quantise=True, smooth_base=True)
    model.encoder = MobileNetEncoder("mobilenet_v3_small", 1.0, 12)
    last = model.decoder.blocks[-1]
    model.decoder.blocks[-1] = DecoderBlock(last.in_ch, 12, last.out_ch, 4)
    return model


def augmented_pairs(how: str, n: int = 384, size: int = 160, seed: int = 0):
    """``n`` training pairs sampled as ``teacher_pairs`` samples them, each changed before the teacher runs:
    ``how="permute"`` permutes the input's RGB channels (one of the six orders); ``"rescale"`` first shrinks
    the photo by a random factor in [0.5, 1] (its textures at new scales; a photo too small for the crop
    is used as it is)."""
    import numpy as np
    from skimage.transform import rescale

    from mobileunet.effects import CartoonParams, cartoon
    from mobileunet.photos import EffectPairs, photo_set, random_sample

    photos, rng = photo_set("train"), np.random.default_rng([seed, 7 if how == "permute" else 8])
    inputs, targets = [], []
    for _ in range(n):
        pool_ = photos
        if how == "rescale":
            name = sorted(photos)[int(rng.integers(len(photos)))]
            small = rescale(photos[name], rng.uniform(0.5, 1.0), channel_axis=-1, anti_aliasing=True)
            pool_ = {name: np.clip(small, 0, 1).astype(np.float32) if min(small.shape[:2]) >= size
                     else photos[name]}
        image, _ = random_sample(pool_, size, rng, 0.5, 0.2)
        if how == "permute":
            image = np.ascontiguousarray(image[..., rng.permutation(3)])
        inputs.append(image)
        targets.append(cartoon(image, CartoonParams()))
    to_tensor = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return EffectPairs(to_tensor(inputs), to_tensor(targets), [how] * n, {})


def run_probe(name: str) -> dict:
    from mobileunet.effect_distill import EffectConfig, distill_effect, evaluate_effect
    from mobileunet.env import set_seed
    from mobileunet.models import guided_effect_student
    from mobileunet.photos import PairSpec, teacher_pairs

    torch.set_num_threads(1)
    train = teacher_pairs(PairSpec("train", 384, 160, 0, 0.5), progress=False)
    val = teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)
    if name.startswith(("colour", "photos")):
        train = augmented_pairs("permute" if name.startswith("colour") else "rescale")
    set_seed(0)
    model = unshuffled_student() if name.startswith("network") else guided_effect_student(exact_quantise=True,
                                                                                            smooth_base=True)
    start = time.perf_counter()
    distill_effect(model, train, EffectConfig(steps=STEPS, batch_size=8, lr=5e-3, crop=None, seed=0, l1=1.0,
                                              ssim=0.5, eval_every=STEPS, desc=name))
    model.eval()
    held, fit = evaluate_effect(model, val), evaluate_effect(model, train)
    return {"probe": name, "psnr": round(held["psnr"], 2), "ssim": round(held["ssim"], 3),
            "line_f1": round(held["line_f1"], 3), "train_psnr": round(fit["psnr"], 2),
            "train_s": round(time.perf_counter() - start)}


PROBES = ("colour channels permuted in training (one of 6 orders per pair)",
          "network sees every full-resolution pixel (pixel_unshuffle)",
          "photos rescaled by 0.5-1x in training (textures at new scales)")


def main(argv=None) -> int:
    from mobileunet.checkpoint import load_checkpoint
    from mobileunet.env import data_dir
    from mobileunet.photos import PairSpec, teacher_pairs
    from mobileunet.tables import format_table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=data_dir() / "checkpoints" / "effect_student.pt")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--no-probes", action="store_true", help="skip the 800-step probes; keep the last run's")
    how.add_argument("--missing", action="store_true", help="run only the probes the last results lack")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    pairs = {"training": teacher_pairs(PairSpec("train", 384, 160, 0, 0.5), progress=False),
             "held-out": teacher_pairs(PairSpec("val", 48, 160, 0, 0.5), progress=False)}
    student, _ = load_checkpoint(args.checkpoint)
    student.eval()
    out = {"command": "python benchmarks/effect_generalisation.py", "checkpoint": args.checkpoint.name,
           "fit": fit_rows(student, pairs), "where": where_rows(student, pairs["held-out"])}
    last = RESULTS / "effect_generalisation.json"
    before = json.loads(last.read_text()) if last.is_file() and (args.no_probes or args.missing) else None
    kept = {r["probe"]: r for r in before["probes"]} if before else {}
    todo = [] if args.no_probes and before else [name for name in PROBES if name not in kept]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as workers:
        ran = dict(zip(todo, workers.map(run_probe, todo)))
    out["probes"] = [ran.get(name) or kept[name] for name in PROBES if name in ran or name in kept]
    if before:                                           # the kept probes' seconds are the last run's
        out.update(seconds=before["seconds"], tables_again=f"{'--missing' if args.missing else '--no-probes'}"
                   f"{' (' + ', '.join(todo) + ')' if todo else ''}, {round(time.perf_counter() - start)} s")
    else:
        out["seconds"] = round(time.perf_counter() - start)
    RESULTS.mkdir(exist_ok=True)
    last.write_text(json.dumps(out, indent=1) + "\n")
    levers = json.loads((RESULTS / "effect_levers.json").read_text())["rows"]
    shipped_recipe = next(r for r in levers if r["lever"] == "both exact steps + self-guided start, L1 + SSIM")
    again = f"; tables made again with {out['tables_again']}" if "tables_again" in out else ""
    md = (f"# Effect student: what it learns from its training photos\n\nCommand: `{out['command']}` "
          f"({out['seconds']} s{again}); checkpoint `{out['checkpoint']}`; pairs 160x160, seed 0.\n\n"
          f"Half-resolution smoothing against the teacher's (pooled 2x2), and the final image against the "
          f"teacher, PSNR (dB):\n\n{format_table(out['fit'])}\n\n"
          f"Held-out pairs: where the smoothing's squared error is (the kinds overlap: a textured pixel can be "
          f"flat in the teacher's image):\n\n{format_table(out['where'])}\n\n"
          f"Probes, {STEPS} steps each (the shipped recipe at the same steps, `effect_levers.md`: held-out "
          f"{shipped_recipe['psnr']:.2f} dB / {shipped_recipe['ssim']:.3f} / {shipped_recipe['line_f1']:.3f}, "
          f"training {shipped_recipe['train_psnr']:.2f}):\n\n{format_table(out['probes'])}\n")
    (RESULTS / "effect_generalisation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
