"""benchmarks/gpu_check.sh, the GPU machine's script, run here with its CPU stand-ins (--dry-run): a typo,
a missing file or a wrong path fails here, not during a GPU stay."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
STEPS = ["env", "build", "check", "pytest", "bench", "memcheck", "racecheck", "synccheck", "initcheck"]


def _run(out, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("SSDFAST_BACKEND", "GPU_CHECK_BUDGET")}
    full.update(PYTHON=sys.executable, **(env or {}))
    return subprocess.run(
        ["bash", SCRIPT, *args, str(out)], capture_output=True, text=True, timeout=timeout, env=full, cwd=ROOT
    )


def _rows(out) -> dict[str, list[str]]:
    """summary.md's step rows: step -> [result, seconds, cap, log]."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("step", "---"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = _rows(out)
    assert list(rows) == STEPS  # in this order: the run's purpose first, the sanitizers last
    for step, (result, seconds, cap, log) in rows.items():
        assert result == "ok", f"{step}: {result}\n" + (out / log).read_text()[-3000:]
        assert int(seconds) <= int(cap)
        assert (out / log).read_text().rstrip().endswith(f"== {step}: ok")
    caps = {step: int(cells[2]) for step, cells in rows.items()}
    assert sum(caps[s] for s in STEPS[:5]) <= 8.5 * 60  # build, check, tests, benchmark: capped under 8.5 min
    assert re.search(r"^\d+ s in all \(budget 510 s\)", (out / "summary.md").read_text(), re.M)

    # What each stand-in ran: the build's settings, the CPU check, the CUDA test file, every table row.
    assert "TORCH_CUDA_ARCH_LIST=9.0" in (out / "build.log").read_text()
    assert "ssdfast._C: {" in (out / "build.log").read_text()
    assert re.search(r"ssdfast\.check: \d+ checks on cpu: \d+ passed, 0 failed", (out / "check.log").read_text())
    junit = (out / "pytest-cuda.xml").read_text()
    assert "test_cuda" in junit and re.search(r'skipped="[1-9]\d*"', junit) and 'failures="0"' in junit
    table = (out / "cuda-dry-run.md").read_text()
    assert table.startswith("DRY RUN") and "ssd_postprocess (untrained model)" in table
    for tool in ("memcheck", "racecheck", "synccheck", "initcheck"):
        log = (out / f"{tool}.log").read_text()
        assert f"--tool {tool} --error-exitcode 1" in log and "sanitize_ops: all calls ran" in log


def test_a_failing_step_fails_the_run_and_says_so(tmp_path):
    out = tmp_path / "out"
    # The check refuses to run without the compiled kernels: exit 1, recorded, and the run exits 1.
    proc = _run(out, "--dry-run", "--only", "check", env={"SSDFAST_BACKEND": "reference"})
    assert proc.returncode == 1, proc.stdout[-3000:]
    rows = _rows(out)
    assert list(rows) == ["env", "check"]  # --only: those steps (env always)
    assert rows["env"][0] == "ok" and rows["check"][0] == "exit 1"


def test_steps_past_the_budget_are_skipped(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, "--dry-run", env={"GPU_CHECK_BUDGET": "0"}, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = _rows(out)
    assert list(rows) == STEPS and all(cells[0] == "skipped" for cells in rows.values())


def test_unknown_option_is_refused(tmp_path):
    proc = _run(tmp_path / "out", "--dryrun", timeout=60)
    assert proc.returncode == 2 and "unknown option --dryrun" in proc.stderr
