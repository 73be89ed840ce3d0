"""Fixtures of the model-file tests."""
from __future__ import annotations

import pytest
import torch

from ssdfast.models import create_model


@pytest.fixture(scope="module")
def model():
    """A small mb2-ssd-lite of 3 classes (background included), in eval mode."""
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=64).eval()
