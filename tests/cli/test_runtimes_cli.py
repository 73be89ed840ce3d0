"""What ships, on the command lines: ssdfast-eval and ssdfast-detect run an exported .onnx (its labels
from the labels.txt beside it) and a checkpoint in another runtime, --preprocess detectnet feeds it as
a Jetson does, and ssdfast-export --check --data prints the PyTorch mAP and the export's side by side
(exit 1 beyond the margin)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from ssdfast.cli.detect import main as detect
from ssdfast.cli.eval import main as evaluate
from ssdfast.cli.export import main as export
from ssdfast.runtimes import default_runtime

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped(trained, tmp_path_factory):
    """The trained model exported (jetson format, batch 1) with its labels.txt, as ssdfast-export writes it."""
    folder = tmp_path_factory.mktemp("shipped")
    assert export([str(trained["checkpoint"]), "-o", str(folder / "model.onnx")]) == 0
    return folder / "model.onnx"


def _eval(argv, capsys, tmp_path):
    code = evaluate(argv + ["--device", "cpu", "--num-workers", "0", "--batch-size", "4", "--quiet",
                            "--eval-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((tmp_path / "metrics.json").read_text()), out


def test_eval_scores_the_exported_file(trained, shipped, capsys, tmp_path):
    data = str(trained["data"])
    pytorch, _ = _eval(["--trained-model", str(trained["checkpoint"]), "--dataset", data, "--runtime", "torch"],
                       capsys, tmp_path / "a")
    assert pytorch["runtime"] == "torch" and pytorch["model_kind"] == "ssdfast" and pytorch["mAP"] > 0.3
    default, _ = _eval(["--trained-model", str(trained["checkpoint"]), "--dataset", data], capsys, tmp_path / "x")
    assert default["runtime"] == default_runtime(None, "cpu")  # the CPU default, chosen by measurement
    assert default["mAP"] == pytest.approx(pytorch["mAP"], abs=0.005)
    onnx, out = _eval(["--trained-model", str(shipped), "--dataset", data], capsys, tmp_path / "b")
    assert onnx["runtime"] == "onnxruntime" and onnx["model_kind"] == "onnx" and onnx["preprocess"] == "ssdfast"
    assert onnx["mAP"] == pytest.approx(pytorch["mAP"], abs=0.005)  # what ships scores what PyTorch scores
    assert f"mAP: {onnx['mAP']:.4f}" in out
    detectnet, _ = _eval(["--trained-model", str(shipped), "--dataset", data, "--preprocess", "detectnet"], capsys,
                         tmp_path / "c")
    torch_detectnet, _ = _eval(["--trained-model", str(trained["checkpoint"]), "--dataset", data, "--preprocess",
                                "detectnet", "--runtime", "torch"], capsys, tmp_path / "d")
    assert torch_detectnet["runtime"] == "torch"
    assert detectnet["preprocess"] == "detectnet"
    assert detectnet["mAP"] == pytest.approx(torch_detectnet["mAP"], abs=0.005)  # the same pixels either way
    if importlib.util.find_spec("openvino") is not None:  # a checkpoint exported on the fly for OpenVINO
        openvino, _ = _eval(["--trained-model", str(trained["checkpoint"]), "--dataset", data, "--runtime", "openvino"],
                            capsys, tmp_path / "e")
        assert openvino["runtime"] == "openvino" and openvino["mAP"] == pytest.approx(pytorch["mAP"], abs=0.005)


def test_detect_runs_the_exported_file(trained, shipped, capsys):
    image = sorted((trained["data"] / "JPEGImages").iterdir())[0]
    argv = ["--device", "cpu", "--num-workers", "0", "--threshold", "0.5"]
    assert detect([str(trained["checkpoint"]), str(image), "--runtime", "torch"] + argv) == 0
    want = json.loads(capsys.readouterr().out)
    assert detect([str(shipped), str(image)] + argv) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert "runtime onnxruntime" in err and "(onnxruntime)" in err
    assert got["labels"] == want["labels"] and len(got["boxes"]) > 0
    assert all(abs(a - b) < 0.05 for box, other in zip(got["boxes"], want["boxes"]) for a, b in zip(box, other))


def test_export_check_data_prints_both_maps(trained, tmp_path, capsys, monkeypatch):
    output = tmp_path / "m.onnx"
    argv = [str(trained["checkpoint"]), "-o", str(output), "--check", "--check-count", "1",
            "--data", str(trained["data"])]
    assert export(argv) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    pytorch = float(lines["PyTorch, ssdfast preprocessing"].split(":")[1])
    exported = float(lines["exported, ssdfast preprocessing"].split(":")[1].split()[0])
    assert pytorch > 0.3 and abs(pytorch - exported) <= 0.005 and "margin 0.5: passed" in out
    assert "exported, detectnet preprocessing" in lines and "passed on 1 image(s)" in out
    # beyond the margin: exit 1, the figures on stderr
    from ssdfast.runtimes import names

    monkeypatch.setitem(names.MAP_MARGINS, "fp32", -1.0)
    assert export(argv) == 1
    assert "FAILED" in capsys.readouterr().err


def test_export_check_data_scores_the_int8_file_beside_fp32(trained, tmp_path, capsys, monkeypatch):
    from ssdfast.runtimes import names

    output = tmp_path / "m.onnx"
    argv = [str(trained["checkpoint"]), "-o", str(output), "--check", "--check-count", "1", "--data",
            str(trained["data"]), "--int8", "--int8-target", "cpu", "--calib-dir", str(trained["data"] / "JPEGImages")]
    # 12 test images: one detection moves the mAP by points, so the margins are set here; the INT8 file's
    # accuracy is tests/export/test_quantize.py's
    monkeypatch.setitem(names.MAP_MARGINS, "int8", 50.0)
    assert export(argv) == 0
    captured = capsys.readouterr()
    blocks = (captured.out + captured.err).split("VOC mAP@0.5 on ")[1:]
    assert [b.split(" in ")[0].split("vs ")[1] for b in blocks] == ["m.onnx (fp32)", "m-int8-cpu.onnx (int8)"]
    pytorch = [float(b.split("PyTorch, ssdfast preprocessing:")[1].split()[0]) for b in blocks]
    exported = [float(b.split("exported, ssdfast preprocessing:")[1].split()[0]) for b in blocks]
    assert pytorch[0] == pytorch[1] > 0.3 and exported[1] > 0.3  # PyTorch scored once; INT8 detects
    assert "margin 50: passed" in blocks[1]
    monkeypatch.setitem(names.MAP_MARGINS, "int8", -1.0)  # the INT8 file beyond its margin: exit 1
    assert export(argv) == 1
    assert "margin -1: FAILED" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--data", "{data}"], "--data DIR scores the export: add --check"),
    (["--check", "--data", "{data}", "--format", "onnx-nms"], "--check --data scores jetson-format exports"),
    (["--check", "--data", "{nowhere}"], "no such folder"),
    (["--check", "--data", "{empty}"], "not a VOC, COCO or Open Images data set"),
])
def test_export_data_usage_errors(trained, tmp_path, capsys, flags, message):
    (tmp_path / "empty").mkdir()
    values = {"data": trained["data"], "nowhere": tmp_path / "nowhere", "empty": tmp_path / "empty"}
    output = tmp_path / "m.onnx"
    assert export([str(trained["checkpoint"]), "-o", str(output)] + [f.format(**values) for f in flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_a_runtime_not_installed(trained, capsys, monkeypatch):
    image = sorted((trained["data"] / "JPEGImages").iterdir())[0]
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as for a package that is not there
    assert detect([str(trained["checkpoint"]), str(image), "--runtime", "openvino", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: the openvino runtime needs the openvino package, which is not installed: pip install "
                   "openvino, e.g. pip install 'ssdfast[openvino]'\n")
