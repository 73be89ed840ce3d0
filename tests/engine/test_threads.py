"""ssdfast.threads: workers and threads sized from the cores this process may use."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ssdfast import threads


def test_sizes_follow_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert threads.available_cores() == 2
    assert threads.default_num_workers() == 1  # fewer than torch's "suggested max" (the cores): no warning
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert threads.default_num_workers() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert threads.default_num_workers() == 4 and threads.default_num_workers(limit=8) == 8


def test_plan_cpu_leaves_the_workers_their_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert threads.plan_cpu(3) == 5 and torch.get_num_threads() == 5
        assert threads.plan_cpu(3, limit=2) == 2  # never more than the caller allows
        assert threads.plan_cpu(20) == 1
        assert threads.plan_cpu(2, "cuda") == 1
        assert threads.plan_cpu(3, busy_workers=False) == 8  # CPU training: the workers idle most of a step
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
        assert threads.plan_cpu(1) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_quiet_openmp_before_torch_is_imported():
    code = ("import os, sys; from ssdfast.threads import quiet_openmp; took = quiet_openmp(); "
            "print(took, os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice stays
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "ACTIVE", "False"]


def test_planned_cpu_sizes_the_block_and_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threads.planned_cpu(None) as workers:  # default: one core kept for the network, at most 4
        assert workers == 4 and torch.get_num_threads() == 4
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with threads.planned_cpu(2, "cuda") as workers:
            assert workers == 2 and torch.get_num_threads() == 1
            raise RuntimeError("the block fails")
    assert torch.get_num_threads() == before
