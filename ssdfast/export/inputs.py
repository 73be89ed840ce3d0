"""Images for checking an export and calibrating INT8, preprocessed as the Detector does.

Files are read with :func:`ssdfast.io.load_image` (the one image reader: EXIF orientation, odd
modes, truncated files used with a note); the preprocessing is :func:`ssdfast.detector.preprocess`
itself, so a check feeds both sides exactly what the Detector would feed the network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..detector import preprocess
from ..errors import DataError
from ..io import IMAGE_EXTENSIONS, LoadedImage, load_image

__all__ = ["load_images", "sample_images", "prepare_inputs", "calibration_batches"]


def load_images(paths: Iterable[str | os.PathLike], limit: int | None = None,
                flag: str | None = None) -> list[LoadedImage]:
    """Read image files, or folders searched (recursively, in name order) for image files.

    Returns :class:`ssdfast.io.LoadedImage` s: ``pixels`` uint8 RGB ``[3, H, W]``, and ``warning``
    (a line naming the file) when a truncated file was used as decoded.

    Raises:
        ssdfast.errors.DataError: a path that does not exist (the message names ``flag`` too), or a
            file that cannot be decoded (the message names it).
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError.about(p, "no such image or folder", flag)
    if limit is not None:
        files = files[:limit]
    return [load_image(f) for f in files]


def sample_images(count: int = 4, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[np.ndarray]:
    """Deterministic photo-like test images (gradients, filled shapes, noise): RGB uint8 ``[H, W, 3]``.

    Sizes vary around ``size`` (H, W) so the resize in preprocessing is exercised.
    """
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h = int(size[0] * (0.75 + 0.5 * rng.random()))
        w = int(size[1] * (0.75 + 0.5 * rng.random()))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-0.5, 0.5, (2, 3))
        img = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
        for _ in range(3 + i):
            color = rng.uniform(0, 255, 3)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
            if rng.random() < 0.5:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            img[mask] = color
        img += rng.normal(0, 6, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def prepare_inputs(images: Sequence[Any], config: Any) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Preprocess images for both sides of a comparison.

    Args:
        images: anything :func:`ssdfast.detector.preprocess` takes (numpy ``[H, W, 3]``, PIL images,
            ``[3, H, W]`` tensors such as :func:`load_images`' ``pixels``), any sizes.
        config: the model's config (``image_size``, ``mean``, ``std``, ``antialias``).

    Returns:
        ``(normalized[B, 3, H, W], exported_input[B, 3, H, W], sizes)``: the first is what the
        PyTorch model takes (the Detector's preprocessing), the second the same pixels as the
        exported graph takes them, RGB in [-1, 1] (``2 * x01 - 1`` with ``x01 = normalized * std + mean``),
        ``sizes[i] = (height, width)`` of image i.
    """
    normalized, sizes = preprocess(list(images), config)
    normalized = normalized.float().cpu().contiguous()
    mean = torch.as_tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)
    exported = (normalized * std + mean) * 2 - 1
    return normalized, exported, [tuple(s) for s in sizes]


def calibration_batches(images: Sequence[Any], config: Any, batch_size: int) -> list[np.ndarray]:
    """Images prepared as the exported graph's input (:func:`prepare_inputs`' second output, float32
    ``[batch_size, 3, H, W]`` in [-1, 1]) in whole batches; the images after the last whole batch are
    left out."""
    if batch_size < 1:
        raise ValueError(f"batch_size should be at least 1, got {batch_size}")
    batches = []
    for start in range(0, len(images) - batch_size + 1, batch_size):
        _, x, _ = prepare_inputs(images[start:start + batch_size], config)
        batches.append(x.numpy())
    return batches
