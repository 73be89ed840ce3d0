"""Fixtures of the training-loop tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def voc_data(tmp_path_factory):
    """A generated VOC set: 15 images of 96 px, 3 classes (12 train / 3 test)."""
    from ssdfast.data.synthetic import generate

    root = tmp_path_factory.mktemp("voc")
    generate(root, format="voc", num_images=15, image_size=96, seed=0, num_classes=3)
    return root
