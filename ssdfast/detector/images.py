"""Images in, the network's input out: :class:`Preprocessing` (what a network's input is made with),
:func:`prepare_image` (one image) and :func:`preprocess` (a batch), and :func:`to_image_tensor` (any
image type -> an RGB tensor).

Three resizes to the network's size, aspect ratio not kept (:data:`RESIZES`):

- ``"antialias"``: torchvision's antialiased bilinear, what ssdfast trains its models with;
- ``"opencv"``: OpenCV's ``INTER_LINEAR`` without antialiasing, what pytorch-ssd trained and fed its
  models with (models loaded from pytorch-ssd files, ``config.antialias`` False);
- ``"nearest"``: jetson-inference detectNet's: each output pixel takes the source pixel
  ``floor(x * in / out)`` (float32 arithmetic, no half-pixel offset), as its ``c/tensorConvert.cu``
  (``gpuTensorNormMean``) samples the camera image before normalizing it.

then scaled to [0, 1] and normalized with the preprocessing's mean and std. A :class:`Preprocessing`
is a small picklable value: the evaluation's loader workers prepare images with it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ..data.transforms import resize_image

__all__ = ["RESIZES", "Preprocessing", "prepare_image", "preprocess", "resize_nearest", "to_image_tensor"]

#: The resizes a :class:`Preprocessing` can use (see the module docstring).
RESIZES = ("antialias", "opencv", "nearest")


def _three(values: Any, name: str) -> tuple[float, float, float]:
    t = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else [values] * 3))
    if len(t) != 3 or not all(math.isfinite(v) for v in t):
        raise ValueError(f"{name} should be 3 finite numbers (one per RGB channel), got {values!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """How images become a network's input: resized to ``image_size`` (``(height, width)``) with
    ``resize`` (one of :data:`RESIZES`), scaled to [0, 1], normalized as ``(x - mean) / std``.

    ``Preprocessing.of(config)`` is a model's own (its ``image_size``, ``mean``, ``std``, and
    ``antialias`` or OpenCV's resize); an exported graph folds its model's mean/std in and takes RGB
    in [-1, 1]: ``mean = std = (0.5, 0.5, 0.5)``, exactly detectNet's ``(pixel / 255 - 0.5) / 0.5``.
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "antialias"

    def __post_init__(self) -> None:
        size = self.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if int(h) < 1 or int(w) < 1:
            raise ValueError(f"image_size should be positive, got {size!r}")
        object.__setattr__(self, "image_size", (int(h), int(w)))
        object.__setattr__(self, "mean", _three(self.mean, "mean"))
        std = _three(self.std, "std")
        if min(std) <= 0:
            raise ValueError(f"std should be positive, got {std}")
        object.__setattr__(self, "std", std)
        if self.resize not in RESIZES:
            raise ValueError(f"resize should be one of {', '.join(RESIZES)}, got {self.resize!r}")

    @classmethod
    def of(cls, config: Any, resize: str | None = None) -> Preprocessing:
        """A model's preprocessing, from its config (``image_size``, ``mean``, ``std``, ``antialias``);
        ``resize`` replaces the model's own (e.g. ``"nearest"``: detectNet's input path)."""
        if isinstance(config, Preprocessing):
            return config if resize is None else config.with_resize(resize)
        own = "antialias" if bool(getattr(config, "antialias", True)) else "opencv"
        return cls(config.image_size, tuple(config.mean), tuple(config.std), resize or own)

    def with_resize(self, resize: str) -> Preprocessing:
        """The same with another resize."""
        return dataclasses.replace(self, resize=resize)


def to_image_tensor(image: Any) -> Tensor:
    """One image as an RGB ``Tensor[3, H, W]`` (uint8, or float in [0, 1]).

    Accepts a PIL image (any mode), a numpy array ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` (RGB
    order; uint8, or float in [0, 1]) or a tensor ``CxHxW`` with C in 1, 3, 4 (uint8 or float in [0, 1]).
    Alpha channels are dropped, grayscale is repeated to 3 channels.
    """
    if isinstance(image, Tensor):
        t = image
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"an image tensor should be [C, H, W] with C in (1, 3, 4), got shape {tuple(t.shape)}")
    else:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            t = TF.pil_to_tensor(image)
        else:
            import numpy as np

            if not isinstance(image, np.ndarray):
                raise TypeError(f"expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")
            a = image
            if a.ndim == 2:
                a = a[:, :, None]
            if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
                raise ValueError(f"a numpy image should be HxW or HxWxC with C in (1, 3, 4), got shape {a.shape}")
            a = np.ascontiguousarray(a)
            if not a.flags.writeable:  # e.g. np.asarray(pil_image): torch wants writable memory
                a = a.copy()
            t = torch.from_numpy(a).permute(2, 0, 1)
    if t.shape[0] == 4:
        t = t[:3]
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise ValueError(f"image values should be uint8 or float in [0, 1], got {t.dtype}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    return t


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    return [images]


def _nearest_sources(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """detectNet's source index of each output pixel along one axis: ``int((float)x * scale)`` with
    ``scale = (float)in / (float)out`` in float32, as ``gpuTensorNormMean`` computes it."""
    scale = torch.tensor(float(n_in), dtype=torch.float32) / torch.tensor(float(n_out), dtype=torch.float32)
    index = (torch.arange(n_out, dtype=torch.float32) * scale).to(torch.int64)  # truncation, >= 0
    return index.clamp_(max=n_in - 1).to(device)


def resize_nearest(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``image [..., C, H, W]`` (any dtype) -> ``[..., C, h, w]``, ``size = (h, w)``, by detectNet's
    nearest-neighbour sampling (see the module docstring): the pixels it feeds the network."""
    h, w = size
    in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
    if (in_h, in_w) == (h, w):
        return image
    rows = image.index_select(-2, _nearest_sources(in_h, h, image.device))
    return rows.index_select(-1, _nearest_sources(in_w, w, image.device))


def prepare_image(image: Tensor, preprocessing: Preprocessing | Any) -> Tensor:
    """One decoded image -> the network's input: ``[3, H, W]`` (uint8, or float in [0, 1]; any
    device) -> float32 ``[3, h, w]`` made with ``preprocessing`` (a :class:`Preprocessing`, or a
    model's config: its own, :meth:`Preprocessing.of`). The evaluator calls it in its loader
    workers, the :class:`~ssdfast.detector.Detector` in :func:`preprocess`: the same numbers either way.
    """
    p = Preprocessing.of(preprocessing)
    if p.resize == "nearest":
        t = resize_nearest(image, p.image_size)
    else:
        t = resize_image(image, p.image_size, antialias=p.resize == "antialias")
    t = TF.to_dtype(t, torch.float32, scale=True)
    return TF.normalize(t, list(p.mean), list(p.std))


def preprocess(
    images: Any,
    preprocessing: Preprocessing | Any,
    device: str | torch.device | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Images of any sizes -> the network's input batch (each through :func:`prepare_image`).

    Args:
        images: one image or a list of them (see :func:`to_image_tensor`), or a ``[B, C, H, W]`` tensor.
        preprocessing: a :class:`Preprocessing`, or a model's config (its own preprocessing).
        device: where to resize and return the batch (default: where the images are).
        memory_format: of the batch: ``torch.channels_last`` for a channels_last network (the
            Detector's fused path), same values either way.

    Returns:
        ``(batch[B, 3, h, w] float32, sizes)`` with ``sizes[i] = (height, width)`` of image i.
    """
    p = Preprocessing.of(preprocessing)
    out = []
    sizes = []
    for image in _as_list(images):
        t = to_image_tensor(image)
        if device is not None:
            t = t.to(device, non_blocking=True)
        sizes.append((int(t.shape[1]), int(t.shape[2])))
        out.append(prepare_image(t, p))
    if not out:
        raise ValueError("no images given")
    batch = torch.stack(out)
    if memory_format is not torch.contiguous_format:
        batch = batch.contiguous(memory_format=memory_format)
    return batch, sizes

