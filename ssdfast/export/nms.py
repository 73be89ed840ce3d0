"""The SSD inference tail as ONNX graph parts, appended to a graph that computes ``scores[B, P, C]``
(softmax) and ``boxes[B, P, 4]`` (normalized xyxy):

- :func:`append_onnx_nms`: standard ONNX ops (``TopK``, ``NonMaxSuppression``, ``ScatterND``...)
  with the semantics of :func:`ssdfast.ops.ssd_postprocess` (the ``onnx-nms`` format);
- :func:`append_efficient_nms`: TensorRT's ``EfficientNMS_TRT`` plugin node (the ``trt-nms`` format).

Both are written with :mod:`onnx.helper`, so their graph is exactly what is written here, whichever
PyTorch version traced the network part. Both give the four outputs of
:data:`~ssdfast.export.formats.NMS_OUTPUTS`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ops.settings import PostprocessSettings
from .formats import MIN_OPSET, NMS_OUTPUTS, RAW_BOXES, RAW_SCORES, TRT_PLUGIN_DOMAIN

__all__ = [
    "append_onnx_nms",
    "append_efficient_nms",
    "efficient_nms_attributes",
    "EFFICIENT_NMS_VERSION",
    "EFFICIENT_NMS_ATTRIBUTES",
]


# ----------------------------------------------------------------------------- graph helpers


class _Builder:
    """Appends nodes and constants to a graph, with names under one prefix."""

    def __init__(self, graph: Any, prefix: str, opset: int) -> None:
        self.graph = graph
        self.prefix = prefix
        self.opset = opset
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, hint: str, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper

        name = self._name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, hint: str, value: Any) -> str:
        return self.const(hint, value, np.int64)

    def f32(self, hint: str, value: Any) -> str:
        return self.const(hint, value, np.float32)

    def node(self, op: str, inputs: Sequence[str], hint: str | None = None, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        base = hint or op.lower()
        if isinstance(outputs, int):
            names = [self._name(base) for _ in range(outputs)]
        else:
            names = list(outputs)
        self.graph.node.append(
            helper.make_node(op, list(inputs), names, name=self._name(op), domain=domain, **attrs)
        )
        return names

    def op(self, op: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        return self.node(op, inputs, hint=hint, **attrs)[0]

    def reduce_sum(self, x: str, axis: int, keepdims: bool = True) -> str:
        if self.opset >= 13:
            return self.op("ReduceSum", x, self.i64("axes", [axis]), keepdims=int(keepdims))
        return self.op("ReduceSum", x, axes=[axis], keepdims=int(keepdims))


def _nms_outputs(batch: int | str, k: int) -> list[Any]:
    """The graph outputs of both NMS formats: :data:`NMS_OUTPUTS` with their types and shapes."""
    from onnx import TensorProto, helper

    types = (TensorProto.INT32, TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT32)
    shapes = ([batch, 1], [batch, k, 4], [batch, k], [batch, k])
    return [helper.make_tensor_value_info(name, t, shape) for name, t, shape in zip(NMS_OUTPUTS, types, shapes)]


def _batch_dim(model: Any) -> int | str:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "batch")


def _opset_of(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ValueError("the model has no ai.onnx opset import")


# ----------------------------------------------------------------------------- onnx-nms


def append_onnx_nms(model: Any, num_classes: int, num_priors: int, settings: PostprocessSettings,
                    scores: str = RAW_SCORES, boxes: str = RAW_BOXES) -> Any:
    """Append the SSD inference tail, in standard ONNX ops, to a graph that computes
    ``scores[B, P, C]`` (softmax) and ``boxes[B, P, 4]`` (normalized xyxy).

    The result has the semantics of :func:`ssdfast.ops.ssd_postprocess` (decode already done):
    per image and per class ``c >= 1``, the ``top_k`` candidates by score (ties: lower prior index),
    those with a score greater than ``score_threshold``, greedy NMS at ``iou_threshold``; then all
    classes merged by descending score (ties: lower class, then higher rank), cut to
    ``max_detections`` and padded with zeros.

    How: ``TopK`` per class; the candidates of every (image, class) become one NMS "batch"; they
    are given their rank as NMS score (``top_k - rank``, 0 below the threshold, with NMS score
    threshold 0.5), so ``NonMaxSuppression`` visits them in exactly the reference's order whatever
    its tie-breaking; the kept ones are scattered into a dense ``[B, (C-1) * top_k]`` score map,
    and a final ``TopK`` merges the classes (ONNX's TopK puts the lower index first on ties).

    Modifies ``model`` in place (``scores`` / ``boxes`` stop being graph outputs) and returns it.
    """
    from onnx import TensorProto

    opset = _opset_of(model)
    if opset < MIN_OPSET:
        raise ValueError(f"onnx-nms needs opset >= {MIN_OPSET}, the graph has opset {opset}")
    C, P = int(num_classes), int(num_priors)
    if C < 2:
        raise ValueError(f"num_classes should be at least 2 (background + one class), got {C}")
    M = C - 1
    k = min(int(settings.top_k), P)
    N = M * k
    K = int(settings.max_detections)
    batch = _batch_dim(model)
    g = model.graph
    b = _Builder(g, "postprocess", opset)

    # Per-class candidates: the top k priors of each foreground class.
    fg = b.op("Slice", scores, b.i64("start", [1]), b.i64("end", [C]), b.i64("axis", [2]), hint="fg_scores")
    fg_t = b.op("Transpose", fg, perm=[0, 2, 1], hint="fg_scores_t")  # [B, M, P]
    cand_scores, cand_prior = b.node("TopK", [fg_t, b.i64("k", [k])], hint="cand", outputs=2,
                                     axis=-1, largest=1, sorted=1)  # [B, M, k]
    # Row offsets of each image in the flattened [B * P, 4] boxes.
    shape = b.op("Shape", scores)
    batch_size = b.op("Gather", shape, b.i64("zero", 0), axis=0)  # scalar
    image_index = b.op("Range", b.i64("zero", 0), batch_size, b.i64("one", 1))  # [B]
    prior_offset = b.op("Reshape", b.op("Mul", image_index, b.i64("P", P)), b.i64("shape", [-1, 1, 1]))
    flat_boxes = b.op("Reshape", boxes, b.i64("shape", [-1, 4]))
    cand_boxes = b.op("Gather", flat_boxes, b.op("Add", cand_prior, prior_offset), axis=0)  # [B, M, k, 4]

    # NMS over B * M independent "batches" of k candidates each, scored by rank.
    valid = b.op("Greater", cand_scores, b.f32("score_threshold", [settings.score_threshold]))
    rank_score = b.f32("rank_score", (k - np.arange(k, dtype=np.float32)).reshape(1, 1, k))
    nms_scores = b.op("Where", valid, rank_score, b.f32("zero", 0.0))
    nms_scores = b.op("Reshape", nms_scores, b.i64("shape", [-1, 1, k]))
    nms_boxes = b.op("Reshape", cand_boxes, b.i64("shape", [-1, k, 4]))
    selected = b.op(
        "NonMaxSuppression",
        nms_boxes,
        nms_scores,
        b.i64("max_per_class", [k]),
        b.f32("iou_threshold", [settings.iou_threshold]),
        b.f32("rank_threshold", [0.5]),
        center_point_box=0,
    )  # [Q, 3]: (image * M + class - 1, 0, rank)
    sel_group = b.op("Gather", selected, b.i64("col0", [0]), axis=1)  # [Q, 1]
    sel_rank = b.op("Gather", selected, b.i64("col2", [2]), axis=1)
    sel_pos = b.op("Add", b.op("Mul", sel_group, b.i64("k", k)), sel_rank)  # [Q, 1] in [0, B*M*k)

    # Dense map of kept candidate scores, -1 where not kept: [B, N], in (class, rank) order.
    flat_scores = b.op("Reshape", cand_scores, b.i64("shape", [-1]))
    zeros = b.op("ConstantOfShape", b.op("Shape", flat_scores), value=_tensor_attr(np.zeros(1, np.float32)))
    kept = b.op("ScatterND", zeros, sel_pos,
                b.op("ConstantOfShape", b.op("Shape", b.op("Reshape", sel_rank, b.i64("shape", [-1]))),
                     value=_tensor_attr(np.ones(1, np.float32))))
    kept = b.op("Greater", kept, b.f32("half", 0.5))
    merged = b.op("Where", kept, flat_scores, b.f32("minus_one", -1.0))
    merged = b.op("Reshape", merged, b.i64("shape", [-1, N]))
    width = N
    if N < K:  # fewer candidates than outputs: pad with "not kept"
        merged = b.op("Pad", merged, b.i64("pads", [0, 0, 0, K - N]), b.f32("minus_one", -1.0), mode="constant")
        width = K
    top_scores, top_pos = b.node("TopK", [merged, b.i64("K", [K])], hint="det", outputs=2,
                                 axis=1, largest=1, sorted=1)  # [B, K]
    is_det = b.op("Greater", top_scores, b.f32("minus_half", -0.5))
    if width > N:
        top_pos = b.op("Min", top_pos, b.i64("last", N - 1))

    b.node("Where", [is_det, top_scores, b.f32("zero", 0.0)], outputs=["detection_scores"])
    det_classes = b.op("Add", b.op("Div", top_pos, b.i64("k", k)), b.i64("one", 1))
    det_classes = b.op("Where", is_det, det_classes, b.i64("zero", 0))
    box_offset = b.op("Reshape", b.op("Mul", image_index, b.i64("N", N)), b.i64("shape", [-1, 1]))
    flat_cand_boxes = b.op("Reshape", cand_boxes, b.i64("shape", [-1, 4]))
    det_boxes = b.op("Gather", flat_cand_boxes, b.op("Add", top_pos, box_offset), axis=0)  # [B, K, 4]
    is_det_3d = b.op("Reshape", is_det, b.i64("shape", [-1, K, 1]))
    b.node("Where", [is_det_3d, det_boxes, b.f32("zero", 0.0)], outputs=["detection_boxes"])
    num = b.reduce_sum(b.op("Cast", is_det, to=TensorProto.FLOAT), axis=1, keepdims=True)  # [B, 1]

    b.node("Cast", [num], outputs=["num_detections"], to=TensorProto.INT32)
    b.node("Cast", [det_classes], outputs=["detection_classes"], to=TensorProto.INT32)

    del g.output[:]
    g.output.extend(_nms_outputs(batch, K))
    return model


def _tensor_attr(array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


# ----------------------------------------------------------------------------- trt-nms

#: EfficientNMS_TRT's plugin version, and its attributes with their ONNX types.
EFFICIENT_NMS_VERSION = "1"
EFFICIENT_NMS_ATTRIBUTES = {
    "plugin_version": str,
    "plugin_namespace": str,
    "background_class": int,
    "box_coding": int,
    "iou_threshold": float,
    "max_output_boxes": int,
    "score_activation": int,
    "score_threshold": float,
}


def efficient_nms_attributes(settings: PostprocessSettings) -> dict[str, Any]:
    """The attributes of the ``EfficientNMS_TRT`` node for these settings.

    Boxes come in decoded (``box_coding`` 0: x1, y1, x2, y2; the variances are folded into the decode
    before the node), scores already softmaxed (``score_activation`` 0), class 0 is background.
    """
    return {
        "plugin_version": EFFICIENT_NMS_VERSION,
        "plugin_namespace": "",
        "background_class": 0,
        "box_coding": 0,
        "iou_threshold": float(settings.iou_threshold),
        "max_output_boxes": int(settings.max_detections),
        "score_activation": 0,
        "score_threshold": float(settings.score_threshold),
    }


def append_efficient_nms(model: Any, settings: PostprocessSettings, scores: str = RAW_SCORES,
                         boxes: str = RAW_BOXES) -> Any:
    """Append an ``EfficientNMS_TRT`` node (TensorRT >= 8.0) to a graph computing
    ``scores[B, P, C]`` and ``boxes[B, P, 4]``; its four outputs become the graph's outputs.

    Modifies ``model`` in place and returns it.
    """
    from onnx import helper

    g = model.graph
    g.node.append(
        helper.make_node(
            "EfficientNMS_TRT",
            [boxes, scores],
            list(NMS_OUTPUTS),
            name="efficient_nms",
            domain=TRT_PLUGIN_DOMAIN,
            **efficient_nms_attributes(settings),
        )
    )
    if not any(imp.domain == TRT_PLUGIN_DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TRT_PLUGIN_DOMAIN, 1))
    batch = _batch_dim(model)
    del g.output[:]
    g.output.extend(_nms_outputs(batch, int(settings.max_detections)))
    return model


