"""Every network gives the same detections in every installed runtime as in PyTorch: a checkpoint run
by ONNX Runtime and OpenVINO (exported on the fly and cached) against the torch runtime, boxes within
0.01 pixel and scores within 1e-4 (tests/runtimes/_compare.py), on networks with weights at a trained
network's scale (tests/export/_export_models.py: confident, input-dependent detections) and on a
briefly trained model (tests/_trained.py)."""
from __future__ import annotations

import functools
import importlib.util

import pytest
import torch

from ssdfast import load_detector
from ssdfast.export.inputs import sample_images
from ssdfast.model_files import save_checkpoint
from ssdfast.models import list_models
from ssdfast.ops import DISPLAY, PostprocessSettings
from tests.export._export_models import CLASS_NAMES, make_model

from ._compare import assert_same_detections

pytestmark = pytest.mark.usefixtures("one_thread")

#: The runtimes installed here (CI installs both).
INSTALLED = [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r) is not None]
RUNTIMES = [pytest.param(r, marks=pytest.mark.skipif(r not in INSTALLED, reason=f"{r} not installed"))
            for r in ("onnxruntime", "openvino")]
#: Each network at a small size (the VGG networks at the smallest they take: slow on 2 cores).
NETWORKS = [pytest.param(n, 128, id=n) for n in list_models() if not n.startswith("vgg")] + [
    pytest.param("vgg16-ssd", 300, id="vgg16-ssd", marks=pytest.mark.slow),
    pytest.param("vgg16-ssd512", 320, id="vgg16-ssd512", marks=pytest.mark.slow),
]
#: Many detections per image, so that the boxes and classes compared are many.
SETTINGS = PostprocessSettings(score_threshold=0.3, max_detections=150)


def test_every_network_is_covered():
    assert {p.values[0] for p in NETWORKS} == set(list_models())


@functools.lru_cache(maxsize=None)  # test processes (pytest-xdist) interleave the networks
def _checkpoint(name: str, size: int, folder: str) -> str:
    path = f"{folder}/{name}.pth"
    save_checkpoint(path, make_model(name, image_size=size), CLASS_NAMES)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("agreement"))


@pytest.mark.skipif(not INSTALLED, reason="neither onnxruntime nor openvino is installed")
@pytest.mark.parametrize("name,size", NETWORKS)
def test_same_detections_as_torch(name, size, folder):
    """One export per network (cached: the second runtime reuses it), run in each installed runtime."""
    checkpoint = _checkpoint(name, size, folder)
    images = sample_images(2, (int(size * 0.8), int(size * 1.2)), seed=2)
    expected = load_detector(checkpoint, runtime="torch", settings=SETTINGS)(images)
    exported = set()
    for runtime in INSTALLED:
        other = load_detector(checkpoint, runtime=runtime, settings=SETTINGS, cache_dir=f"{folder}/cache")
        assert other.source.runtime == runtime and other.source.exported.endswith(".onnx")
        assert other.model is None and other.network.outputs_probabilities
        exported.add(other.source.exported)
        pairs = 0
        for a, b in zip(expected, other(images)):
            pairs += assert_same_detections(a, b, SETTINGS.score_threshold, SETTINGS.max_detections)
        assert pairs >= 20, f"{runtime}: only {pairs} detections compared"
    assert len(exported) == 1


@pytest.mark.parametrize("preprocess", ["ssdfast", "detectnet"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_trained_model_same_detections(trained, runtime, preprocess, tmp_path):
    """The briefly trained model: its few, confident detections are the same in every runtime, fed
    either way (detectnet's preprocessing is the same nearest-resized pixels on both sides)."""
    from ssdfast.data import build_dataset
    from ssdfast.io import load_image

    dataset = build_dataset("voc", [str(trained["data"])], split="test")
    images = [load_image(dataset.image_path(i)).pixels for i in range(len(dataset))]
    settings = DISPLAY
    reference = load_detector(trained["checkpoint"], runtime="torch", preprocess=preprocess, settings=settings)
    other = load_detector(trained["checkpoint"], runtime=runtime, preprocess=preprocess, settings=settings,
                          cache_dir=tmp_path)
    pairs = 0
    for a, b in zip(reference(images), other(images)):
        pairs += assert_same_detections(a, b, settings.score_threshold, settings.max_detections)
    assert pairs >= len(images)  # about one object per image found, at least


def test_detections_differ_with_the_wrong_priors(folder):
    """The comparison can fail: a network whose boxes are decoded against other priors is caught."""
    checkpoint = _checkpoint("mb3-small-ssd-lite", 128, folder)
    images = sample_images(1, (100, 150), seed=2)
    reference = load_detector(checkpoint, runtime="torch", settings=SETTINGS)
    shifted = load_detector(checkpoint, runtime="torch", settings=SETTINGS)
    shifted.network.priors = reference.network.priors + torch.tensor([0.01, 0.0, 0.0, 0.0])
    with pytest.raises(AssertionError, match="one side only"):
        assert_same_detections(reference(images)[0], shifted(images)[0], SETTINGS.score_threshold,
                               SETTINGS.max_detections)
