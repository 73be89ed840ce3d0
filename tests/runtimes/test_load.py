"""load_detector: checkpoints exported on the fly and cached, exported files given directly (ONNX,
OpenVINO, INT8 Q/DQ), their class names, the network contract of an exported graph, and one line for
every runtime that cannot run."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from ssdfast import Detector, load_detector
from ssdfast.detector import Detections, Preprocessing
from ssdfast.errors import MissingPackageError, ModelFileError
from ssdfast.export import export_onnx
from ssdfast.export.inputs import sample_images
from ssdfast.model_files import save_checkpoint
from ssdfast.ops import PostprocessSettings
from ssdfast.runtimes import CPU_DEFAULT, ExportedNetwork, GraphInfo, default_runtime
from tests.export._export_models import CLASS_NAMES, make_model

from ._compare import assert_same_detections

pytestmark = pytest.mark.usefixtures("one_thread")

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="no openvino")
SETTINGS = PostprocessSettings(score_threshold=0.3, max_detections=150)
IMAGES = sample_images(3, (100, 140), seed=5)


@pytest.fixture(scope="module")
def model():
    return make_model("mb3-small-ssd-lite", image_size=128)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "best.pth"
    save_checkpoint(path, model, CLASS_NAMES)
    return path


@pytest.fixture(scope="module")
def expected(checkpoint):
    """The torch runtime's detections of IMAGES."""
    return load_detector(checkpoint, runtime="torch", settings=SETTINGS)(IMAGES)


def _same(expected: list[Detections], got: list[Detections]) -> None:
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert_same_detections(a, b, SETTINGS.score_threshold, SETTINGS.max_detections)


def test_torch_runtime_is_from_file(checkpoint, expected):
    detector = load_detector(checkpoint, runtime="torch", settings=SETTINGS)
    plain = Detector.from_file(checkpoint, settings=SETTINGS)
    assert type(detector.network) is type(plain.network) and detector.class_names == plain.class_names == CLASS_NAMES
    assert detector.source.kind == "ssdfast" and detector.source.runtime == "torch" and detector.source.exported is None
    for a, b in zip(plain(IMAGES), expected):
        torch.testing.assert_close(a.boxes, b.boxes)


@needs_onnxruntime
def test_checkpoint_export_is_cached_by_content_and_settings(checkpoint, model, expected, tmp_path):
    first = load_detector(checkpoint, runtime="onnxruntime", settings=SETTINGS, cache_dir=tmp_path)
    path = first.source.exported
    assert path.startswith(str(tmp_path)) and first.source.description.endswith(f"exported to {path}")
    _same(expected, first(IMAGES))
    stamp = os.stat(path).st_mtime_ns
    again = load_detector(checkpoint, runtime="onnxruntime", settings=SETTINGS, cache_dir=tmp_path)
    assert again.source.exported == path and os.stat(path).st_mtime_ns == stamp  # reused, not written again
    # other class names (a label file renaming them) or other weights: another export
    labels = tmp_path / "names.txt"
    labels.write_text("BACKGROUND\nlion\ntiger\n")
    renamed = load_detector(checkpoint, runtime="onnxruntime", label_file=labels, cache_dir=tmp_path)
    assert renamed.source.exported != path and renamed.class_names == ["BACKGROUND", "lion", "tiger"]
    edited = tmp_path / "edited.pth"
    changed = make_model("mb3-small-ssd-lite", image_size=128, seed=1)
    save_checkpoint(edited, changed, CLASS_NAMES)
    other = load_detector(edited, runtime="onnxruntime", cache_dir=tmp_path)
    assert other.source.exported not in (path, renamed.source.exported)
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()).__len__() == 3


@needs_onnxruntime
def test_the_cache_folder_follows_the_environment(checkpoint, tmp_path, monkeypatch):
    from ssdfast.runtimes import default_cache_dir

    monkeypatch.delenv("SSDFAST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ssdfast"
    monkeypatch.setenv("SSDFAST_CACHE_DIR", str(tmp_path / "mine"))
    detector = load_detector(checkpoint, runtime="onnxruntime")
    assert detector.source.exported.startswith(str(tmp_path / "mine" / "exports"))


@needs_onnxruntime
def test_exported_file_given_directly(model, expected, tmp_path):
    """A fixed-batch (1) jetson export runs a batch of 3 (one image at a time); its class names come from
    --label-file, else the labels.txt beside it, else the names stored in it."""
    result = export_onnx(model, tmp_path / "m.onnx", class_names=CLASS_NAMES)
    assert result.batch_size == 1
    detector = load_detector(result.path, settings=SETTINGS)
    assert detector.source.runtime == "onnxruntime" and detector.source.kind == "onnx"
    assert detector.class_names == CLASS_NAMES and "labels from" in detector.source.description
    assert detector.network.batch_size == 1
    assert detector.preprocessing == Preprocessing((128, 128), (0.5,) * 3, (0.5,) * 3, "antialias")
    _same(expected, detector(IMAGES))
    (tmp_path / "labels.txt").unlink()
    stored = load_detector(result.path, settings=SETTINGS)
    assert stored.class_names == CLASS_NAMES and "class names from the file" in stored.source.description
    names = tmp_path / "mine.txt"
    names.write_text("lion\ntiger\n")  # dusty-nv's format: no BACKGROUND
    assert load_detector(result.path, label_file=names).class_names == ["BACKGROUND", "lion", "tiger"]
    names.write_text("lion\n")
    with pytest.raises(ModelFileError, match="predicts 2 classes \\+ background but"):
        load_detector(result.path, label_file=names)
    with pytest.raises(ModelFileError, match="holds a mb3-small-ssd-lite network, not mb1-ssd"):
        load_detector(result.path, net="mb1-ssd")


@needs_openvino
def test_openvino_model_file(model, expected, tmp_path):
    import openvino as ov

    onnx_file = export_onnx(model, tmp_path / "m.onnx", batch_size=None, class_names=CLASS_NAMES).path
    xml = tmp_path / "ov" / "m.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
    (xml.parent / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    detector = load_detector(xml, settings=SETTINGS)
    assert detector.source.runtime == "openvino" and detector.source.kind == "openvino"
    _same(expected, detector(IMAGES))
    _same(expected[:2], detector(IMAGES[:2]))  # another batch size: compiled for it too
    with pytest.raises(ModelFileError, match="runs in openvino, not onnxruntime"):
        load_detector(xml, runtime="onnxruntime")


@needs_onnxruntime
def test_int8_qdq_graph_runs_like_any_other(trained, tmp_path):
    """A Q/DQ graph (ONNX Runtime's static quantization, per-channel symmetric: TensorRT's explicit
    quantization form) of the trained model is a jetson graph like its FP32 export: it runs in each
    runtime, scored with ssdfast's post-processing, its mAP close to FP32's."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ssdfast.data import build_dataset
    from ssdfast.evaluation import evaluate
    from ssdfast.io import load_image
    from ssdfast.model_files import load_model_file
    from ssdfast.runtimes import graph_precision

    loaded = load_model_file(trained["checkpoint"])
    fp32 = export_onnx(loaded.model, tmp_path / "fp32.onnx", batch_size=None, class_names=loaded.class_names).path
    dataset = build_dataset("voc", [str(trained["data"])], split="test")
    fp32_detector = load_detector(fp32)
    calibration = [fp32_detector.preprocess(load_image(dataset.image_path(i)).pixels)[0].numpy()
                   for i in range(len(dataset))]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input_0": x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    assert graph_precision(int8) == "int8" and graph_precision(fp32) == "fp32"
    reference = evaluate(fp32_detector, dataset, progress=False)["mAP"]
    assert reference > 0.3  # the trained model finds its objects
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for runtime in runtimes:
        detector = load_detector(int8, runtime=runtime)
        assert detector.class_names == trained["class_names"]
        assert evaluate(detector, dataset, progress=False)["mAP"] == pytest.approx(reference, abs=0.1), runtime


def test_exported_network_contract_without_a_runtime():
    """A jetson graph's softmax scores and decoded boxes go through ssdfast's post-processing unchanged:
    its boxes re-encoded against unit priors decode to themselves; a fixed-batch graph runs in chunks of
    its batch, the last padded."""
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.4, 0.4, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.0, 0.8], [0.95, 0.03, 0.02]])
    calls = []

    def run(batch):
        calls.append(int(batch.shape[0]))
        n = batch.shape[0]
        shift = batch[:, 0, 0, 0].view(n, 1, 1) * 0  # one output per image, the same for each
        return scores.expand(n, 3, 3) + shift, boxes.expand(n, 3, 4) + shift

    graph = GraphInfo("g.onnx", [2, 3, 32, 32], ["scores", "boxes"], {"scores": [2, 3, 3], "boxes": [2, 3, 4]},
                      {"ssdfast.resize": "opencv"}, "ssdfast")
    network = ExportedNetwork(run, graph, runtime="test")
    assert network.preprocessing == Preprocessing((32, 32), (0.5,) * 3, (0.5,) * 3, "opencv")
    assert network.num_classes == 3 and network.batch_size == 2
    detector = Detector(network, ["BACKGROUND", "a", "b"], settings=PostprocessSettings(score_threshold=0.5))
    images = [torch.zeros(3, 100, 200, dtype=torch.uint8)] * 3
    results = detector(images)
    assert calls == [2, 2]  # 3 images: a batch of 2, then 1 padded to 2
    for det in results:
        assert det.label_names == ["a", "b"]  # by score: 0.9 (prior 0, class a), 0.8 (prior 1, class b)
        torch.testing.assert_close(det.boxes, boxes[:2] * torch.tensor([200.0, 100.0, 200.0, 100.0]), rtol=0, atol=1e-4)
        torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.8]))


def test_not_a_jetson_graph(model, tmp_path):
    pytest.importorskip("onnxruntime")
    path = export_onnx(model, tmp_path / "nms.onnx", format="onnx-nms", class_names=CLASS_NAMES).path
    with pytest.raises(ModelFileError, match="an onnx-nms export; the onnxruntime runtime runs jetson-format files"):
        load_detector(path, flag="--trained-model")
    with pytest.raises(ModelFileError, match="^--trained-model .*nms.onnx: an exported onnx model runs in onnxruntime, "
                                             "openvino or tensorrt, not torch"):
        load_detector(path, runtime="torch", flag="--trained-model")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ModelFileError, match="broken.onnx: onnxruntime cannot load it"):
        load_detector(broken)
    with pytest.raises(ValueError, match="runtime should be one of torch, onnxruntime, openvino, tensorrt"):
        load_detector(path, runtime="tflite")
    with pytest.raises(ModelFileError, match="no such file"):
        load_detector(tmp_path / "missing.onnx")


def test_default_runtime(monkeypatch):
    from ssdfast.runtimes import names

    assert default_runtime("onnx") == "onnxruntime" and default_runtime("openvino") == "openvino"
    assert default_runtime(None, "cuda") == "torch"
    expected = CPU_DEFAULT if CPU_DEFAULT == "torch" or importlib.util.find_spec(CPU_DEFAULT) else "torch"
    assert default_runtime(None) == expected
    monkeypatch.setattr(names, "CPU_DEFAULT", "openvino")
    monkeypatch.setattr(names.importlib.util, "find_spec", lambda name: None)  # openvino not installed: torch
    assert default_runtime(None) == "torch"


@pytest.mark.parametrize("runtime,install", [
    ("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)"),
    ("openvino", "pip install openvino"),
    ("tensorrt", "JetPack's python3-libnvinfer, or pip install tensorrt"),
])
def test_a_runtime_not_installed_is_one_line(runtime, install, checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, runtime, None)  # import fails as for a package that is not there
    with pytest.raises(MissingPackageError) as info:
        load_detector(checkpoint, runtime=runtime, cache_dir=os.devnull)
    message = str(info.value)
    assert message.startswith(f"the {runtime} runtime needs the {runtime} package, which is not installed: {install}")
    assert "\n" not in message
