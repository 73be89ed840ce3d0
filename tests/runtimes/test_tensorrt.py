"""The TensorRT runtime without TensorRT or a GPU: its execution (shapes, tensor addresses, the dynamic
batch's chunks) against a stand-in engine that runs the same ONNX graph in onnxruntime on the tensors'
memory; its engine cache; its one-line errors. (On a machine with TensorRT and a GPU,
``load_detector(checkpoint, runtime="tensorrt")`` builds and runs the real engine.)"""
from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
import torch

from ssdfast import Detector, load_detector
from ssdfast.export import export_onnx
from ssdfast.export.inputs import sample_images
from ssdfast.model_files import save_checkpoint
from ssdfast.ops import PostprocessSettings
from ssdfast.runtimes import ExportedNetwork
from ssdfast.runtimes.exported import onnx_graph_info
from ssdfast.runtimes.tensorrt_runtime import TensorRTRun
from tests.export._export_models import CLASS_NAMES, make_model

from ._compare import assert_same_detections

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = PostprocessSettings(score_threshold=0.3, max_detections=150)
#: The stand-in engine's optimization profile: batches up to 2 (bigger ones run in chunks).
PROFILE_MAX = 2


def _array(address: int, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 memory at ``address`` as an array (a CPU tensor's ``data_ptr()``)."""
    return np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_float)), shape=shape)


class _Context:
    def __init__(self, engine: _Engine):
        self.engine, self.shape, self.addresses = engine, None, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        assert name == "input_0" and shape[0] <= PROFILE_MAX
        self.shape = tuple(shape)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], *self.engine.outputs[name])

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address

    def execute_async_v3(self, stream: int) -> bool:
        x = _array(self.addresses["input_0"], self.shape).copy()
        for name, value in zip(("scores", "boxes"), self.engine.session.run(["scores", "boxes"], {"input_0": x})):
            np.copyto(_array(self.addresses[name], value.shape), value)
        self.engine.runs.append(self.shape[0])
        return True


class _Engine:
    def __init__(self, onnx_bytes: bytes):
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.input_shape = (-1, 3, *self.session.get_inputs()[0].shape[2:])
        self.outputs = {o.name: tuple(o.shape[1:]) for o in self.session.get_outputs()}
        self.runs: list[int] = []

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.input_shape

    def get_tensor_profile_shape(self, name: str, profile: int):
        shape = self.input_shape[1:]
        return (1, *shape), (PROFILE_MAX, *shape), (PROFILE_MAX, *shape)

    def create_execution_context(self) -> _Context:
        return _Context(self)


def _fake_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0-stand-in"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, data: _Engine(data)})
    return trt


def test_engine_runs_a_detectors_network(tmp_path):
    model = make_model("mb3-small-ssd-lite", image_size=128)
    onnx_file = export_onnx(model, tmp_path / "m.onnx", batch_size=None, class_names=CLASS_NAMES).path
    run = TensorRTRun(onnx_file.read_bytes(), torch.device("cpu"), _fake_tensorrt())
    assert run.max_batch == PROFILE_MAX
    network = ExportedNetwork(run, onnx_graph_info(onnx_file), runtime="tensorrt", max_batch=run.max_batch)
    detector = Detector(network, CLASS_NAMES, settings=SETTINGS)
    images = sample_images(3, (100, 140), seed=3)
    got = detector(images)
    assert run.engine.runs == [2, 1]  # 3 images: a chunk of the profile's largest batch, then the rest
    expected = Detector(model, CLASS_NAMES, settings=SETTINGS)(images)
    for a, b in zip(expected, got):
        assert_same_detections(a, b, SETTINGS.score_threshold, SETTINGS.max_detections)


def test_engines_are_cached(tmp_path, monkeypatch):
    from ssdfast.export import tensorrt as export_tensorrt
    from ssdfast.runtimes.cache import cached_engine

    model = make_model("mb3-small-ssd-lite", image_size=128)
    onnx_file = export_onnx(model, tmp_path / "m.onnx", batch_size=None).path
    built = []

    def build_engine(onnx_path, engine_path, **options):
        built.append(options)
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        engine_path.write_bytes(b"engine")

    monkeypatch.setattr(export_tensorrt, "build_engine", build_engine)
    common = dict(tensorrt_version="10.0", gpu="stand-in GPU", max_batch=8, batch_size=None, image_size=(128, 128),
                  cache_dir=tmp_path / "cache")
    first = cached_engine(onnx_file, **common)
    assert cached_engine(onnx_file, **common) == first and len(built) == 1
    assert built[0]["batch_size"] is None and built[0]["max_batch_size"] == 8
    assert cached_engine(onnx_file, **{**common, "gpu": "another GPU"}) != first  # engines are per GPU
    assert cached_engine(onnx_file, **{**common, "tensorrt_version": "10.1"}) != first
    assert len(built) == 3


def test_tensorrt_needs_a_gpu(tmp_path, monkeypatch):
    path = tmp_path / "best.pth"
    save_checkpoint(path, make_model("mb3-small-ssd-lite", image_size=128), CLASS_NAMES)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="the tensorrt runtime runs on a CUDA GPU, and none is available here"):
        load_detector(path, runtime="tensorrt", device="cpu", cache_dir=tmp_path / "cache")
