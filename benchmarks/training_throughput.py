"""Training throughput, images per second, for the ways ``fit`` can run on this machine (issue 21).

    python benchmarks/training_throughput.py               # 3 rounds, ~3 minutes on 2 cores
    python benchmarks/training_throughput.py --rounds 1    # a quick look

One training step of the course's default student on the generated cells
(whole 128x128 images, batch 8, weighted BCE, AdamW), timed over 20 steps
after 3 untimed ones, in a fresh process each time: one process with one
thread and with two; two processes with one thread each under
``torch.distributed.run`` (gloo, ``DistributedDataParallel``, the batch of 8
split 4 + 4); bfloat16 autocast and channels-last on one thread; on CUDA, when
there is a GPU, fp32 and bf16. The configurations take turns round by round,
so load from elsewhere hits all of them; the table gives the median over the
rounds, the spread (lowest to highest) and the ratio to one process with one
thread, measured in the same run. Writes ``benchmarks/results/training_throughput.json``
and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BATCH, SIZE, WARMUP, TIMED = 8, 128, 3, 20

CONFIGS = [
    # name, processes, threads per process, device, precision, channels_last
    ("1 process, 1 thread, fp32", 1, 1, "cpu", "fp32", False),
    ("1 process, 2 threads, fp32", 1, 2, "cpu", "fp32", False),
    ("2 processes (gloo), 1 thread each, fp32", 2, 1, "cpu", "fp32", False),
    ("1 process, 1 thread, bf16 autocast", 1, 1, "cpu", "bf16", False),
    ("1 process, 1 thread, channels-last", 1, 1, "cpu", "fp32", True),
    ("1 process, 1 thread, bf16 + channels-last", 1, 1, "cpu", "bf16", True),
    ("CUDA, fp32", 1, 1, "cuda", "fp32", False),
    ("CUDA, bf16 autocast", 1, 1, "cuda", "bf16", False),
]


def worker(spec: dict) -> None:
    """One configuration in this process (or this rank): print its images per second as JSON (rank 0)."""
    import torch

    from mobileunet.commands.runs import start_run
    from mobileunet.data import cells_splits
    from mobileunet.losses import weighted_bce_loss
    from mobileunet.models import default_student
    from mobileunet.train import TrainConfig, fit, world

    torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(threads=spec["threads"])
    start_run(args)                                    # joins the gloo group under torch.distributed.run
    train_set, _ = cells_splits(64, 1, size=SIZE, seed=0)
    torch.manual_seed(0)
    model = default_student(in_channels=1, out_channels=1)
    stamps = []

    def step_loss(net, image, mask, weight):
        stamps.append(time.perf_counter())
        return weighted_bce_loss(net(image), mask, weight), {}

    cfg = TrainConfig(steps=WARMUP + TIMED + 1, batch_size=BATCH, crop=None, eval_every=10**6,
                      device=spec["device"], precision=spec["precision"], channels_last=spec["channels_last"],
                      desc="throughput")
    fit(model, train_set, None, cfg, step_loss)
    if spec["device"] == "cuda":
        torch.cuda.synchronize()
    rank, _ = world()
    if rank == 0:                                      # TIMED whole steps between the stamps
        print(json.dumps({"images_per_s": TIMED * BATCH / (stamps[WARMUP + TIMED] - stamps[WARMUP])}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_config(config: tuple) -> float:
    name, procs, threads, device, precision, channels_last = config
    spec = json.dumps({"threads": threads, "device": device, "precision": precision,
                       "channels_last": channels_last})
    script = [str(Path(__file__).resolve()), "--worker", spec]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *script]
           if procs > 1 else [sys.executable, *script])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MOBILEUNET_FAST": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{name}: {done.stderr[-1500:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)["images_per_s"]


def main(argv=None) -> int:
    import torch

    from mobileunet.tables import format_table, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    configs = [c for c in CONFIGS if c[3] != "cuda" or torch.cuda.is_available()]
    cores = os.cpu_count() or 1
    configs = [c for c in configs if c[1] * c[2] <= cores]
    start = time.perf_counter()
    seen = {c[0]: [] for c in configs}
    for _ in range(args.rounds):                       # take turns: a burst of load hits every configuration
        for c in configs:
            seen[c[0]].append(run_config(c))
    base = statistics.median(seen[configs[0][0]])
    rows = [{"configuration": name, "images/s": statistics.median(v), "lowest": min(v), "highest": max(v),
             "x 1 process, 1 thread": statistics.median(v) / base} for name, v in seen.items()]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    out = {"command": "python benchmarks/training_throughput.py" + (f" --rounds {args.rounds}" if args.rounds != 3
                                                                     else ""),
           "recipe": f"default_student on generated cells, whole {SIZE}x{SIZE} images, batch {BATCH} (all "
                     f"processes together), {TIMED} timed steps after {WARMUP}, a fresh process each time",
           "rounds": args.rounds, "machine": {"cpu": cpu, "cores": cores, "torch": torch.__version__,
                                              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                              else None},
           "seconds": round(time.perf_counter() - start), "rows": rows, "raw": seen,
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    table = format_table(rows, floatfmt=".3g")
    md = (
        f"# Training throughput\n\nCommand: `{out['command']}`; {out['recipe']}; median over {args.rounds} "
        f"rounds in which the configurations take turns, lowest and highest round, ratio to one process "
        f"with one thread in the same run. {cpu}, {cores} cores, torch {torch.__version__}; "
        f"{out['measured']}, {out['seconds']} s.\n\n{table}\n")
    write_results(RESULTS, "training_throughput", out, md, echo=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
