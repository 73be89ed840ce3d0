"""`python -m ssdfast.check`: the self-check users run after installing (CI runs it here, on the CPU)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ssdfast import check, ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def native():
    assert ops.backend() == "native", "ssdfast._C is not built: pip install --no-build-isolation -e ."
    return torch.ops.ssdfast


def _run_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssdfast.check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_check_passes_on_cpu(native):
    proc = _run_check("--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "torch " in out and "ssdfast._C built against torch" in out and "devices:" in out
    for name in check.OPS:  # every op, small and large inputs
        assert f"PASS  cpu     {name}" in out, name
    assert "FAIL" not in out
    assert "0 failed" in out.splitlines()[-1]


class _Wrong:
    """torch.ops.ssdfast with one op's result corrupted, or raising."""

    def __init__(self, op: str, raises: bool = False):
        self.op, self.raises = op, raises

    def __getattr__(self, name):
        real = getattr(torch.ops.ssdfast, name)
        if name != self.op:
            return real

        def wrong(*args):
            if self.raises:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            out = real(*args)
            if name == "box_iou":
                return out + 1e-3 * (out > 0.5)
            if name == "hard_negative_mask":
                flipped = out.clone()
                flipped[..., -1] = ~flipped[..., -1]
                return flipped
            raise NotImplementedError(name)

        return wrong


@pytest.mark.parametrize("op", ["box_iou", "hard_negative_mask"])
def test_a_wrong_kernel_result_fails_the_check(native, monkeypatch, capsys, op):
    monkeypatch.setattr(check, "_native_ops", lambda: _Wrong(op))
    assert check.main(["--quick", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  cpu     {op}" in out and "differs in" in out
    assert "PASS  cpu     batched_nms" in out  # the other ops still pass
    assert "0 failed" not in out.splitlines()[-1]


def test_a_raising_kernel_fails_the_check(native, monkeypatch, capsys):
    monkeypatch.setattr(check, "_native_ops", lambda: _Wrong("box_iou", raises=True))
    assert check.main(["--quick", "--device", "cpu"]) == 1
    assert "error: RuntimeError: CUDA error: an illegal memory access" in capsys.readouterr().out


def test_check_uses_the_reference_as_it_stands_at_run_time(native, monkeypatch, capsys):
    from ssdfast.ops import reference

    monkeypatch.setattr(reference, "decode_boxes",
                        lambda loc, priors, variances: reference.encode_boxes(loc, priors, variances))
    assert check.main(["--quick", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  cpu     decode_boxes" in out and "PASS  cpu     encode_boxes" in out


def test_check_without_the_native_kernels_exits_nonzero():
    proc = _run_check("--quick", env={"SSDFAST_BACKEND": "reference"})
    assert proc.returncode == 1
    assert "not in use" in proc.stdout


def test_compare_rules():
    a = torch.tensor([1.0, float("nan"), 3.0])
    assert check.compare(a, a.clone()) == ""  # NaN == NaN in the same place
    assert "differs in 1 of 3" in check.compare(a, torch.tensor([1.0, float("nan"), 3.0 + 1e-6]))
    assert check.compare(a, torch.tensor([1.0, float("nan"), 3.0 + 1e-6]), tols=(1e-5,)) == ""
    assert "int64" in check.compare(torch.tensor([1]), torch.tensor([1.0]))
    assert "2 outputs" in check.compare((a, a), a)


# ----------------------------------------------------------------------------- the GPU machine's scripts


def test_sanitize_ops_script_runs_on_cpu(native):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sanitize_ops", "--device", "cpu", "--small"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in check.OPS:  # every op is called
        assert f"ok    {name}" in proc.stdout, name
