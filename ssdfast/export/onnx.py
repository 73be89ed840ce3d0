"""ONNX export of an SSD in three formats: ``jetson``, ``onnx-nms`` and ``trt-nms``.

Every format takes the same input, ``input_0`` float32 ``[B, 3, H, W]``: RGB already scaled to
[-1, 1] (what jetson-inference's ``detectnet`` feeds an ONNX SSD: pixels / 255, minus 0.5, over
0.5). The model's own mean/std are folded into the graph, so one preprocessing serves every model.

- ``jetson``: outputs ``scores`` ``[B, P, C]`` softmax probabilities (class 0 = background) and
  ``boxes`` ``[B, P, 4]`` decoded, normalized x1, y1, x2, y2; no NMS. What ``detectnet
  --input-blob=input_0 --output-cvg=scores --output-bbox=boxes`` reads.
- ``onnx-nms``: the same network followed by the SSD inference tail in standard ONNX ops (per-class
  ``TopK``, ``NonMaxSuppression``, merge), with the semantics of :func:`ssdfast.ops.ssd_postprocess`.
  Outputs ``num_detections`` int32 ``[B, 1]``, ``detection_boxes`` ``[B, K, 4]`` (normalized xyxy),
  ``detection_scores`` ``[B, K]``, ``detection_classes`` int32 ``[B, K]``, ``K = max_detections``.
- ``trt-nms``: the same network followed by TensorRT's ``EfficientNMS_TRT`` plugin node (decoded
  boxes in, softmax scores in, background class 0), with the same four outputs as ``onnx-nms``.

The network part is traced with PyTorch's TorchScript-based exporter (``dynamo=False``): it writes
any opset from 11 up, including 13, the last one TensorRT 8.2 (JetPack 4.6, Jetson Nano) parses. The
post-processing parts are appended with :mod:`onnx.helper`, so their graph is exactly what is
written here, whichever PyTorch version runs the export.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..io import write_label_file

__all__ = [
    "FORMATS",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "INPUT_NAME",
    "JETSON_OUTPUTS",
    "NMS_OUTPUTS",
    "TRT_PLUGIN_DOMAIN",
    "PostprocessSettings",
    "ExportModule",
    "ExportResult",
    "export_onnx",
    "append_onnx_nms",
    "append_efficient_nms",
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
#: Domain of the ``EfficientNMS_TRT`` node. TensorRT's ONNX parser finds a plugin by the node's
#: op type alone (its fallback plugin importer ignores the domain); a domain of its own keeps the
#: node out of the standard ``ai.onnx`` domain, so ``onnx.checker`` validates the rest of the graph.
TRT_PLUGIN_DOMAIN = "trt.plugins"

# Names of the network outputs inside the onnx-nms / trt-nms graphs (they feed the NMS part).
_RAW_SCORES = "raw_scores"
_RAW_BOXES = "raw_boxes"


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


def model_image_size(config: Any) -> tuple[int, int]:
    """``(H, W)`` of the images a model takes, from its config's ``image_size`` (int or pair)."""
    size = getattr(config, "image_size", None)
    if size is None:
        raise ValueError("the model's config has no image_size")
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


def _per_channel(values: Any, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.repeat(3)
    if t.numel() != 3:
        raise ValueError(f"config.{name} should have 3 values (one per RGB channel), got {t.numel()}")
    return t


class ExportModule(nn.Module):
    """An SSD as the exported graphs compute it: ``input_0`` in [-1, 1] -> (scores, boxes).

    ``forward(x[B, 3, H, W])`` -> ``scores[B, P, C]`` (softmax, class 0 = background) and
    ``boxes[B, P, 4]`` (normalized xyxy, decoded with the model's priors and variances). The input
    is RGB scaled to [-1, 1]; the model's mean/std (for [0, 1] images) are folded in as one
    per-channel multiply-add, left out when they are already 0.5 / 0.5.

    The decode is :func:`ssdfast.ops.decode_boxes` written with slices so the graph stays small
    (two Mul/Add for the centres, one Exp for the sizes, one Concat).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config = model.config
        self.model = model
        mean = _per_channel(config.mean, "mean")
        std = _per_channel(config.std, "std")
        if bool((std <= 0).any()):
            raise ValueError(f"config.std should be positive, got {std.tolist()}")
        # x01 = (x + 1) / 2 and the model wants (x01 - mean) / std = x * (0.5 / std) + (0.5 - mean) / std.
        scale = 0.5 / std
        shift = (0.5 - mean) / std
        self.fold_normalization = not (torch.allclose(scale, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-7)
                                       and torch.allclose(shift, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-7))
        self.register_buffer("input_scale", scale.float().view(1, 3, 1, 1))
        self.register_buffer("input_shift", shift.float().view(1, 3, 1, 1))
        priors = model.priors.detach().float()
        self.register_buffer("prior_center", priors[:, :2].clone())
        self.register_buffer("prior_size", priors[:, 2:].clone())
        variances = tuple(float(v) for v in getattr(config, "variances", (0.1, 0.2)))
        if len(variances) != 2 or not all(math.isfinite(v) and v > 0 for v in variances):
            raise ValueError(f"config.variances should be two positive numbers, got {variances}")
        self.variances = variances
        from ssdfast.ops.reference import DECODE_CLAMP

        self.decode_clamp = float(DECODE_CLAMP)

    @property
    def num_priors(self) -> int:
        return int(self.prior_center.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        """[-1, 1] RGB -> the model's normalized input."""
        if self.fold_normalization:
            return x * self.input_scale + self.input_shift
        return x

    def decode(self, loc: Tensor) -> Tensor:
        """``loc[B, P, 4]`` offsets -> normalized xyxy ``[B, P, 4]`` (as ``ops.decode_boxes``)."""
        v0, v1 = self.variances
        center = loc[..., :2] * v0 * self.prior_size + self.prior_center
        size = torch.exp(torch.clamp(loc[..., 2:] * v1, max=self.decode_clamp)) * self.prior_size
        half = size * 0.5
        return torch.cat((center - half, center + half), dim=-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        confidences, locations = self.model(self.normalize(x))
        if confidences.dtype != torch.float32:  # a trace-time test: no Cast in a float32 graph
            confidences = confidences.float()
        if locations.dtype != torch.float32:
            locations = locations.float()
        return torch.softmax(confidences, dim=-1), self.decode(locations)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    format: str
    opset: int
    batch_size: int | None  # None: dynamic
    image_size: tuple[int, int]  # (H, W)
    num_classes: int
    num_priors: int
    input_name: str
    output_names: tuple[str, ...]
    settings: PostprocessSettings | None
    labels_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- network part


def _trace_to_onnx(module: ExportModule, image_size: tuple[int, int], opset: int, batch_size: int | None,
                   output_names: Sequence[str]) -> "onnx.ModelProto":  # noqa: F821
    """Run the TorchScript-based exporter on ``module`` and return the ModelProto."""
    import onnx

    h, w = image_size
    dummy = torch.zeros(batch_size or 2, 3, h, w)
    dynamic_axes = None
    if batch_size is None:
        dynamic_axes = {INPUT_NAME: {0: "batch"}}
        for name in output_names:
            dynamic_axes[name] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is marked deprecated in favour of the torch.export one, which
        # needs onnxscript and cannot write opset 13; it stays the right tool for TensorRT 8.x graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            export_params=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _fold_static_shapes(model: Any, max_rounds: int = 4) -> Any:
    """Replace every ``Shape`` node whose input has a fully static shape by a constant.

    PyTorch's exporter keeps ``Shape`` nodes for e.g. ``expand_as`` (``F.normalize`` in VGG's L2Norm),
    which hides the static sizes downstream from shape inference. With a fixed batch every size is
    known: folding them gives a graph whose outputs have static shapes ([1, 8732, 21], not
    [1, ?, 21]), which TensorRT and tools reading the graph prefer. Dynamic-batch graphs keep the
    ``Shape`` nodes that depend on the batch. Modifies ``model`` in place and returns it.
    """
    from onnx import helper, numpy_helper, shape_inference

    for _ in range(max_rounds):
        inferred = shape_inference.infer_shapes(model)
        static: dict[str, list[int]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                static[vi.name] = [int(d.dim_value) for d in t.shape.dim]
        for init in model.graph.initializer:
            static[init.name] = list(init.dims)
        changed = False
        for i, node in enumerate(model.graph.node):
            if node.op_type != "Shape" or node.input[0] not in static:
                continue
            dims = static[node.input[0]]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            start = attrs.get("start", 0)
            end = attrs.get("end", None)
            value = np.asarray(dims[start:end] if end is not None else dims[start:], dtype=np.int64)
            const = helper.make_node("Constant", [], [node.output[0]], name=node.name or f"folded_shape_{i}",
                                     value=numpy_helper.from_array(value))
            model.graph.node[i].CopyFrom(const)
            changed = True
        if not changed:
            break
    return model


def _remove_identities(model: Any) -> Any:
    """Drop ``Identity`` nodes (the exporter adds them for shared weights) by rewiring their users."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    if not alias:
        return model
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _constant_values(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _simplify_batch_reshapes(model: Any) -> Any:
    """Turn the exporter's dynamic-batch reshapes into constant ones.

    ``x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, C)`` traced with a dynamic batch becomes
    ``Reshape(Transpose(x), Concat(Unsqueeze(Gather(Shape(x), 0)), [-1], [C]))``: four shape nodes
    per head, and shape inference loses the output's rank. ONNX's ``Reshape`` copies a dimension
    given as 0, so the shape is the constant ``[0, -1, C]`` when the reshaped tensor keeps ``x``'s
    first dimension (``x`` itself, or a ``Transpose`` of it with ``perm[0] == 0``). The shape nodes
    left unused are removed. Modifies ``model`` in place and returns it.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = _constant_values(model)

    def attr(node: Any, name: str, default: Any = None) -> Any:
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def batch_source(name: str) -> str | None:
        """The tensor whose dim 0 ``name`` is, when ``name`` = Unsqueeze(Gather(Shape(t), 0), [0])."""
        unsq = producer.get(name)
        if unsq is None or unsq.op_type != "Unsqueeze":
            return None
        axes = attr(unsq, "axes")
        if axes is None and len(unsq.input) > 1:
            axes = consts.get(unsq.input[1])
        if axes is None or list(np.asarray(axes).reshape(-1)) != [0]:
            return None
        gather = producer.get(unsq.input[0])
        if gather is None or gather.op_type != "Gather" or attr(gather, "axis", 0) != 0:
            return None
        index = consts.get(gather.input[1])
        if index is None or index.shape != () or int(index) != 0:
            return None
        shape = producer.get(gather.input[0])
        if shape is None or shape.op_type != "Shape" or attr(shape, "start", 0) != 0:
            return None
        return shape.input[0]

    changed = False
    for node in graph.node:
        if node.op_type != "Reshape" or attr(node, "allowzero", 0) != 0:
            continue
        concat = producer.get(node.input[1])
        if concat is None or concat.op_type != "Concat" or attr(concat, "axis") != 0:
            continue
        source = batch_source(concat.input[0])
        rest = [consts.get(i) for i in concat.input[1:]]
        if source is None or any(r is None or r.dtype != np.int64 or r.ndim != 1 or (r == 0).any() for r in rest):
            continue
        data = node.input[0]
        transpose = producer.get(data)
        keeps_dim0 = data == source or (
            transpose is not None and transpose.op_type == "Transpose" and transpose.input[0] == source
            and list(attr(transpose, "perm", [0]))[0] == 0
        )
        if not keeps_dim0:
            continue
        shape_name = f"{node.output[0]}/static_shape"
        value = np.concatenate([np.zeros(1, np.int64)] + rest)
        graph.initializer.append(numpy_helper.from_array(value, shape_name))
        node.input[1] = shape_name
        changed = True
    if changed:
        _remove_dead_nodes(model)
    return model


def _remove_dead_nodes(model: Any) -> Any:
    """Drop nodes whose outputs nothing uses, and initializers nothing reads."""
    graph = model.graph
    while True:
        used = {o.name for o in graph.output}
        for node in graph.node:
            used.update(node.input)
        kept = [n for n in graph.node if any(o in used for o in n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in used]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)
    return model


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


def _rename_outputs(model: Any, mapping: dict[str, str]) -> None:
    """Rename graph outputs (and every use of them) in place."""
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for out in graph.output:
        if out.name in mapping:
            out.name = mapping[out.name]


def _nms_outputs(batch: int | str, k: int, boxes_dtype: int) -> list[Any]:
    from onnx import TensorProto, helper

    return [
        helper.make_tensor_value_info("num_detections", TensorProto.INT32, [batch, 1]),
        helper.make_tensor_value_info("detection_boxes", boxes_dtype, [batch, k, 4]),
        helper.make_tensor_value_info("detection_scores", boxes_dtype, [batch, k]),
        helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [batch, k]),
    ]


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
                    scores: str = _RAW_SCORES, boxes: str = _RAW_BOXES) -> Any:
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
    g.output.extend(_nms_outputs(batch, K, TensorProto.FLOAT))
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


def append_efficient_nms(model: Any, settings: PostprocessSettings, scores: str = _RAW_SCORES,
                         boxes: str = _RAW_BOXES) -> Any:
    """Append an ``EfficientNMS_TRT`` node (TensorRT >= 8.0) to a graph computing
    ``scores[B, P, C]`` and ``boxes[B, P, 4]``; its four outputs become the graph's outputs.

    Modifies ``model`` in place and returns it.
    """
    from onnx import TensorProto, helper

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
    g.output.extend(_nms_outputs(batch, int(settings.max_detections), TensorProto.FLOAT))
    return model


# ----------------------------------------------------------------------------- entry point


def _check_batch_size(batch_size: int | str | None) -> int | None:
    if batch_size is None or batch_size == "dynamic":
        return None
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
        raise ValueError(f"batch_size should be a positive integer or 'dynamic', got {batch_size!r}")
    return int(batch_size)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "jetson",
    opset: int = DEFAULT_OPSET,
    batch_size: int | str | None = 1,
    settings: PostprocessSettings | None = None,
    class_names: Sequence[str] | None = None,
    labels_path: str | os.PathLike | None = None,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export an SSD (``ssdfast.models`` ``SSD``: ``.config``, ``.priors``) to ONNX.

    Args:
        model: the network; exported on CPU in eval mode (the module itself is left as it was).
        path: the ``.onnx`` file to write (parent folders are created).
        format: ``"jetson"``, ``"onnx-nms"`` or ``"trt-nms"`` (see the module docstring).
        opset: ONNX opset, ``>= 11`` (13 by default: TensorRT 8.2 parses up to 13).
        batch_size: a fixed batch size, or ``None`` / ``"dynamic"`` for a dynamic batch axis.
        settings: post-processing settings for the two NMS formats (default: the Detector's).
        class_names: when given (BACKGROUND first, exactly C names), written to ``labels_path``
            (default ``labels.txt`` beside ``path``) and stored in the model's metadata.
        metadata: extra ``metadata_props`` (e.g. the checkpoint's sha256).

    Returns:
        An :class:`ExportResult`.
    """
    import onnx

    if format not in FORMATS:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, got {format!r}")
    opset = int(opset)
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(f"opset should be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    batch = _check_batch_size(batch_size)
    settings = settings or PostprocessSettings()
    config = model.config
    num_classes = int(config.num_classes)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names should have num_classes={num_classes} names (BACKGROUND first), "
                         f"got {len(class_names)}")
    image_size = model_image_size(config)

    was_training = model.training
    device = next(iter(model.parameters()), torch.zeros(())).device
    try:
        model.eval().cpu()
        module = ExportModule(model).eval()
        num_priors = module.num_priors
        raw_names = JETSON_OUTPUTS if format == "jetson" else (_RAW_SCORES, _RAW_BOXES)
        with torch.no_grad():
            proto = _trace_to_onnx(module, image_size, opset, batch, raw_names)
    finally:
        model.to(device)
        model.train(was_training)

    _remove_identities(proto)
    if batch is None:
        _simplify_batch_reshapes(proto)
    else:
        _fold_static_shapes(proto)
    if format == "onnx-nms":
        append_onnx_nms(proto, num_classes, num_priors, settings)
        output_names = NMS_OUTPUTS
    elif format == "trt-nms":
        append_efficient_nms(proto, settings)
        output_names = NMS_OUTPUTS
    else:
        output_names = JETSON_OUTPUTS

    meta = {
        "ssdfast.format": format,
        "ssdfast.net": str(getattr(config, "name", "")),
        "ssdfast.num_classes": str(num_classes),
        "ssdfast.image_size": f"{image_size[0]}x{image_size[1]}",
        "ssdfast.input": "RGB, [-1, 1] (pixel / 127.5 - 1)",
    }
    if format != "jetson":
        meta.update({f"ssdfast.{k}": str(v) for k, v in settings.__dict__.items()})
    if class_names is not None:
        meta["ssdfast.class_names"] = "\n".join(class_names)
    meta.update(metadata or {})
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "ssdfast"
    proto.doc_string = f"ssdfast {format} export of {meta['ssdfast.net']}"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    written_labels = None
    if class_names is not None:
        written_labels = write_label_file(class_names, labels_path or path.parent / "labels.txt")
    return ExportResult(
        path=path,
        format=format,
        opset=opset,
        batch_size=batch,
        image_size=image_size,
        num_classes=num_classes,
        num_priors=num_priors,
        input_name=INPUT_NAME,
        output_names=tuple(output_names),
        settings=None if format == "jetson" else settings,
        labels_path=written_labels,
    )
