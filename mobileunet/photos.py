"""Real photos and the teacher's before/after pairs for lesson 06, cached on disk.

* **Photos** ship inside scikit-image and matplotlib (no download), split *by photo*: a
  held-out photo never lends a crop to training. Oxford-IIIT Pet photos join
  the training photos when a user has downloaded them (opt-in, ``pets.py``).
* **Samples** are random crops with flips and colour jitter; with probability
  ``occlusion`` a synthetic occluder (sunglasses or a hand) is pasted on the
  input *before* the teacher runs, as in YouTube's pipeline, so the teacher's
  output, and the student's lesson, includes it.
* **Pairs** ``(input, teacher(input))`` are made once and cached under
  ``data/cache/`` with a manifest. The file name carries a hash of everything
  that shapes the pairs (effect and its parameters, photo names and pixels,
  count, size, seed, occlusion rate), so changing any of them makes new pairs.
  Same seed, same pairs.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .checkpoint import atomic_save, atomic_write_text, file_lock, sha256
from .effects import cartoon, CartoonParams, EFFECT_VERSION, smoothing_stages
from .env import data_dir
from .pets import PetSegmentation, pets_available
from .validate import whole_number

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle", "immunohistochemistry", "hubble_deep_field", "retina",
                "grace_hopper", "china", "flower")
VAL_PHOTOS = ("chelsea", "coffee")
"""The bundled colour photos that load offline, split by photo: scikit-image's, matplotlib's
portrait of Grace Hopper (its ``sample_data``) and scikit-learn's two sample photos (a temple
in China and a flower, ``sklearn.datasets.load_sample_image``; CC BY 2.0). Held out: a cat
and a cup of coffee, subjects no training photo shows. ``data/README.md`` lists their sources
and licences."""
MAX_SIDE = 512
"""Photos larger than this on their short side are shrunk to it, so a crop holds a scene, not a texture."""


def load_photo(name: str) -> np.ndarray:
    """One bundled photo as ``(H, W, 3)`` float32 in [0, 1] (``"motorcycle"`` is the stereo pair's left view)."""
    import matplotlib.cbook
    import matplotlib.image
    import skimage.data
    from skimage.transform import rescale
    from skimage.util import img_as_float32

    if name not in TRAIN_PHOTOS + VAL_PHOTOS:
        raise ValueError(f"unknown photo {name!r}: use one of {TRAIN_PHOTOS + VAL_PHOTOS}")
    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        image = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        image = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    else:
        image = getattr(skimage.data, name)()
    image = img_as_float32(image[..., :3])
    short = min(image.shape[:2])
    if short > MAX_SIDE:
        image = rescale(image, MAX_SIDE / short, channel_axis=-1, anti_aliasing=True).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def pet_photos(n: int, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """The first ``n`` Oxford-IIIT Pet training photos, if downloaded (``pets.pets_available``); else ``{}``.

    Never downloads. They can join ``photo_set("train", ...)``; held-out photos stay scikit-image's.
    """
    if n <= 0 or not pets_available(root):
        return {}
    base = PetSegmentation("trainval", root=root).base
    out = {}
    for i in range(min(n, len(base))):
        image = np.asarray(base[i][0].convert("RGB"), dtype=np.float32) / 255.0
        out[f"pet:{Path(base._images[i]).stem}"] = image
    return out


def dead_leaves(size: int = 384, seed: int = 0, n_shapes: int = 500) -> np.ndarray:
    """A procedural image with photo-like statistics: the dead-leaves model, ``(size, size, 3)`` in [0, 1].

    Discs and rectangles fall on top of one another, each hiding what lies
    under it, with radii drawn from a power law (density ~ r^-3, scale
    invariant like natural images; Lee, Mumford & Huang 2001). Each shape has
    its own colour, a linear shading and a fine noise texture, so the picture
    has flat regions, textured regions and sharp occluding edges: what an
    edge-preserving effect acts on. Used to train image-to-image students in
    place of photos (Achddou, Gousseau & Ladjal, "Synthetic images as a
    regularity prior for image restoration neural networks", 2021).
    """
    rng = np.random.default_rng([seed, 11])
    rmin, rmax = 4.0, size / 3
    u = rng.random(n_shapes)
    radii = 1 / np.sqrt(u / rmin**2 + (1 - u) / rmax**2)         # inverse CDF of density ~ r^-3 on [rmin, rmax]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.full((size, size, 3), rng.random(3), np.float32)
    for r in np.sort(radii)[::-1]:                                 # big ones first, small ones on top
        cy, cx = rng.uniform(-r, size + r, 2)
        if rng.random() < 0.5:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            a, h = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)
            u_, v_ = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a), -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
            inside = (np.abs(u_) < r) & (np.abs(v_) < r * h)
        if not inside.any():
            continue
        grey = rng.random() ** 1.3                                 # more dark shapes than bright, as in photos
        colour = np.clip(grey + rng.uniform(0.1, 0.6) * (rng.random(3) - 0.5), 0, 1)   # muted colours
        gy, gx = rng.normal(0, 0.3 / max(r, 1), 2)
        shade = 1 + gy * (yy[inside] - cy) + gx * (xx[inside] - cx)
        texture = rng.normal(0, rng.uniform(0, 0.06), inside.sum())
        image[inside] = colour * shade[:, None] + texture[:, None]
    from scipy.ndimage import gaussian_filter
    image = gaussian_filter(image, sigma=(0.7, 0.7, 0))           # a lens: no edge is one pixel sharp
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def photo_set(split: str, extra_pets: int = 0, dead_leaves_images: int = 0) -> dict[str, np.ndarray]:
    """``{name: photo}`` of a split: ``"train"`` or ``"val"``.

    Training can add up to ``extra_pets`` Oxford-IIIT Pet photos (if downloaded)
    and ``dead_leaves_images`` procedural images (``dead_leaves``, named
    ``dead_leaves:0``, ...). The held-out split is always the same two photos.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}: use 'train' or 'val'")
    photos = {name: load_photo(name) for name in (TRAIN_PHOTOS if split == "train" else VAL_PHOTOS)}
    if split == "train":
        photos.update(pet_photos(extra_pets))
        photos.update({f"dead_leaves:{i}": dead_leaves(seed=i) for i in range(dead_leaves_images)})
    return photos


# --- augmentation -------------------------------------------------------------------------------


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation, each scaled by up to ``1 +- strength``."""
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + s * (image - grey)                              # saturation
    image = image.mean() + c * (image - image.mean())              # contrast
    return np.clip(b * image, 0.0, 1.0).astype(np.float32)         # brightness


OCCLUDERS = ("sunglasses", "hand")


def paste_occluder(image: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A synthetic occluder drawn over the image: ``"sunglasses"`` or ``"hand"`` (random if None).

    Sunglasses: two dark, slightly tinted lenses with a bridge and a highlight.
    A hand: a skin-toned palm and four fingers and a thumb, shaded. Drawn with
    ``skimage.draw`` at a random place, scale and tone; the image is not modified.
    """
    from skimage.draw import ellipse, line_aa, polygon

    if kind is None:
        kind = OCCLUDERS[int(rng.integers(len(OCCLUDERS)))]
    if kind not in OCCLUDERS:
        raise ValueError(f"occluder {kind!r}: use one of {OCCLUDERS}")
    out = image.copy()
    H, W = image.shape[:2]
    s = min(H, W) * rng.uniform(0.15, 0.3)                         # the occluder's scale, pixels
    cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
    if kind == "sunglasses":
        tint = rng.uniform(0.0, 0.15, size=3)
        for dx in (-0.55 * s, 0.55 * s):
            rr, cc = ellipse(cy, cx + dx, 0.32 * s, 0.45 * s, shape=(H, W))
            out[rr, cc] = tint
            rr, cc = ellipse(cy - 0.12 * s, cx + dx - 0.15 * s, 0.06 * s, 0.12 * s, shape=(H, W))
            out[rr, cc] = 0.6 * out[rr, cc] + 0.4                 # a highlight on each lens
        for t in np.linspace(-0.04, 0.04, 3) * s:
            rr, cc, val = line_aa(int(cy - 0.15 * s + t), int(cx - 0.15 * s), int(cy - 0.15 * s + t),
                                  int(cx + 0.15 * s))
            keep = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
            out[rr[keep], cc[keep]] = tint                         # the bridge
        return out
    skin = np.array([0.85, 0.62, 0.5]) * rng.uniform(0.6, 1.1)
    angle = rng.uniform(-0.6, 0.6)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def blob(y, x, ry, rx, shade):                                  # an ellipse in the hand's frame
        py, px = rot @ np.array([y, x]) * s
        rr, cc = ellipse(cy + py, cx + px, ry * s, rx * s, shape=(H, W), rotation=-angle)
        out[rr, cc] = np.clip(skin * shade, 0, 1)

    blob(0.0, 0.0, 0.5, 0.42, 1.0)                                  # palm
    for i, (x, length) in enumerate(((-0.33, 0.45), (-0.11, 0.55), (0.11, 0.52), (0.32, 0.42))):
        blob(-0.45 - length / 2, x, length / 2, 0.1, 0.92 + 0.03 * i)   # fingers
    blob(0.05, 0.5, 0.13, 0.3, 0.85)                                # thumb
    rr, cc = polygon(cy + np.array([0.4, 0.9, 0.9, 0.4]) * s, cx + np.array([-0.3, -0.3, 0.3, 0.3]) * s,
                     shape=(H, W))
    out[rr, cc] = np.clip(skin * 0.9, 0, 1)                         # wrist
    return out.astype(np.float32)


def random_sample(photos: dict[str, np.ndarray], size: int, rng: np.random.Generator,
                  occlusion: float = 0.5, jitter: float = 0.2) -> tuple[np.ndarray, str]:
    """One teacher input: a random ``size`` crop of a random photo, flipped, jittered, maybe occluded.

    Returns ``(image, photo_name)``.
    """
    names = sorted(photos)
    name = names[int(rng.integers(len(names)))]
    photo = photos[name]
    H, W = photo.shape[:2]
    if size > min(H, W):
        raise ValueError(f"crop {size} is larger than photo {name!r} ({H}x{W}): use size <= {min(H, W)}")
    y, x = int(rng.integers(H - size + 1)), int(rng.integers(W - size + 1))
    image = photo[y:y + size, x:x + size]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = color_jitter(np.ascontiguousarray(image), rng, jitter)
    if rng.random() < occlusion:
        image = paste_occluder(image, rng)
    return image, name


# --- the cached pairs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSpec:
    """What makes a set of teacher pairs; its ``digest`` names the cache file."""
    split: str = "train"
    n: int = 256
    size: int = 160
    seed: int = 0
    occlusion: float = 0.5
    jitter: float = 0.2
    extra_pets: int = 0
    dead_leaves: int = 0

    def __post_init__(self):
        if self.split not in ("train", "val"):
            raise ValueError(f"PairSpec.split={self.split!r}: use 'train' or 'val'")
        if self.split == "val" and (self.extra_pets or self.dead_leaves):
            raise ValueError("PairSpec: the held-out split is the bundled photos only; extra_pets and "
                             "dead_leaves add training images")
        for name in ("extra_pets", "dead_leaves"):
            value = getattr(self, name)
            whole_number(f"PairSpec.{name}", value, 0, 10_000, fix="a number of images")
        for name, low in (("n", 1), ("size", 16), ("seed", 0)):
            value = getattr(self, name)
            whole_number(f"PairSpec.{name}", value, low, 2**32 - 1)
        for name, top in (("occlusion", 1.0), ("jitter", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top:
                raise ValueError(f"PairSpec.{name}={value!r}: a number from 0 to {top:g}")


def _photo_hash(photos: dict[str, np.ndarray]) -> dict[str, str]:
    return {name: hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest()[:16]
            for name, p in sorted(photos.items())}


class EffectPairs(Dataset):
    """Teacher pairs as ``(input, target)`` tensors, each ``(3, S, S)`` in [0, 1].

    ``inputs``/``targets`` hold them all, ``names`` the photo of each, and
    ``manifest`` what made them (``PairSpec``, effect parameters, photo hashes,
    seconds the teacher took). Load or make them with ``teacher_pairs``.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], manifest: dict):
        self.inputs, self.targets, self.names, self.manifest = inputs, targets, list(names), manifest

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.targets[i]


def pair_manifest(spec: PairSpec, params: CartoonParams, photos: dict[str, np.ndarray]) -> dict:
    """The manifest of a pair set before it is made; ``hash`` covers everything in it."""
    body = {"spec": spec.__dict__, "effect": {"name": "cartoon", "version": EFFECT_VERSION,
                                              "params": params.to_dict()},
            "photos": _photo_hash(photos)}
    body["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return body


def teacher_pairs(spec: PairSpec, params: CartoonParams | None = None, cache_dir: str | Path | None = None,
                  progress: bool = True) -> EffectPairs:
    """The pairs ``spec`` describes, from the cache when it holds them, else made by the teacher and cached.

    The cache is ``cache_dir`` (default ``data/cache/``): a ``.pt`` of tensors
    (loaded with ``weights_only=True``) and a ``.json`` manifest, both named by
    the manifest's hash. Making them runs ``effects.cartoon`` once per pair.
    """
    params = params or CartoonParams()
    photos = photo_set(spec.split, spec.extra_pets, spec.dead_leaves)
    manifest = pair_manifest(spec, params, photos)
    cache = Path(cache_dir) if cache_dir is not None else data_dir() / "cache"
    stem = cache / f"effect_pairs_{spec.split}_{manifest['hash']}"
    pairs = _cached_pairs(stem, spec, manifest["hash"])
    if pairs is None:
        with file_lock(stem.with_suffix(".lock")):          # a second run needing the same pairs waits here
            pairs = _cached_pairs(stem, spec, manifest["hash"], quiet=True)   # the first may have made them
            if pairs is None:
                pairs = _make_pairs(stem, spec, params, photos, manifest, progress)
    pairs.cache_dir = cache                                 # teacher_hints caches beside them
    return pairs


def teacher_hints(pairs: EffectPairs, params: CartoonParams | None = None,
                  cache_dir: str | Path | None = None) -> torch.Tensor:
    """The teacher's intermediate images for ``pairs`` (``effects.smoothing_stages``), ``(N, 4, S, S)``, cached.

    Cached beside the pairs (``cache_dir``, default the folder ``teacher_pairs``
    read them from) as ``effect_hints_<split>_<hash>.pt`` (the pairs'
    manifest hash, which covers their spec, the effect's parameters and the
    photos): about 0.15 s of bilateral filtering per 160x160 pair the first time.
    """
    made_with = pairs.manifest.get("effect", {}).get("params") if isinstance(pairs.manifest, dict) else None
    params = params or (CartoonParams(**made_with) if isinstance(made_with, dict) else CartoonParams())
    digest = pairs.manifest.get("hash") if isinstance(pairs.manifest, dict) else None
    if digest is None or made_with != params.to_dict():
        return smoothing_stages(pairs.inputs, params)                 # pairs not from teacher_pairs: no cache
    cache = Path(cache_dir) if cache_dir is not None else getattr(pairs, "cache_dir", data_dir() / "cache")
    path = cache / f"effect_hints_{pairs.manifest['spec']['split']}_{digest}.pt"
    want = (len(pairs), 4, *pairs.inputs.shape[-2:])
    with file_lock(path.with_suffix(".lock")):
        try:
            blob = torch.load(path, weights_only=True) if path.is_file() else None
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            print(f"the cached hints {path} cannot be read ({type(err).__name__}): making them again")
            blob = None
        if isinstance(blob, dict) and blob.get("hash") == digest and isinstance(blob.get("hints"), torch.Tensor) \
                and tuple(blob["hints"].shape) == want:
            return blob["hints"]
        hints = smoothing_stages(pairs.inputs, params)
        atomic_save({"hash": digest, "hints": hints}, path)
        return hints


def _cached_pairs(stem: Path, spec: PairSpec, digest: str, quiet: bool = False) -> EffectPairs | None:
    """The cached pairs at ``stem`` if they are the ones ``spec`` describes, else None (saying why, once)."""
    import pickle

    if not (stem.with_suffix(".pt").is_file() and stem.with_suffix(".json").is_file()):
        return None
    try:
        stored = json.loads(stem.with_suffix(".json").read_text())
        raw = stem.with_suffix(".pt").read_bytes()               # read once: hashed, then loaded
        blob = torch.load(io.BytesIO(raw), weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        if not quiet:
            print(f"the cached pairs {stem.with_suffix('.pt')} cannot be read ({type(err).__name__}): "
                  f"making them again")
        return None
    want = (spec.n, 3, spec.size, spec.size)
    if isinstance(stored, dict) and "tensors_sha256" in stored and \
            hashlib.sha256(raw).hexdigest() != stored["tensors_sha256"]:
        if not quiet:
            print(f"the cached pairs {stem.with_suffix('.pt')} are not the file their manifest describes "
                  f"(sha256): making them again")
        return None
    if (isinstance(stored, dict) and stored.get("hash") == digest and isinstance(blob, dict)
            and all(isinstance(blob.get(k), torch.Tensor) and tuple(blob[k].shape) == want
                    and blob[k].dtype == torch.float32 and bool(((blob[k] >= 0) & (blob[k] <= 1)).all())
                    for k in ("inputs", "targets"))
            and len(stored.get("names", ())) == spec.n):
        return EffectPairs(blob["inputs"], blob["targets"], stored["names"], stored)
    if not quiet:
        print(f"the cached pairs {stem.with_suffix('.pt')} do not match their manifest ({spec.n} pairs of "
              f"{spec.size}x{spec.size} in [0, 1] expected): making them again")
    return None


def _make_pairs(stem: Path, spec: PairSpec, params: CartoonParams, photos, manifest: dict,
                progress: bool) -> EffectPairs:
    """Run the teacher on ``spec.n`` sampled crops and cache them at ``stem`` (tensors first, manifest last)."""
    import time

    from tqdm.auto import tqdm

    rng = np.random.default_rng([spec.seed, 0 if spec.split == "train" else 1])
    inputs, targets, names = [], [], []
    start = time.perf_counter()
    for _ in tqdm(range(spec.n), desc=f"teacher pairs ({spec.split})", disable=not progress):
        image, name = random_sample(photos, spec.size, rng, spec.occlusion, spec.jitter)
        inputs.append(image)
        targets.append(cartoon(image, params))
        names.append(name)
    to_tensor = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    manifest = {**manifest, "names": names, "teacher_seconds": round(time.perf_counter() - start, 2)}

    atomic_save({"inputs": to_tensor(inputs), "targets": to_tensor(targets)}, stem.with_suffix(".pt"))
    manifest["tensors_sha256"] = sha256(stem.with_suffix(".pt"))
    atomic_write_text(json.dumps(manifest, indent=1) + "\n", stem.with_suffix(".json"))   # written last
    return EffectPairs(to_tensor(inputs), to_tensor(targets), names, manifest)
