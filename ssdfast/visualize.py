"""Draw detections on images (``torchvision.utils.draw_bounding_boxes``) and save them.

Each class gets a fixed colour (the same in every image and every run), and each box a label
``"<class name> <score>"`` on a filled tag in the box's colour.
"""
from __future__ import annotations

import colorsys
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["class_color", "to_uint8_chw", "draw_detections", "annotate", "save_image"]


def class_color(label: int) -> tuple[int, int, int]:
    """A saturated RGB colour for ``label``, fixed per label and far from its neighbours' (golden-ratio hues)."""
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb``."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def to_uint8_chw(image: Any) -> Tensor:
    """A PIL image, numpy ``HWC`` uint8 (RGB), or tensor ``CHW`` (uint8, or float in [0, 1]) -> uint8 ``[3, H, W]``."""
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim != 3:
            raise ValueError(f"image tensor should be [C, H, W], got {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        if hasattr(image, "convert"):  # PIL
            image = image.convert("RGB")
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3:
            raise ValueError(f"image array should be [H, W, C], got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    elif t.shape[0] != 3:
        raise ValueError(f"image should have 1, 3 or 4 channels, got {t.shape[0]}")
    return t.contiguous()


def draw_detections(
    image: Any,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    *,
    width: int | None = None,
    font: str | None = None,
    font_size: int | None = None,
) -> Tensor:
    """Draw boxes with ``"name score"`` tags on an image.

    Args:
        image: PIL, numpy ``HWC`` uint8 or tensor ``CHW`` (see :func:`to_uint8_chw`).
        boxes: ``[K, 4]`` xyxy in pixels of ``image``.
        labels: ``[K]`` integer labels (names taken from ``class_names``), or ``K`` strings.
        scores: ``[K]`` or ``None`` (no score in the tags).
        class_names: label -> name (``BACKGROUND`` first); default: the label number.
        width: line width; default scales with the image (2 px at 500 px).
        font, font_size: a TrueType font file and its size; default PIL's built-in font.
    Returns:
        uint8 ``[3, H, W]``: a new image, the input is untouched.
    """
    from torchvision.utils import draw_bounding_boxes

    img = to_uint8_chw(image)
    boxes_t = torch.as_tensor(np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes, np.float32))
    boxes_t = boxes_t.reshape(-1, 4)
    if boxes_t.shape[0] == 0:
        return img.clone()
    labels_list = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if len(labels_list) != boxes_t.shape[0]:
        raise ValueError(f"got {boxes_t.shape[0]} boxes but {len(labels_list)} labels")
    scores_list = None if scores is None else (scores.tolist() if hasattr(scores, "tolist") else list(scores))
    h, w = img.shape[-2:]
    # keep boxes inside the image: draw_bounding_boxes wants 0 <= x1 <= x2 < W
    boxes_t = boxes_t.clone()
    boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, w - 1)
    boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, h - 1)
    boxes_t[:, 2:] = torch.maximum(boxes_t[:, 2:], boxes_t[:, :2])
    texts, colors = [], []
    for i, label in enumerate(labels_list):
        if isinstance(label, str):
            name, key = label, sum(label.encode())  # a stable colour per name
        else:
            key = int(label)
            name = class_names[key] if class_names is not None and 0 <= key < len(class_names) else str(key)
        texts.append(name if scores_list is None else f"{name} {scores_list[i]:.2f}")
        colors.append(class_color(key))
    if width is None:
        width = max(1, round(max(h, w) / 250))
    return draw_bounding_boxes(
        img, boxes_t, labels=texts, colors=colors, width=int(width), font=font, font_size=font_size,
        label_colors=[_text_color(c) for c in colors], fill_labels=True,
    )


def annotate(image: Any, detections: Any, class_names: Sequence[str] | None = None, **kwargs: Any) -> Tensor:
    """:func:`draw_detections` for one image's detections: a dict / tuple ``(boxes, scores, labels)``
    or a :class:`ssdfast.detector.Detections` (whose ``label_names`` are used when given)."""
    if isinstance(detections, dict):
        boxes, scores, labels = detections["boxes"], detections.get("scores"), detections["labels"]
    elif isinstance(detections, (tuple, list)):
        boxes, scores, labels = detections[:3]
    else:
        boxes, scores, labels = detections.boxes, getattr(detections, "scores", None), detections.labels
        names = getattr(detections, "label_names", None)
        if class_names is None and names is not None and len(names) == len(labels):
            # colours still follow the integer labels; the tags use the names
            return _draw_named(image, boxes, labels, scores, list(names), **kwargs)
    return draw_detections(image, boxes, labels, scores, class_names, **kwargs)


def _draw_named(image: Any, boxes: Any, labels: Any, scores: Any, names: list[str], **kwargs: Any) -> Tensor:
    labels_list = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    table: dict[int, str] = {int(lab): name for lab, name in zip(labels_list, names)}
    size = max(table) + 1 if table else 0
    class_names = [table.get(i, str(i)) for i in range(size)]
    return draw_detections(image, boxes, labels, scores, class_names, **kwargs)


def save_image(image: Tensor, path: str | os.PathLike, quality: int = 90) -> None:
    """Save a uint8 ``[3, H, W]`` image; the format follows the extension (``.jpg``, ``.png``, ...)."""
    from PIL import Image

    arr = to_uint8_chw(image).permute(1, 2, 0).numpy()
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    options = {"quality": int(quality)} if ext in (".jpg", ".jpeg", ".webp") else {}
    Image.fromarray(arr).save(path, **options)
