"""export_onnx / ExportModule / check_export details: normalization folding, batch sizes, opsets,
labels, metadata, and that the check catches a broken export."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssdfast import ops
from ssdfast.export import ExportModule, check_export, export_onnx
from ssdfast.export.formats import settings_from_metadata, settings_metadata
from ssdfast.export.inputs import prepare_inputs, sample_images
from ssdfast.export.nms import efficient_nms_attributes
from ssdfast.export.tensorrt_rules import unsupported_ops, validate_efficient_nms
from ssdfast.io import write_label_file as write_labels
from ssdfast.ops import DISPLAY, PostprocessSettings

from ._export_models import CLASS_NAMES, make_model

# Small networks gain nothing from a second thread and lose a lot on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = sample_images(3, (150, 200), seed=2)


@pytest.fixture(scope="module")
def model():
    return make_model("mb3-small-ssd-lite", image_size=160)


SETTINGS = PostprocessSettings(0.25, 0.5, 100, 20)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """One export per format (fixed batch 1, class names, settings, metadata), shared by the tests."""
    folder = tmp_path_factory.mktemp("exports")
    return {
        fmt: export_onnx(model, folder / f"{fmt}.onnx", format=fmt, class_names=CLASS_NAMES, settings=SETTINGS,
                         metadata={"ssdfast.checkpoint_sha256": "ab"})
        for fmt in ("jetson", "onnx-nms", "trt-nms")
    }


def test_export_module_folds_normalization_and_decodes_like_ops(model):
    module = ExportModule(model).eval()
    normalized, exported, _ = prepare_inputs(IMAGES, model.config)
    assert exported.min() >= -1.0 - 1e-6 and exported.max() <= 1.0 + 1e-6
    torch.testing.assert_close(module.normalize(exported), normalized, atol=2e-6, rtol=0)
    with torch.no_grad():
        scores, boxes = module(exported)
        confidences, locations = model(normalized)
    torch.testing.assert_close(scores, confidences.softmax(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(boxes, ops.decode_boxes(locations, model.priors, model.config.variances),
                               atol=1e-4, rtol=1e-4)
    # Extreme offsets: the exp argument is clamped as in ops.decode_boxes (no inf).
    loc = torch.tensor([[[0.0, 0.0, 1e4, -1e4]]]).expand(1, model.priors.shape[0], 4)
    torch.testing.assert_close(module.decode(loc), ops.decode_boxes(loc, model.priors, model.config.variances))


def test_mean_std_of_one_half_is_not_folded(model, tmp_path):
    model = copy.deepcopy(model)
    model.config.mean = (0.5, 0.5, 0.5)
    model.config.std = (0.5, 0.5, 0.5)
    assert not ExportModule(model).fold_normalization
    result = export_onnx(model, tmp_path / "m.onnx")
    first = onnx.load(str(result.path)).graph.node[0]
    assert first.op_type == "Conv" and first.input[0] == "input_0"
    assert check_export(result.path, model, images=IMAGES[:1]).passed


@pytest.mark.parametrize("fmt", ["jetson", "onnx-nms", "trt-nms"])
def test_dynamic_batch(model, fmt, tmp_path):
    result = export_onnx(model, tmp_path / "m.onnx", format=fmt, batch_size="dynamic",
                         settings=PostprocessSettings(score_threshold=0.2, max_detections=50))
    proto = onnx.load(str(result.path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = check_export(result.path, model, images=IMAGES)  # one run on a batch of 3
    assert report.passed, report.summary()
    if fmt != "trt-nms":
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        x = prepare_inputs(IMAGES, model.config)[1].numpy()
        outs = session.run(None, {"input_0": x[:1]})
        assert all(o.shape[0] == 1 for o in outs)


def test_fixed_batch_of_two_and_other_opsets(model, tmp_path):
    result = export_onnx(model, tmp_path / "m11.onnx", format="onnx-nms", batch_size=2, opset=11)
    proto = onnx.load(str(result.path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert {i.version for i in proto.opset_import if i.domain == ""} == {11}
    report = check_export(result.path, model, images=IMAGES)  # 3 images: two runs, the last padded
    assert report.passed, report.summary()
    assert len(report.num_detections) == 3
    proto = onnx.load(str(export_onnx(model, tmp_path / "m17.onnx", format="onnx-nms", opset=17).path))
    assert {i.version for i in proto.opset_import if i.domain == ""} == {17}


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="format"):
        export_onnx(model, tmp_path / "m.onnx", format="caffe")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=10)
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(model, tmp_path / "m.onnx", batch_size=0)
    with pytest.raises(ValueError, match="class_names"):
        export_onnx(model, tmp_path / "m.onnx", class_names=["BACKGROUND", "cat"])
    assert not (tmp_path / "m.onnx").exists()


def test_labels_and_metadata(model, exports):
    result = exports["onnx-nms"]
    assert result.labels_path == result.path.parent / "labels.txt"
    assert result.labels_path.read_text() == "BACKGROUND\ncat\ndog\n"
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["ssdfast.format"] == "onnx-nms"
    assert meta["ssdfast.class_names"].splitlines() == CLASS_NAMES
    assert {k: v for k, v in meta.items() if k in settings_metadata(SETTINGS)} == {
        "ssdfast.score_threshold": "0.25", "ssdfast.iou_threshold": "0.5", "ssdfast.top_k": "100",
        "ssdfast.max_detections": "20"}
    assert settings_from_metadata(meta) == SETTINGS
    assert settings_from_metadata(settings_metadata(DISPLAY)) == DISPLAY
    assert settings_from_metadata({"ssdfast.format": "jetson"}) is None  # a jetson file has none
    assert meta["ssdfast.checkpoint_sha256"] == "ab"
    # check_export reads the format and settings back from the metadata.
    report = check_export(result.path, model, images=IMAGES[:2])
    assert report.passed, report.summary()
    assert report.format == "onnx-nms" and 0 < max(report.num_detections) <= 20


def test_write_labels_rules(tmp_path):
    path = write_labels(["BACKGROUND", "a b", "c"], tmp_path / "labels.txt")
    assert path.read_text().splitlines() == ["BACKGROUND", "a b", "c"]
    with pytest.raises(ValueError, match="BACKGROUND"):
        write_labels(["cat", "dog"], tmp_path / "x.txt")
    with pytest.raises(ValueError, match="single lines"):
        write_labels(["BACKGROUND", "a\nb"], tmp_path / "x.txt")


def test_check_catches_a_model_that_differs_from_the_export(model, exports):
    changed = copy.deepcopy(model)
    changed.config.mean = (0.45, 0.45, 0.45)  # as if the graph had folded the wrong normalization
    for fmt, result in exports.items():
        report = check_export(result.path, changed, images=IMAGES[:2])
        assert not report.passed, fmt
        with pytest.raises(Exception, match="FAIL"):
            report.raise_if_failed()


def test_efficient_nms_node_validation(exports):
    settings = SETTINGS
    proto = onnx.load(str(exports["trt-nms"].path))
    assert validate_efficient_nms(proto, settings, num_classes=3) == []
    node = next(n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["background_class"] == 0 and attrs["box_coding"] == 0 and attrs["score_activation"] == 0
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"" and attrs["max_output_boxes"] == 20
    assert np.isclose(attrs["score_threshold"], 0.25) and np.isclose(attrs["iou_threshold"], 0.5)
    assert list(node.input) == ["raw_boxes", "raw_scores"]
    assert set(efficient_nms_attributes(settings)) == set(attrs)

    def tampered(**changes):
        bad = copy.deepcopy(proto)
        n = next(n for n in bad.graph.node if n.op_type == "EfficientNMS_TRT")
        keep = [a for a in n.attribute if a.name not in changes]
        del n.attribute[:]
        n.attribute.extend(keep)
        for name, value in changes.items():
            if value is not None:
                n.attribute.append(onnx.helper.make_attribute(name, value))
        return validate_efficient_nms(bad, settings, num_classes=3)

    assert any("background_class" in p for p in tampered(background_class=-1))
    assert any("score_activation" in p for p in tampered(score_activation=1))
    assert any("box_coding" in p and "missing" in p for p in tampered(box_coding=None))
    assert any("iou_threshold" in p for p in tampered(iou_threshold=3))  # an int, not a float
    assert any("max_output_boxes" in p for p in tampered(max_output_boxes=5))  # not the settings'
    assert "EfficientNMS_TRT iou_threshold should be in [0, 1], got 1.5" in tampered(iou_threshold=1.5)
    assert "EfficientNMS_TRT max_output_boxes should be a positive integer, got 0" in tampered(max_output_boxes=0)
    assert validate_efficient_nms(onnx.load(str(exports["jetson"].path)))  # no node


def test_unsupported_ops_are_reported():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    proto = helper.make_model(helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "g", [x], [y]))
    assert unsupported_ops(proto) == ["NonZero"]


def test_graphs_are_simplified(model, exports, tmp_path):
    # onnxslim folds the exporter's shape arithmetic and drops identities: a fixed-batch graph has no
    # Shape chain left, a dynamic-batch one keeps only the batch symbolic (static priors and classes).
    shape_ops = {"Shape", "Gather", "Unsqueeze", "Identity", "Constant"}
    assert not shape_ops & {n.op_type for n in onnx.load(str(exports["jetson"].path)).graph.node}
    proto = onnx.load(str(export_onnx(model, tmp_path / "d.onnx", batch_size="dynamic").path))
    assert not shape_ops & {n.op_type for n in proto.graph.node}
    P = int(model.priors.shape[0])
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    assert dims == [["batch", P, 3], ["batch", P, 4]]


def test_check_images_are_read_with_the_one_reader(model, exports, tmp_path):
    from PIL import Image

    from ssdfast.errors import DataError
    from ssdfast.export import load_images

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 255, (70, 50, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "alpha.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images([tmp_path])
    assert [tuple(im.pixels.shape) for im in images] == [(3, 70, 50), (3, 60, 80)]  # name order, RGB
    assert all(im.pixels.dtype == torch.uint8 and im.warning is None for im in images)
    report = check_export(exports["jetson"].path, model, images=[im.pixels for im in images])
    assert report.passed and report.num_images == 2, report.summary()
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_images([tmp_path])
