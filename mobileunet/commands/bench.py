"""``python -m mobileunet bench``: time the student beside its teacher and peers, write JSON and tables.

The command half of ``mobileunet.bench``; the library never imports this module.
"""
from __future__ import annotations

import argparse

from ..bench import BenchConfig, machine_line, quick_config, run_bench, summary_table, write_results
from .args import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m mobileunet bench``."""
    parser.add_argument("--quick", action="store_true", help="one size, fewer models and repeats")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the results")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed runs per model (default 12, quick 6)")
    parser.add_argument("--no-export", action="store_true",
                        help="skip the student's exported runtimes (ExecuTorch fp32/int8, ORT int8)")


def run(args: argparse.Namespace) -> int:
    cfg = quick_config() if args.quick else BenchConfig()
    cfg.out_dir = args.out
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if getattr(args, "no_export", False):
        cfg.exported = ()
    result = run_bench(cfg)
    paths = write_results(result, cfg.out_dir, cfg.name)
    print(machine_line(result))
    for size in cfg.sizes:
        print(f"\n{size}x{size}\n{summary_table(result, size).to_markdown()}")
    print("\nwrote", ", ".join(str(p) for p in paths))
    return 0
