"""DDP on CPU: two processes launched by torchrun (gloo), only rank 0 writes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssdfast.engine import distributed as dist_utils
from ssdfast.engine.run_logs import read_metrics

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = dist_utils.init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    assert device == torch.device("cpu")
    t = torch.ones(2)
    assert dist_utils.all_reduce_sum(t) is t and dist_utils.get_world_size() == 1


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    from ssdfast.data.synthetic import generate

    data = tmp_path / "voc"
    generate(data, format="voc", num_images=20, image_size=96, seed=0, num_classes=3)
    folder = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
        "-m", "ssdfast.cli.train",
        "--dataset-type", "voc", "--datasets", str(data), "--validation-dataset", str(data),
        "--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25", "--resolution", "96",
        "--batch-size", "4", "--num-epochs", "2", "--num-workers", "0", "--lr", "0.01",
        "--scheduler", "cosine", "--debug-steps", "1", "--device", "cpu", "--model-dir", str(folder),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # 16 training images over 2 ranks with batch 4: 2 steps per epoch, 4 in all
    records = read_metrics(folder / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]  # one writer: no duplicates
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and "mAP" in epochs[-1]
    ckpt = torch.load(folder / "last.pth", weights_only=True)
    assert ckpt["train_state"]["step"] == 4 and ckpt["train_state"]["epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved from the unwrapped model
    assert "2 processes" in (folder / "train.log").read_text()
