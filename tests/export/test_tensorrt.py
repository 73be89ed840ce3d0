"""Engine sidecars, stale-engine detection and the trtexec command (no TensorRT needed)."""
from __future__ import annotations

import json

import pytest

from ssdfast.errors import ModelFileError
from ssdfast.export.tensorrt import (
    EngineInfo,
    check_engine,
    file_sha256,
    format_command,
    read_sidecar,
    sidecar_path,
    tensorrt_available,
    trtexec_command,
    write_sidecar,
)


@pytest.fixture()
def files(tmp_path):
    checkpoint = tmp_path / "best.pth"
    checkpoint.write_bytes(b"checkpoint one")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    return checkpoint, onnx_file, engine


def _stamp(checkpoint, onnx_file, engine, engine_hash=True, **extra):
    info = EngineInfo(engine=engine.name, checkpoint_sha256=file_sha256(checkpoint), onnx_sha256=file_sha256(onnx_file),
                      export_format="trt-nms", precision="fp16", image_size=(300, 300),
                      engine_sha256=file_sha256(engine) if engine_hash else None, **extra)
    return write_sidecar(engine, info)


def test_file_sha256(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sidecar_round_trip(files):
    checkpoint, onnx_file, engine = files
    path = _stamp(checkpoint, onnx_file, engine)
    assert path == sidecar_path(engine) == engine.with_name("model.engine.json")
    data = json.loads(path.read_text())
    assert data["format"] == "ssdfast-engine" and data["checkpoint_sha256"] == file_sha256(checkpoint)
    info = read_sidecar(engine)
    assert info.image_size == (300, 300) and info.precision == "fp16" and info.export_format == "trt-nms"


def test_check_engine_accepts_the_matching_checkpoint(files):
    checkpoint, onnx_file, engine = files
    _stamp(checkpoint, onnx_file, engine)
    assert check_engine(engine, checkpoint, onnx_path=onnx_file).checkpoint_sha256 == file_sha256(checkpoint)
    assert check_engine(engine, checkpoint_sha256=file_sha256(checkpoint)).engine == "model.engine"


def test_stale_engine_is_detected(files, tmp_path):
    checkpoint, onnx_file, engine = files
    _stamp(checkpoint, onnx_file, engine)
    retrained = tmp_path / "retrained.pth"
    retrained.write_bytes(b"checkpoint two")
    with pytest.raises(ModelFileError, match="stale"):
        check_engine(engine, retrained)
    onnx_file.write_bytes(b"another export")
    with pytest.raises(ModelFileError, match="another export"):
        check_engine(engine, checkpoint, onnx_path=onnx_file)
    engine.write_bytes(b"an engine copied over from elsewhere")
    with pytest.raises(ModelFileError, match="changed"):
        check_engine(engine, checkpoint)


def test_trtexec_engine_without_hash_is_checked_by_checkpoint(files, tmp_path):
    checkpoint, onnx_file, engine = files
    _stamp(checkpoint, onnx_file, engine, engine_hash=False, built_by="trtexec")
    engine.write_bytes(b"what trtexec wrote")
    assert check_engine(engine, checkpoint).built_by == "trtexec"
    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    with pytest.raises(ModelFileError):
        check_engine(engine, other)


def test_missing_engine_or_sidecar(files):
    checkpoint, onnx_file, engine = files
    with pytest.raises(ModelFileError, match="no model.engine.json"):
        check_engine(engine, checkpoint)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        check_engine(engine, checkpoint)
    sidecar_path(engine).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFileError, match="not an ssdfast"):
        check_engine(engine, checkpoint)
    engine.unlink()
    with pytest.raises(ModelFileError, match="no such engine"):
        check_engine(engine, checkpoint)


def test_trtexec_command_fixed_and_dynamic():
    cmd = trtexec_command("m.onnx", "m.engine", fp16=True)
    assert cmd == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--fp16"]
    cmd = trtexec_command("m.onnx", "m.engine", batch_size=None, max_batch_size=4, image_size=(300, 320),
                          int8=True, calib_cache="m.engine.calib", workspace_mb=512)
    assert "--minShapes=input_0:1x3x300x320" in cmd and "--maxShapes=input_0:4x3x300x320" in cmd
    assert "--optShapes=input_0:4x3x300x320" in cmd
    assert "--int8" in cmd and "--calib=m.engine.calib" in cmd and "--memPoolSize=workspace:512M" in cmd
    assert format_command(["trtexec", "--onnx=my model.onnx"]) == "trtexec '--onnx=my model.onnx'"
    with pytest.raises(ValueError, match="image_size"):
        trtexec_command("m.onnx", "m.engine", batch_size=None)


def test_tensorrt_is_not_installed_here():
    # CI has no TensorRT: the CLI prints the trtexec command instead (tested in tests/cli).
    assert tensorrt_available() in (True, False)
