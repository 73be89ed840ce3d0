"""What TensorRT requires of an exported graph, checked without TensorRT: operators its ONNX parser
imports, the ``EfficientNMS_TRT`` node of a ``trt-nms`` graph; and the network part of a ``trt-nms``
graph cut out, so onnxruntime can run it (:mod:`ssdfast.export.compare`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ops.settings import PostprocessSettings, check_fraction, check_positive_int
from .formats import NMS_OUTPUTS, RAW_BOXES, RAW_SCORES, TRT_PLUGIN_DOMAIN
from .nms import EFFICIENT_NMS_ATTRIBUTES, EFFICIENT_NMS_VERSION

__all__ = ["TENSORRT_OPS", "unsupported_ops", "validate_efficient_nms", "network_part"]

#: ONNX operators the exports may contain that TensorRT's ONNX parser imports (TensorRT 8.2 and
#: later; NonMaxSuppression from 8.5, which ``onnx-nms`` targets; QuantizeLinear / DequantizeLinear
#: with int8 and zero points 0, the INT8 files for TensorRT). A network built from standard
#: convolution, activation and pooling layers stays inside this set.
TENSORRT_OPS = frozenset(
    {
        "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
        "ConstantOfShape", "Conv", "ConvTranspose", "DequantizeLinear", "Div", "Dropout", "Elu", "Equal", "Exp",
        "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid",
        "HardSwish", "Identity", "LeakyRelu", "Less", "Log", "MatMul", "Max", "MaxPool", "Min", "Mul",
        "Neg", "NonMaxSuppression", "Not", "Pad", "Pow", "PRelu", "QuantizeLinear", "Range", "Reciprocal", "ReduceL1",
        "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceSumSquare", "Relu",
        "Reshape", "Resize", "ScatterND", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub",
        "Tanh", "TopK", "Transpose", "Unsqueeze", "Upsample", "Where",
    }
)


# ----------------------------------------------------------------------------- graph checks


def unsupported_ops(proto: Any) -> list[str]:
    """Operator types in the graph (standard domain) that are not in :data:`TENSORRT_OPS`."""
    found = set()
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type not in TENSORRT_OPS:
            found.add(node.op_type)
    return sorted(found)


def validate_efficient_nms(proto: Any, settings: PostprocessSettings | None = None,
                           num_classes: int | None = None) -> list[str]:
    """Problems with the ``EfficientNMS_TRT`` node of a ``trt-nms`` graph (empty list: none).

    Checks: exactly one node; inputs (boxes ``[B, P, 4]``, scores ``[B, P, C]``) produced in the
    graph; every attribute present with its type and a valid value (background class 0, box coding
    0 = corners, no sigmoid since scores are softmax probabilities, thresholds in [0, 1]); the
    settings', when given; the four outputs being the graph's outputs, with their types.
    """
    from onnx import TensorProto, helper, shape_inference

    problems: list[str] = []
    nodes = [n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT"]
    if len(nodes) != 1:
        return [f"expected one EfficientNMS_TRT node, found {len(nodes)}"]
    node = nodes[0]
    if node.domain != TRT_PLUGIN_DOMAIN:
        problems.append(f"EfficientNMS_TRT domain should be {TRT_PLUGIN_DOMAIN!r}, got {node.domain!r}")
    if not any(imp.domain == node.domain for imp in proto.opset_import):
        problems.append(f"no opset import for the plugin domain {node.domain!r}")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for name, kind in EFFICIENT_NMS_ATTRIBUTES.items():
        if name not in attrs:
            problems.append(f"EfficientNMS_TRT attribute {name} is missing")
            continue
        value = attrs[name]
        if kind is str:
            value = value.decode() if isinstance(value, bytes) else value
            attrs[name] = value
            ok = isinstance(value, str)
        elif kind is int:
            ok = isinstance(value, int)
        else:
            ok = isinstance(value, float)
        if not ok:
            problems.append(f"EfficientNMS_TRT attribute {name} should be {kind.__name__}, got {type(value).__name__}")
    extra = sorted(set(attrs) - set(EFFICIENT_NMS_ATTRIBUTES))
    if extra:
        problems.append(f"EfficientNMS_TRT has unexpected attributes {extra} (TensorRT 8.0 knows none of them)")
    if problems:
        return problems
    expected_values = {"plugin_version": EFFICIENT_NMS_VERSION, "plugin_namespace": "", "background_class": 0,
                       "box_coding": 0, "score_activation": 0}
    for name, value in expected_values.items():
        if attrs[name] != value:
            problems.append(f"EfficientNMS_TRT {name} should be {value!r}, got {attrs[name]!r}")
    for name, check in (("iou_threshold", check_fraction), ("score_threshold", check_fraction),
                        ("max_output_boxes", check_positive_int)):
        try:
            check(name, attrs[name])
        except ValueError as exc:  # "<name> should be ..."
            problems.append(f"EfficientNMS_TRT {exc}")
    if settings is not None:
        want = {"iou_threshold": settings.iou_threshold, "score_threshold": settings.score_threshold,
                "max_output_boxes": settings.max_detections}
        for name, value in want.items():
            if not np.isclose(attrs[name], value, rtol=0, atol=1e-7):
                problems.append(f"EfficientNMS_TRT {name} is {attrs[name]}, the settings say {value}")

    # Inputs: boxes then scores, both produced inside the graph, with the right shapes.
    if len(node.input) != 2:
        problems.append(f"EfficientNMS_TRT should take 2 inputs (boxes, scores), got {len(node.input)}")
        return problems
    inferred = shape_inference.infer_shapes(proto)
    shapes: dict[str, list] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    boxes_shape, scores_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
    if boxes_shape is None or scores_shape is None:
        problems.append("the shapes of the EfficientNMS_TRT inputs could not be inferred")
    else:
        if len(boxes_shape) != 3 or boxes_shape[2] != 4:
            problems.append(f"EfficientNMS_TRT boxes should be [B, P, 4], got {boxes_shape}")
        if len(scores_shape) != 3:
            problems.append(f"EfficientNMS_TRT scores should be [B, P, C], got {scores_shape}")
        elif len(boxes_shape) == 3 and boxes_shape[1] != scores_shape[1]:
            problems.append(f"EfficientNMS_TRT boxes {boxes_shape} and scores {scores_shape} disagree on P")
        elif num_classes is not None and scores_shape[2] != num_classes:
            problems.append(f"EfficientNMS_TRT scores have {scores_shape[2]} classes, the model {num_classes}")
    if list(node.output) != list(NMS_OUTPUTS):
        problems.append(f"EfficientNMS_TRT outputs should be {list(NMS_OUTPUTS)}, got {list(node.output)}")
    graph_outputs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    want_types = {"num_detections": TensorProto.INT32, "detection_boxes": TensorProto.FLOAT,
                  "detection_scores": TensorProto.FLOAT, "detection_classes": TensorProto.INT32}
    for name, elem in want_types.items():
        if graph_outputs.get(name) != elem:
            problems.append(f"graph output {name} should be {TensorProto.DataType.Name(elem)}")
    return problems


def network_part(proto: Any) -> Any | None:
    """The graph without its EfficientNMS_TRT node, with the node's inputs as outputs (None if absent)."""
    from onnx import TensorProto, helper

    sub = type(proto)()
    sub.CopyFrom(proto)
    produced = {name for node in sub.graph.node for name in node.output}
    if RAW_SCORES not in produced or RAW_BOXES not in produced:
        return None
    kept = [node for node in sub.graph.node if node.op_type != "EfficientNMS_TRT"]
    del sub.graph.node[:]
    sub.graph.node.extend(kept)
    del sub.graph.output[:]
    sub.graph.output.extend([helper.make_tensor_value_info(RAW_SCORES, TensorProto.FLOAT, None),
                             helper.make_tensor_value_info(RAW_BOXES, TensorProto.FLOAT, None)])
    imports = [imp for imp in sub.opset_import if imp.domain != TRT_PLUGIN_DOMAIN]
    del sub.opset_import[:]
    sub.opset_import.extend(imports)
    return sub
