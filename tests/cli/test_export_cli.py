"""ssdfast-export end to end: checkpoint in, ONNX + labels.txt out, --check, TensorRT sidecar."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from ssdfast.cli.export import main
from ssdfast.checkpoint import save_checkpoint
from ssdfast.export.tensorrt import file_sha256, sidecar_path, tensorrt_available
from tests.export._export_models import CLASS_NAMES, make_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = make_model("mb3-small-ssd-lite", image_size=160)
    path = tmp_path_factory.mktemp("run") / "best.pth"
    save_checkpoint(path, model, CLASS_NAMES)
    return path


def _copy(checkpoint: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "best.pth"
    target.write_bytes(checkpoint.read_bytes())
    return target


def test_jetson_export_with_check(checkpoint, tmp_path, capsys):
    ckpt = _copy(checkpoint, tmp_path)
    assert main([str(ckpt), "--check", "--check-count", "2"]) == 0
    out = capsys.readouterr().out
    model_path = tmp_path / "best.onnx"
    proto = onnx.load(str(model_path))
    assert [o.name for o in proto.graph.output] == ["scores", "boxes"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 160, 160]
    assert (tmp_path / "labels.txt").read_text().splitlines() == ["BACKGROUND", "cat", "dog"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ssdfast.checkpoint_sha256"] == file_sha256(ckpt)
    assert "--input-blob=input_0 --output-cvg=scores --output-bbox=boxes" in out
    assert "passed" in out


def test_onnx_nms_dynamic_batch_on_given_images(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out_file = tmp_path / "out" / "nms.onnx"
    rc = main(["--input", str(checkpoint), "--format", "onnx-nms", "--batch_size", "dynamic", "--output", str(out_file),
               "--score_threshold", "0.2", "--max-detections", "50", "--check", "--check-images", str(images)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "passed on 3 image(s)" in out
    proto = onnx.load(str(out_file))
    assert [o.name for o in proto.graph.output] == ["num_detections", "detection_boxes", "detection_scores",
                                                    "detection_classes"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert (tmp_path / "out" / "labels.txt").is_file()


def test_check_failure_exits_1(checkpoint, tmp_path, capsys):
    rc = main([str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--check", "--check-count", "1", "--tolerance", "1e-12"])
    assert rc == 1
    assert "FAIL" in capsys.readouterr().err


def test_trt_nms_tensorrt_command_and_stale_engine(checkpoint, tmp_path, capsys):
    if tensorrt_available():
        pytest.skip("with TensorRT installed an engine is built instead of printing trtexec")
    ckpt = _copy(checkpoint, tmp_path)
    engine = tmp_path / "model.engine"
    rc = main([str(ckpt), "--format", "trt-nms", "--output", str(tmp_path / "m.onnx"), "--tensorrt", str(engine),
               "--fp16", "--check", "--check-count", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"trtexec --onnx={tmp_path / 'm.onnx'} --saveEngine={engine} --fp16" in out
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["checkpoint_sha256"] == file_sha256(ckpt) and sidecar["precision"] == "fp16"
    assert sidecar["export_format"] == "trt-nms" and sidecar["engine_sha256"] is None

    engine.write_bytes(b"what trtexec wrote")  # the user runs the printed command
    assert main([str(ckpt), "--verify-engine", str(engine)]) == 0
    assert "up to date" in capsys.readouterr().out
    ckpt.write_bytes(ckpt.read_bytes() + b"retrained")  # another checkpoint in the same place
    assert main([str(ckpt), "--verify-engine", str(engine)]) == 1
    assert "stale" in capsys.readouterr().err


def test_model_dir(checkpoint, tmp_path, capsys):
    _copy(checkpoint, tmp_path / "run")
    assert main(["--model-dir", str(tmp_path / "run"), "--format", "trt-nms"]) == 0
    assert (tmp_path / "run" / "best-trt-nms.onnx").is_file()
    assert (tmp_path / "run" / "labels.txt").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "which checkpoint"),
        (["missing.pth"], "does not exist"),
        (["{ckpt}", "--opset", "9"], "--opset"),
        (["{ckpt}", "--net", "vgg16-ssd"], "mb3-small-ssd-lite"),
        (["{ckpt}", "--width", "300"], "160x160"),
        (["{ckpt}", "--int8"], "--tensorrt"),
        (["{ckpt}", "--output", "{tmp}/model.txt"], ".onnx"),
        (["{ckpt}", "--check-images", "{tmp}/nowhere"], "--check-images"),
        (["{ckpt}", "--model-dir", "{tmp}"], "not both"),
        (["{tmp}/not-a-checkpoint.pth"], "cannot read checkpoint"),
    ],
)
def test_usage_errors(checkpoint, tmp_path, capsys, args, message):
    (tmp_path / "not-a-checkpoint.pth").write_bytes(b"garbage")
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_argparse_errors_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["x.pth", "--batch-size", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["x.pth", "--format", "caffe"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--format", "--batch-size", "--opset", "--check", "--tensorrt", "--int8", "--calib-dir"):
        assert flag in out
