"""The export formats: their names, the graphs' input and output names, opsets, post-processing settings.

Every format takes the same input, ``input_0`` float32 ``[B, 3, H, W]``: RGB already scaled to
[-1, 1] (what jetson-inference's ``detectnet`` feeds an ONNX SSD: ``(pixel / 255 - 0.5) / 0.5``).
The model's own mean/std are folded into the graph, so one preprocessing serves every model.

- ``jetson``: outputs ``scores`` ``[B, P, C]`` softmax probabilities (class 0 = background) and
  ``boxes`` ``[B, P, 4]`` decoded, normalized x1, y1, x2, y2; no NMS. What ``detectnet
  --input-blob=input_0 --output-cvg=scores --output-bbox=boxes`` reads.
- ``onnx-nms``: the same network followed by the SSD inference tail in standard ONNX ops (per-class
  ``TopK``, ``NonMaxSuppression``, merge), with the semantics of :func:`ssdfast.ops.ssd_postprocess`.
  Outputs ``num_detections`` int32 ``[B, 1]``, ``detection_boxes`` ``[B, K, 4]`` (normalized xyxy),
  ``detection_scores`` ``[B, K]``, ``detection_classes`` int32 ``[B, K]``, ``K = max_detections``.
- ``trt-nms``: the same network followed by TensorRT's ``EfficientNMS_TRT`` plugin node (decoded
  boxes in, softmax scores in, background class 0), with the same four outputs as ``onnx-nms``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMATS",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_OPSET",
    "INPUT_NAME",
    "JETSON_OUTPUTS",
    "NMS_OUTPUTS",
    "RAW_SCORES",
    "RAW_BOXES",
    "TRT_PLUGIN_DOMAIN",
    "PostprocessSettings",
    "model_image_size",
]

#: The export formats, the first is the default.
FORMATS = ("jetson", "onnx-nms", "trt-nms")
#: TensorRT 8.2 (the last JetPack for Jetson Nano) parses opsets up to 13.
DEFAULT_OPSET = 13
#: ``NonMaxSuppression`` with its current inputs and ``Range`` / ``ScatterND`` need opset 11.
MIN_OPSET = 11
#: The highest opset the TorchScript exporter writes here.
MAX_OPSET = 20

INPUT_NAME = "input_0"
JETSON_OUTPUTS = ("scores", "boxes")
NMS_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
#: Names of the network outputs inside the onnx-nms / trt-nms graphs (they feed the NMS part).
RAW_SCORES = "raw_scores"
RAW_BOXES = "raw_boxes"
#: Domain of the ``EfficientNMS_TRT`` node. TensorRT's ONNX parser finds a plugin by the node's
#: op type alone (its fallback plugin importer ignores the domain); a domain of its own keeps the
#: node out of the standard ``ai.onnx`` domain, so ``onnx.checker`` validates the rest of the graph.
TRT_PLUGIN_DOMAIN = "trt.plugins"


@dataclass(frozen=True)
class PostprocessSettings:
    """The SSD inference tail's settings, as :func:`ssdfast.ops.ssd_postprocess` takes them.

    The defaults are :class:`ssdfast.Detector`'s (0.3 suits display; use 0.01 for mAP evaluation).

    ``score_threshold``: a candidate needs a score greater than this. ``iou_threshold``: NMS within
    a class drops a box whose IoU with a kept, higher-scoring box is greater than this. ``top_k``:
    candidates kept per class before NMS (``onnx-nms``; EfficientNMS has no per-class cut).
    ``max_detections``: detections kept per image after merging the classes (``K``).
    """

    score_threshold: float = 0.3
    iou_threshold: float = 0.45
    top_k: int = 200
    max_detections: int = 200

    def __post_init__(self) -> None:
        for name in ("score_threshold", "iou_threshold"):
            value = float(getattr(self, name))
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} should be in [0, 1], got {value}")
        for name in ("top_k", "max_detections"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} should be a positive integer, got {value}")

    def to_metadata(self) -> dict[str, str]:
        """The settings as the exported file's ``metadata_props`` (``ssdfast.<name>``)."""
        return {f"ssdfast.{name}": str(value) for name, value in self.__dict__.items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> PostprocessSettings | None:
        """The settings written by :meth:`to_metadata`, or None when the file has none (``jetson``)."""
        if "ssdfast.score_threshold" not in meta:
            return None
        return cls(
            score_threshold=float(meta["ssdfast.score_threshold"]),
            iou_threshold=float(meta["ssdfast.iou_threshold"]),
            top_k=int(meta["ssdfast.top_k"]),
            max_detections=int(meta["ssdfast.max_detections"]),
        )


def model_image_size(config: Any) -> tuple[int, int]:
    """``(H, W)`` of the images a model takes, from its config's ``image_size`` (int or pair)."""
    size = getattr(config, "image_size", None)
    if size is None:
        raise ValueError("the model's config has no image_size")
    if isinstance(size, (tuple, list)):
        h, w = (int(s) for s in size)
        return h, w
    return int(size), int(size)
