"""Cost tools: FLOPs equal the formulas, memory and latency tables have the promised structure.

Timings are never asserted, only the shape of what comes back.
"""
import pytest
import torch
from torch import nn

from mobileunet.blocks import DepthwiseSeparable
from mobileunet.profile import (Table, activation_memory, count_flops, flops_by_layer_type,
                                measure_latency, peak_gflops)


@pytest.mark.parametrize("cin,cout,k,h,w", [(3, 16, 3, 32, 32), (16, 8, 1, 20, 24), (8, 8, 5, 11, 9)])
def test_conv_flops_equal_the_formula(cin, cout, k, h, w):
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    assert count_flops(conv, torch.zeros(1, cin, h, w)) == 2 * k * k * cin * cout * h * w


def test_depthwise_separable_flops_and_ratio():
    cin, cout, k, h, w = 32, 64, 3, 16, 16
    block = DepthwiseSeparable(cin, cout, kernel=k)
    x = torch.zeros(1, cin, h, w)
    separable = count_flops(block, x)
    assert separable == 2 * (k * k * cin + cin * cout) * h * w
    standard = 2 * k * k * cin * cout * h * w
    assert separable / standard == pytest.approx(1 / cout + 1 / k**2)
    assert flops_by_layer_type(block, x) == {"depthwise 3x3": 2 * k * k * cin * h * w,
                                             "conv 1x1": 2 * cin * cout * h * w}


def test_activation_memory_counts_every_leaf_output():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    mem = activation_memory(model, torch.zeros(1, 1, 16, 16))
    assert mem["total_mb"] * 2**20 == 4 * (4 * 256 + 4 * 256 + 2 * 256)
    assert mem["largest_layer"] == "0"


def test_latency_table_structure_eager_and_onnxruntime():
    models = {"a": nn.Conv2d(3, 4, 3, padding=1), "b": DepthwiseSeparable(3, 4)}
    table = measure_latency(models, (1, 3, 16, 16), threads=(1,), runtimes=("eager", "onnxruntime"),
                            warmup=1, repeats=3)
    assert isinstance(table, Table) and len(table) == 4
    assert {(r["model"], r["runtime"]) for r in table.rows} == {
        ("a", "eager"), ("b", "eager"), ("a", "onnxruntime"), ("b", "onnxruntime")}
    row = table.rows[0]
    assert set(row) >= {"model", "runtime", "threads", "input", "median_ms", "iqr_ms", "min_ms"}
    assert row["input"] == "1x3x16x16" and row["median_ms"] > 0
    md = table.where(runtime="eager").to_markdown(["model", "median_ms"])
    assert md.splitlines()[0].startswith("| model") and len(md.splitlines()) == 4


def test_latency_rejects_an_unknown_runtime():
    with pytest.raises(ValueError, match="runtime"):
        measure_latency({"a": nn.Identity()}, (1, 1, 4, 4), runtimes=("tensorrt",))


def test_peak_gflops_reports_both_kernels():
    peak = peak_gflops(threads=1, repeats=1)
    assert {"matmul", "conv3x3", "conv3x3_ort", "peak"} == set(peak)
    assert peak["peak"] == max(v for k, v in peak.items() if k != "peak")


def test_the_dynamo_exporter_path_round_trips():
    from mobileunet.blocks import mobilenet_v3_block
    from mobileunet.profile import onnx_bytes, ort_session

    torch.manual_seed(0)
    block = mobilenet_v3_block(8, 8, 16).eval()
    x = torch.randn(1, 8, 12, 10)
    session = ort_session(onnx_bytes(block, x, exporter="dynamo"))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert float((torch.from_numpy(got) - block(x)).abs().max()) < 1e-5


def test_latency_times_the_example_it_is_given():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x

    example = torch.rand(1, 3, 4, 4)
    measure_latency({"spy": Spy()}, (1, 3, 4, 4), warmup=0, repeats=2, example=example)
    assert len(seen) == 2 and all(torch.equal(x, example) for x in seen)
    with pytest.raises(ValueError, match="example must be a tensor of input_shape"):
        measure_latency({"spy": Spy()}, (1, 3, 4, 4), example=torch.rand(1, 3, 5, 5))


def test_ort_op_times_lists_each_operator_of_the_graph():
    from mobileunet.profile import onnx_bytes, ort_op_times

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)).eval()
    x = torch.rand(1, 3, 16, 16)
    rows = ort_op_times(onnx_bytes(model, x), x, runs=3)
    ops = {r["op"] for r in rows}
    assert "AveragePool" in ops and ops & {"Conv", "FusedConv"}
    assert all(r["nodes"] >= 1 and r["ms"] >= 0 for r in rows)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    with pytest.raises(ValueError, match="runs=0"):
        ort_op_times(onnx_bytes(model, x), x, runs=0)


def test_latency_stops_early_past_max_seconds():
    table = measure_latency({"a": nn.Identity()}, (1, 1, 4, 4), repeats=50, warmup=0, max_seconds=0.0)
    assert table.rows[0]["runs"] == 3
