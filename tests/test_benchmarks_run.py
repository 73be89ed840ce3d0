"""benchmarks/run.py: both ways of starting it work, and committed results change only when asked."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_starts_as_a_script_and_as_a_module(tmp_path):
    for cmd in ([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
                [sys.executable, "-m", "benchmarks.run", "--help"]):
        out = subprocess.run(cmd, cwd=tmp_path if cmd[1].endswith(".py") else ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--save" in out.stdout


def test_results_are_written_only_when_asked(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import run
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setitem(run.SECTIONS, "fake", lambda settings: "| a | b |\n|---|---|\n| 1 | 2 |")
    results = ROOT / "benchmarks" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    assert run.main(["--section", "fake", "--no-chart"]) == 0
    assert "| 1 | 2 |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == before
    out = tmp_path / "mine.md"
    assert run.main(["--section", "fake", "--no-chart", "--output", str(out)]) == 0
    assert "| 1 | 2 |" in out.read_text()


def test_memory_format_table_times_both_layouts_and_what_ssdfast_train_picks(capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import memory_format
    finally:
        sys.path.remove(str(ROOT))
    assert memory_format.main(["--networks", "mb3-small-ssd-lite", "--rounds", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| mb3-small-ssd-lite (300)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[4] in ("NCHW", "channels-last")
    assert cells[5].split()[0] in ("NCHW", "channels-last")  # what ssdfast-train's own measurement picks


def test_deploy_rows_score_the_export_and_its_int8_files_beside_pytorch(trained, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import deploy_cases
    finally:
        sys.path.remove(str(ROOT))
    import shutil

    checkpoint = tmp_path / "model" / "best.pth"  # its exports are written beside it
    checkpoint.parent.mkdir()
    shutil.copy(trained["checkpoint"], checkpoint)
    monkeypatch.setattr(deploy_cases, "trained_model", lambda work, net, width: (checkpoint, trained["data"]))
    rows = deploy_cases.deploy_rows(tmp_path, [("mb2-ssd-lite", 0.25)], runtimes=("onnxruntime",), log=lambda _: None)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]
    assert [c[1] for c in cells] == ["PyTorch (torch)", "model.onnx (fp32)", "model-int8-tensorrt.onnx (int8)",
                                     "model-int8-cpu.onnx (int8)"]
    pytorch = float(cells[0][3])
    assert pytorch > 0.3 and abs(float(cells[1][3]) - pytorch) < 0.005  # FP32 export: PyTorch's mAP
    assert all(float(c[5]) > 0 for c in cells[1:]) and all(c[2] == "onnxruntime" for c in cells[1:])
