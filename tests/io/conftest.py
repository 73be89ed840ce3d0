"""Image files in the formats and states users' data sets hold, generated here."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def photo_like(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth, noisy RGB image that compresses like a photo (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 256], -1) + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture
def photo() -> np.ndarray:
    return photo_like()
