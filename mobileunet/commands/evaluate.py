"""``python -m mobileunet evaluate``: score a checkpoint on the cells validation split, beside its manifest."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoint import load_checkpoint, sha256
from ..data import CellsDataset
from ..manifest import read_manifest, validation_split, verify_checkpoint
from ..profile import count_params
from ..tables import format_table
from ..train import evaluate
from .args import positive_int, seed


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet evaluate``."""
    p.add_argument("checkpoint", type=Path, help="a .pt file written by train or distill")
    p.add_argument("--n-val", type=positive_int, default=None, help="validation images (default: manifest's, else 60)")
    p.add_argument("--size", type=positive_int, default=None, help="image side (default: manifest's, else 128)")
    p.add_argument("--data-seed", type=seed, default=None, help="data seed (default: manifest's, else 0)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="score the file even if its sha256 differs from its manifest's")


def run(args: argparse.Namespace) -> int:
    model, _ = load_checkpoint(args.checkpoint)
    manifest = read_manifest(args.checkpoint) if args.no_verify else verify_checkpoint(args.checkpoint)
    dataset = str((manifest or {}).get("data", {}).get("dataset", "cells"))
    if not dataset.startswith("cells"):
        raise ValueError(f"{args.checkpoint} was trained on {dataset}, and evaluate scores on the generated "
                         f"cells: its manifest's metrics are its score on that data's validation split")
    val = (manifest or {}).get("data", {}).get("val", {})
    n, size, data_seed = validation_split(manifest, args.n_val, args.size, args.data_seed)
    scores = evaluate(model, CellsDataset("val", n, size, data_seed))
    same_split = manifest is not None and (n, size, data_seed) == (val.get("n"), val.get("size"), val.get("seed"))
    out = {"checkpoint": str(args.checkpoint), "params": count_params(model),
           "data": {"split": "val", "n": n, "size": size, "seed": data_seed}, "metrics": scores}
    if same_split:
        out["manifest_metrics"] = {k: manifest["metrics"][k] for k in scores if k in manifest["metrics"]}
        out["sha256_matches"] = sha256(args.checkpoint) == manifest["checkpoint"]["sha256"]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.checkpoint}: {out['params']:,} parameters, {n} validation images of {size}x{size} "
          f"(data seed {data_seed})")
    rows = [{"": "now", **scores}]
    if same_split:
        rows.append({"": "manifest", **out["manifest_metrics"]})
        print(f"sha256 {'matches' if out['sha256_matches'] else 'DIFFERS FROM'} the manifest")
    print(format_table(rows, floatfmt=".4f"))
    return 0
