"""The export formats: their names, the graphs' input and output names, opsets, the post-processing
settings' metadata keys.

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

from dataclasses import asdict
from typing import Any

from ..ops.settings import PostprocessSettings

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
    "settings_metadata",
    "settings_from_metadata",
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


def settings_metadata(settings: PostprocessSettings) -> dict[str, str]:
    """The post-processing settings as an exported file's ``metadata_props``: ``ssdfast.<field>``
    (``ssdfast.score_threshold``, ``ssdfast.iou_threshold``, ``ssdfast.top_k``, ``ssdfast.max_detections``)."""
    return {f"ssdfast.{name}": str(value) for name, value in asdict(settings).items()}


def settings_from_metadata(meta: dict[str, str]) -> PostprocessSettings | None:
    """The settings :func:`settings_metadata` wrote, or None when the file has none (``jetson``)."""
    if "ssdfast.score_threshold" not in meta:
        return None
    return PostprocessSettings(
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
