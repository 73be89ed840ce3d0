"""Fixtures of the io tests; the image generators are in :mod:`tests.io.samples`."""
from __future__ import annotations

import numpy as np
import pytest

from .samples import photo_like


@pytest.fixture
def photo() -> np.ndarray:
    return photo_like()
