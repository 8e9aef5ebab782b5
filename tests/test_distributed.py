"""Training in several processes (``torchrun``, ``DistributedDataParallel``, gloo on CPU) takes the same steps
as one process with the whole batch, and only rank 0 writes the checkpoint and its manifest."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mobileunet.train import TrainConfig, fit, world

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _data():
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(16, 1, 16, 16, generator=gen), (torch.rand(16, 1, 16, 16, generator=gen) > 0.5)
                         .float())


def _model():
    torch.manual_seed(0)                       # no BatchNorm: per-process statistics cannot differ from one's
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def _fit(model):
    def step_loss(net, image, mask, weight):
        return nn.functional.binary_cross_entropy_with_logits(net(image), mask), {}

    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-2, crop=8, eval_every=10, device="cpu", desc="ddp")
    return fit(model, _data(), None, cfg, step_loss)


def _rank(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    model = _model()
    hist = _fit(model)
    assert world() == (rank, 2)
    if rank == 0:
        torch.save({"state": model.state_dict(), "loss": hist["loss"], "world": hist["config"]["world_size"]}, out)
    torch.distributed.destroy_process_group()


def test_two_processes_take_the_same_steps_as_one_with_the_whole_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_rank, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    two = torch.load(out, weights_only=True)
    one = _model()
    hist = _fit(one)
    assert two["world"] == 2 and hist["config"]["world_size"] == 1
    for k, v in one.state_dict().items():
        assert torch.allclose(two["state"][k], v, atol=1e-6), k        # the same weights after 3 steps
    assert two["loss"] == pytest.approx(hist["loss"], abs=1e-6)          # the logged loss is the whole batch's


def test_the_batch_must_split_evenly_between_the_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["mobileunet.train"], "world", lambda: (0, 3))
    with pytest.raises(ValueError, match="multiple of 3"):
        _fit(_model())


def test_torchrun_trains_in_two_processes_and_rank_0_writes_one_checkpoint(tmp_path):
    out = tmp_path / "run.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOBILEUNET_FAST": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mobileunet", "train", "--model", "default_student", "--steps", "2", "--n-train", "8",
           "--n-val", "4", "--size", "32", "--batch-size", "4", "--crop", "0", "--eval-every", "2",
           "--threads", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.pt"]
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["training"]["world_size"] == 2 and manifest["training"]["batch_size"] == 4
    assert done.stdout.count("wrote ") == 1                                # one process wrote it
