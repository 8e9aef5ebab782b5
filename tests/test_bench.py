"""The benchmark's plumbing on a made-up result: tables, ratios, files. (Timings are never tested.)"""
import json

import pytest

from mobileunet import bench


def fake_result():
    rows = []
    for model, params, gflops, ms in [(bench.STUDENT, 5e5, 0.4, 5.0),
                                      ("UNet teacher (base 32)", 7.8e6, 24.0, 100.0),
                                      ("smp Unet-MobileNetV2", 6.6e6, 6.7, 20.0)]:
        for threads in (1, 2):
            for rt in ("eager", "onnxruntime"):
                rows.append({"model": model, "runtime": rt, "threads": threads, "input": "1x3x256x256",
                             "median_ms": ms / threads, "iqr_ms": 0.1, "min_ms": ms / threads, "runs": 3,
                             "params": params, "gflops": gflops, "gflop_per_s": gflops / ms * 1e3,
                             "pct_of_peak": 10.0})
    machine = {"cpu": "Test CPU", "cores": 2, "torch": "x", "date": "today", "bench_seconds": 1.0}
    return {"machine": machine, "config": {"sizes": [256], "threads": [1, 2], "repeats": 3},
            "peak_gflops": {"1": {"peak": 100.0}, "2": {"peak": 200.0}}, "rows": rows}


def test_summary_and_ratios():
    result = fake_result()
    table = bench.summary_table(result, 256)
    assert [r["model"] for r in table.rows] == [bench.STUDENT, "UNet teacher (base 32)",
                                                "smp Unet-MobileNetV2"]
    assert set(table.rows[0]) >= {"params (M)", "GFLOPs", "ORT 1t ms", "eager 2t ms"}
    ratios = bench.student_ratios(result)
    teacher = [r for r in ratios if r["vs"].startswith("UNet") and r["threads"] == 1][0]
    assert teacher["FLOPs x"] == pytest.approx(60) and teacher["latency x"] == pytest.approx(20)


def test_write_results(tmp_path):
    paths = bench.write_results(fake_result(), tmp_path, "t")
    assert [p.name for p in paths] == ["t.json", "t.md", "t.png"]
    assert json.loads(paths[0].read_text())["machine"]["cpu"] == "Test CPU"
    md = paths[1].read_text()
    assert "Test CPU" in md and "## 256x256" in md and f"| {bench.STUDENT}" in md


def test_candidates_need_no_download():
    names = bench.candidates(quick=True)
    assert bench.STUDENT in names and "UNet teacher (base 32)" in names
    assert len(bench.candidates(quick=False)) > len(names)


def test_bench_is_a_command():
    from mobileunet.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick"])
    assert args.quick
