"""Network outputs -> per-image detections: :class:`Detections` (one image's boxes in its pixels,
scores, labels) and :func:`postprocess` (softmax when the network gives logits,
``ops.ssd_postprocess``, scaling to each image's pixels and clipping to it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..ops.settings import PostprocessSettings

__all__ = ["Detections", "postprocess", "check_settings"]


@dataclass
class Detections:
    """Detections in one image, by descending score: what a :class:`~ssdfast.detector.Detector`
    returns and what evaluation scores (``ssdfast.evaluation`` turns them into numpy only inside its
    metrics).

    Attributes:
        boxes: ``[K, 4]`` float32, xyxy in pixels of the original image, clipped to it.
        scores: ``[K]`` float32 class probabilities.
        labels: ``[K]`` int64 class indices (1..C-1).
        label_names: the class name of each detection (None from :func:`postprocess` without ``class_names``).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    label_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: str | torch.device) -> Detections:
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device), self.label_names)

    @classmethod
    def empty(cls) -> Detections:
        """No detection (e.g. for an image that could not be read)."""
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), [])


def check_settings(settings: Any) -> PostprocessSettings:
    """``settings`` if it is a :class:`~ssdfast.ops.PostprocessSettings`, else a TypeError."""
    if not isinstance(settings, PostprocessSettings):
        raise TypeError(f"settings should be a PostprocessSettings, got {type(settings).__name__}")
    return settings


def postprocess(
    confidences: Tensor,
    locations: Tensor,
    priors: Tensor,
    sizes: Sequence[tuple[int, int]],
    variances: Sequence[float],
    settings: PostprocessSettings,
    *,
    class_names: Sequence[str] | None = None,
    probabilities: bool = False,
) -> list[Detections]:
    """Network outputs -> one :class:`Detections` per image (boxes in its pixels, xyxy).

    Softmax over ``confidences[B, P, C]`` (unless ``probabilities``: they are softmax scores
    already, as exported graphs give them), then ``ops.ssd_postprocess`` with ``settings`` (decode
    of ``locations`` against ``priors`` with ``variances``, per-class score threshold + top-k + NMS at
    ``iou_threshold``, merge, keep ``max_detections``); boxes scaled from normalized to the pixels of
    each image (``sizes[i] = (height, width)``) and clipped to it.
    Results stay on the device of the inputs; boxes and scores are float32. ``label_names`` are
    filled in when ``class_names`` are given (that costs a copy of the labels to the CPU).
    """
    if len(sizes) != confidences.shape[0]:
        raise ValueError(f"{len(sizes)} image sizes for a batch of {confidences.shape[0]}")
    check_settings(settings)
    scores = confidences.float() if probabilities else F.softmax(confidences.float(), dim=2)
    boxes, det_scores, labels, num = ops.ssd_postprocess(
        locations.float(), scores, priors.to(locations.device).float(), variances, **asdict(settings))
    hw = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=torch.float32, device=boxes.device)
    boxes = torch.minimum((boxes.float() * hw[:, None, :]).clamp(min=0), hw[:, None, :])
    counts = num.tolist()  # the one device -> host copy: per-image counts to slice the padded outputs
    out = []
    for i, n in enumerate(counts):
        names = None if class_names is None else [class_names[c] for c in labels[i, :n].tolist()]
        out.append(Detections(boxes[i, :n], det_scores[i, :n].float(), labels[i, :n], names))
    return out
