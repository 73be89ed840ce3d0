"""Every network of ssdfast.models.list_models() exports in every format and passes its check.

Each MobileNet network is exported at 300 (the default size) and at 224,
then run in onnxruntime on preprocessed images and compared with PyTorch (see ssdfast.export.compare).
The VGG networks are heavy on 2 cores: vgg16-ssd runs at 300 only, vgg16-ssd512 at 320 only.
The variants (options of their own: vgg16-ssd's L2Norm, the torchvision-MobileNet backbones) run at
one size each.
"""
from __future__ import annotations

import functools

import onnx
import pytest

from ssdfast.export import FORMATS, check_export, export_onnx
from ssdfast.export.inputs import sample_images
from ssdfast.export.tensorrt_rules import TENSORRT_OPS
from ssdfast.models import list_models
from ssdfast.ops import DISPLAY

from ._export_models import CLASS_NAMES, make_model

# Small networks gain nothing from a second thread and lose a lot on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

MOBILENETS = [n for n in list_models() if not n.startswith("vgg")]
# 224 as the other resolution: it proves a non-300 size works and is cheaper than 300.
CASES = [pytest.param(n, s, id=f"{n}@{s}") for n in MOBILENETS for s in (300, 224)] + [
    pytest.param("vgg16-ssd", 300, id="vgg16-ssd@300", marks=pytest.mark.slow),
    pytest.param("vgg16-ssd512", 320, id="vgg16-ssd512@320", marks=pytest.mark.slow),
]
VARIANTS = [
    pytest.param("vgg16-ssd", 300, {"conv4_3_norm": "l2norm"}, id="vgg16-ssd-l2norm@300", marks=pytest.mark.slow),
    pytest.param("mb2-ssd-lite", 224, {"backbone": "torchvision"}, id="mb2-ssd-lite-torchvision@224"),
    pytest.param("mb3-large-ssd-lite", 224, {"backbone": "torchvision"}, id="mb3-large-ssd-lite-torchvision@224"),
    pytest.param("mb3-small-ssd-lite", 224, {"backbone": "torchvision"}, id="mb3-small-ssd-lite-torchvision@224"),
]
IMAGES = sample_images(1, (180, 240), seed=1)  # one image: 49 cases on 2 cores


def test_every_network_is_covered():
    covered = {c.values[0] for c in CASES}
    assert covered == set(list_models())


@functools.lru_cache(maxsize=None)  # test processes (pytest-xdist) interleave the networks
def _model(name: str, size: int, options: tuple[tuple[str, str], ...] = ()):
    return make_model(name, image_size=size, **dict(options))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name,size,options",
                         [pytest.param(*c.values, {}, id=c.id, marks=c.marks) for c in CASES] + VARIANTS)
def test_export_and_check(name, size, options, fmt, tmp_path):
    model = _model(name, size, tuple(sorted(options.items())))
    assert model.config.options.items() >= options.items()
    result = export_onnx(model, tmp_path / "model.onnx", format=fmt, class_names=CLASS_NAMES)
    P = int(model.priors.shape[0])
    assert result.num_priors == P and result.image_size == (size, size)

    proto = onnx.load(str(result.path))
    assert [(i.domain, i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")] == [("", 13)]
    assert proto.ir_version <= 8  # what TensorRT 8.x's parser reads
    dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in proto.graph.input] == ["input_0"]
    assert dims(proto.graph.input[0]) == [1, 3, size, size]
    outputs = {o.name: dims(o) for o in proto.graph.output}
    if fmt == "jetson":
        assert outputs == {"scores": [1, P, 3], "boxes": [1, P, 4]}
    else:
        K = DISPLAY.max_detections  # export_onnx's default settings
        assert outputs == {"num_detections": [1, 1], "detection_boxes": [1, K, 4],
                           "detection_scores": [1, K], "detection_classes": [1, K]}
    standard_ops = {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}
    assert standard_ops <= TENSORRT_OPS, standard_ops - TENSORRT_OPS
    assert (tmp_path / "labels.txt").read_text().splitlines() == CLASS_NAMES

    report = check_export(result.path, model, images=IMAGES)
    assert report.passed, report.summary()
    assert report.format == fmt and report.num_images == 1
    if fmt == "onnx-nms":
        assert all(n > 0 for n in report.num_detections)  # the comparison saw real detections
