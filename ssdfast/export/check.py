"""Checks of an exported model: graph validity, TensorRT-friendly ops, and onnxruntime vs PyTorch.

:func:`check_export` runs the exported file in onnxruntime on real preprocessed images and compares
it with the PyTorch model it came from:

- ``jetson``: ``scores`` and ``boxes`` within ``atol`` (1e-4) of the model's softmax scores and
  :func:`ssdfast.ops.decode_boxes` boxes.
- ``onnx-nms``: the same detections as the PyTorch inference tail (the Detector's
  post-processing, :func:`ssdfast.ops.ssd_postprocess`): same count and classes per image, boxes
  and scores within ``atol``.
- ``trt-nms``: onnxruntime cannot run the TensorRT plugin, so the graph is checked with
  ``onnx.checker`` and the ``EfficientNMS_TRT`` node's attributes are validated; the network part
  (everything before the plugin) is cut out and compared with PyTorch as for ``jetson``.

Every format is also checked for operators outside the set TensorRT's ONNX parser supports.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .onnx import (
    EFFICIENT_NMS_ATTRIBUTES,
    EFFICIENT_NMS_VERSION,
    INPUT_NAME,
    JETSON_OUTPUTS,
    NMS_OUTPUTS,
    TRT_PLUGIN_DOMAIN,
    PostprocessSettings,
    _RAW_BOXES,
    _RAW_SCORES,
    model_image_size,
)

__all__ = [
    "CheckReport",
    "CheckError",
    "TENSORRT_OPS",
    "check_export",
    "validate_efficient_nms",
    "unsupported_ops",
    "sample_images",
    "load_images",
    "prepare_inputs",
]

#: ONNX operators the exports may contain that TensorRT's ONNX parser imports (TensorRT 8.2 and
#: later; NonMaxSuppression from 8.5, which ``onnx-nms`` targets). A network built from standard
#: convolution, activation and pooling layers stays inside this set.
TENSORRT_OPS = frozenset(
    {
        "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
        "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Dropout", "Elu", "Equal", "Exp", "Expand",
        "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid",
        "HardSwish", "Identity", "LeakyRelu", "Less", "Log", "MatMul", "Max", "MaxPool", "Min", "Mul",
        "Neg", "NonMaxSuppression", "Not", "Pad", "Pow", "PRelu", "Range", "Reciprocal", "ReduceL1",
        "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ScatterND", "Shape", "Sigmoid",
        "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "TopK", "Transpose", "Unsqueeze",
        "Upsample", "Where",
    }
)


class CheckError(RuntimeError):
    """An exported model failed its check; the message lists what failed."""


@dataclass
class CheckReport:
    """What :func:`check_export` found. ``passed`` is False when any ``failures`` were recorded."""

    path: Path
    format: str
    num_images: int = 0
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    num_detections: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"check {self.format} {self.path}: {'passed' if self.passed else 'FAILED'}"
                 f" on {self.num_images} image(s)"]
        for name, diff in self.max_abs_diff.items():
            lines.append(f"  max |onnxruntime - pytorch| {name}: {diff:.3g}")
        if self.num_detections:
            lines.append(f"  detections per image: {self.num_detections}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  FAIL: {f}" for f in self.failures]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.failures:
            raise CheckError(self.summary())


# ----------------------------------------------------------------------------- images


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def load_images(paths: Iterable[str | os.PathLike], limit: int | None = None) -> list[np.ndarray]:
    """Read images (files, or folders searched for image files) as RGB uint8 ``[H, W, 3]`` arrays."""
    from PIL import Image

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if limit is not None:
        files = files[:limit]
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
        except OSError as exc:
            raise ValueError(f"cannot read image {f}: {exc}") from None
    return images


def sample_images(count: int = 4, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[np.ndarray]:
    """Deterministic photo-like test images (gradients, filled shapes, noise): RGB uint8 ``[H, W, 3]``.

    Sizes vary around ``size`` so the resize in preprocessing is exercised.
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


def _preprocess(images: Sequence[np.ndarray], config: Any) -> tuple[Tensor, list[tuple[int, int]]]:
    """The Detector's preprocessing when it exists, else resize + [0, 1] + mean/std here."""
    try:
        from ssdfast.detector import preprocess
    except ImportError:
        preprocess = None
    if preprocess is not None:
        batch, sizes = preprocess(list(images), config)
        return batch.float().cpu(), [tuple(s) for s in sizes]
    h, w = model_image_size(config)
    mean = torch.as_tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)
    out, sizes = [], []
    for im in images:
        t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float() / 255.0
        sizes.append((im.shape[0], im.shape[1]))
        out.append(torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False))
    return (torch.cat(out) - mean) / std, sizes


def prepare_inputs(images: Sequence[np.ndarray], config: Any) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Preprocess images for both sides of the comparison.

    Returns ``(normalized[B, 3, H, W], exported_input[B, 3, H, W], sizes)``: the first is what the
    PyTorch model takes (the Detector's preprocessing), the second the same pixels as the exported
    graph takes them, RGB in [-1, 1] (``2 * x01 - 1`` with ``x01 = normalized * std + mean``).
    """
    normalized, sizes = _preprocess(images, config)
    mean = torch.as_tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)
    exported = (normalized * std + mean) * 2 - 1
    return normalized, exported, sizes


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
    for name in ("iou_threshold", "score_threshold"):
        if not (0.0 <= attrs[name] <= 1.0):
            problems.append(f"EfficientNMS_TRT {name} should be in [0, 1], got {attrs[name]}")
    if attrs["max_output_boxes"] < 1:
        problems.append(f"EfficientNMS_TRT max_output_boxes should be positive, got {attrs['max_output_boxes']}")
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


# ----------------------------------------------------------------------------- numerical checks


def _session(proto_or_path: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    # Idle threads sleep instead of spinning: a check shares the machine with PyTorch and others.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = proto_or_path if isinstance(proto_or_path, (str, os.PathLike)) else proto_or_path.SerializeToString()
    return ort.InferenceSession(str(data) if isinstance(data, os.PathLike) else data, options,
                                providers=["CPUExecutionProvider"])


def _run_batched(session: Any, x: np.ndarray, batch_size: int | None) -> list[np.ndarray]:
    """Run ``session`` on ``x`` in chunks of the graph's fixed batch (padding the last chunk)."""
    if batch_size is None:
        return session.run(None, {INPUT_NAME: x})
    outs: list[list[np.ndarray]] = []
    n = x.shape[0]
    for start in range(0, n, batch_size):
        chunk = x[start:start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        outs.append([o[:real] for o in session.run(None, {INPUT_NAME: chunk})])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def _graph_batch(proto: Any) -> int | None:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def _torch_raw(model: nn.Module, normalized: Tensor) -> tuple[Tensor, Tensor]:
    """``(scores[B, P, C] softmax, boxes[B, P, 4])`` of the PyTorch model, via ssdfast.ops."""
    from ssdfast import ops

    variances = tuple(getattr(model.config, "variances", (0.1, 0.2)))
    with torch.no_grad():
        confidences, locations = model(normalized)
        scores = torch.softmax(confidences.float(), dim=-1)
        boxes = ops.decode_boxes(locations.float(), model.priors.float(), variances)
    return scores, boxes


def _torch_detections(model: nn.Module, normalized: Tensor, settings: PostprocessSettings):
    """The PyTorch detections ``(boxes[B,K,4], scores[B,K], labels[B,K], num[B])``, normalized xyxy.

    The Detector's post-processing is softmax + ``ops.ssd_postprocess`` (then scaling to pixels);
    the comparison is made before the scaling, which is the Detector's and not in the graph.
    """
    from ssdfast import ops

    variances = tuple(getattr(model.config, "variances", (0.1, 0.2)))
    with torch.no_grad():
        confidences, locations = model(normalized)
        scores = torch.softmax(confidences.float(), dim=-1)
        return ops.ssd_postprocess(
            locations.float(), scores, model.priors.float(), variances, settings.score_threshold,
            settings.iou_threshold, settings.top_k, settings.max_detections,
        )


def _compare(report: CheckReport, name: str, got: np.ndarray, want: np.ndarray, atol: float) -> None:
    if got.shape != want.shape:
        report.failures.append(f"{name}: shape {got.shape} from onnxruntime, {want.shape} from PyTorch")
        return
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if got.size else 0.0
    report.max_abs_diff[name] = max(diff, report.max_abs_diff.get(name, 0.0))
    if not np.isfinite(diff) or diff > atol:
        report.failures.append(f"{name}: max abs difference {diff:.3g} > {atol:g}")


def check_export(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    format: str | None = None,
    images: Sequence[np.ndarray] | None = None,
    settings: PostprocessSettings | None = None,
    atol: float = 1e-4,
) -> CheckReport:
    """Check an exported ``.onnx`` file against the PyTorch ``model`` it was exported from.

    Args:
        path: the exported file.
        model: the same network (``.config``, ``.priors``), on any device; run on CPU.
        format: ``jetson`` / ``onnx-nms`` / ``trt-nms``; read from the file's metadata when None.
        images: RGB uint8 ``[H, W, 3]`` arrays (default: :func:`sample_images`).
        settings: the post-processing settings the file was exported with (default: from the
            file's metadata, else the Detector's defaults).
        atol: tolerance on raw outputs, detection boxes and scores.

    Returns:
        A :class:`CheckReport` (``report.raise_if_failed()`` raises :class:`CheckError`).
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    format = format or meta.get("ssdfast.format") or "jetson"
    if settings is None:
        if "ssdfast.score_threshold" in meta:
            settings = PostprocessSettings(
                score_threshold=float(meta["ssdfast.score_threshold"]),
                iou_threshold=float(meta["ssdfast.iou_threshold"]),
                top_k=int(meta["ssdfast.top_k"]),
                max_detections=int(meta["ssdfast.max_detections"]),
            )
        else:
            settings = PostprocessSettings()
    report = CheckReport(path=path, format=format)

    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        report.failures.append(f"onnx.checker: {str(exc).splitlines()[0]}")
    bad_ops = unsupported_ops(proto)
    if bad_ops:
        report.failures.append(f"operators TensorRT's ONNX parser may not import: {', '.join(bad_ops)}")
    input_names = [i.name for i in proto.graph.input]
    if input_names != [INPUT_NAME]:
        report.failures.append(f"the graph's inputs should be [{INPUT_NAME!r}], got {input_names}")

    config = model.config
    h, w = model_image_size(config)
    in_shape = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if in_shape[1:] != [3, h, w]:
        report.failures.append(f"input {INPUT_NAME} should be [B, 3, {h}, {w}], got {in_shape}")

    if images is None:
        images = sample_images(4, size=(int(h * 0.8), int(w * 1.1)))
    report.num_images = len(images)
    device = next(iter(model.parameters()), torch.zeros(())).device
    was_training = model.training
    model.eval().cpu()
    try:
        normalized, exported_input, sizes = prepare_inputs(images, config)
        x = exported_input.numpy().astype(np.float32)
        batch = _graph_batch(proto)
        if format == "jetson":
            got_scores, got_boxes = _run_batched(_session(path), x, batch)
            want_scores, want_boxes = _torch_raw(model, normalized)
            _compare(report, "scores", got_scores, want_scores.numpy(), atol)
            _compare(report, "boxes", got_boxes, want_boxes.numpy(), atol)
            out_names = [o.name for o in proto.graph.output]
            if out_names != list(JETSON_OUTPUTS):
                report.failures.append(f"outputs should be {list(JETSON_OUTPUTS)}, got {out_names}")
            C = got_scores.shape[-1]
            if C != int(config.num_classes):
                report.failures.append(f"scores have {C} classes, the model {config.num_classes}")
        elif format == "onnx-nms":
            _check_onnx_nms(report, path, model, normalized, x, batch, settings, atol, sizes)
        elif format == "trt-nms":
            for problem in validate_efficient_nms(proto, settings, int(config.num_classes)):
                report.failures.append(problem)
            sub = _network_part(proto)
            if sub is None:
                report.failures.append(f"the graph has no {_RAW_SCORES!r} / {_RAW_BOXES!r} feeding EfficientNMS_TRT")
            else:
                got_scores, got_boxes = _run_batched(_session(sub), x, batch)
                want_scores, want_boxes = _torch_raw(model, normalized)
                _compare(report, "scores (EfficientNMS input)", got_scores, want_scores.numpy(), atol)
                _compare(report, "boxes (EfficientNMS input)", got_boxes, want_boxes.numpy(), atol)
            report.notes.append("EfficientNMS_TRT runs in TensorRT only: its node was validated, not run")
        else:
            report.failures.append(f"unknown format {format!r}")
    finally:
        model.to(device)
        model.train(was_training)
    return report


def _network_part(proto: Any) -> Any | None:
    """The graph without its EfficientNMS_TRT node, with the node's inputs as outputs (None if absent)."""
    from onnx import TensorProto, helper

    sub = type(proto)()
    sub.CopyFrom(proto)
    produced = {name for node in sub.graph.node for name in node.output}
    if _RAW_SCORES not in produced or _RAW_BOXES not in produced:
        return None
    kept = [node for node in sub.graph.node if node.op_type != "EfficientNMS_TRT"]
    del sub.graph.node[:]
    sub.graph.node.extend(kept)
    del sub.graph.output[:]
    sub.graph.output.extend([helper.make_tensor_value_info(_RAW_SCORES, TensorProto.FLOAT, None),
                             helper.make_tensor_value_info(_RAW_BOXES, TensorProto.FLOAT, None)])
    imports = [imp for imp in sub.opset_import if imp.domain != TRT_PLUGIN_DOMAIN]
    del sub.opset_import[:]
    sub.opset_import.extend(imports)
    return sub


def _check_onnx_nms(report: CheckReport, path: Path, model: nn.Module, normalized: Tensor, x: np.ndarray,
                    batch: int | None, settings: PostprocessSettings, atol: float,
                    sizes: list[tuple[int, int]] | None = None) -> None:
    num, boxes, scores, classes = _run_batched(_session(path), x, batch)
    want_boxes, want_scores, want_labels, want_num = (t.numpy() for t in _torch_detections(model, normalized, settings))
    for name, arr, dtype in (("num_detections", num, np.int32), ("detection_classes", classes, np.int32),
                             ("detection_boxes", boxes, np.float32), ("detection_scores", scores, np.float32)):
        if arr.dtype != dtype:
            report.failures.append(f"{name} should be {np.dtype(dtype).name}, got {arr.dtype}")
    K = settings.max_detections
    if boxes.shape[1:] != (K, 4) or num.shape[1:] != (1,):
        report.failures.append(f"detection shapes {num.shape}, {boxes.shape}: expected [B, 1] and [B, {K}, 4]")
        return
    report.num_detections = [int(n) for n in num[:, 0]]
    if not np.array_equal(num[:, 0].astype(np.int64), want_num):
        report.failures.append(f"num_detections {num[:, 0].tolist()} from onnxruntime, "
                               f"{want_num.tolist()} from PyTorch")
        return
    worst = 0.0
    for i, n in enumerate(want_num.tolist()):
        err = _match_detections(boxes[i, :n], scores[i, :n], classes[i, :n], want_boxes[i, :n],
                                want_scores[i, :n], want_labels[i, :n])
        if err is None:
            report.failures.append(f"image {i}: the detections' classes differ from PyTorch's")
        else:
            worst = max(worst, err)
    report.max_abs_diff["detections (boxes, scores)"] = worst
    if worst > atol:
        report.failures.append(f"detections differ from PyTorch's by {worst:.3g} > {atol:g}")
    if sizes is not None:
        _compare_with_detector(report, model, normalized, sizes, settings, num, boxes, scores, classes, atol)


def _match_detections(got_boxes: np.ndarray, got_scores: np.ndarray, got_labels: np.ndarray,
                      want_boxes: np.ndarray, want_scores: np.ndarray, want_labels: np.ndarray) -> float | None:
    """Pair two detection lists of the same length one to one (same class, closest box and score).

    Both lists are sorted by score; two detections whose scores differ by less than float noise can
    come in either order, so each detection is paired with the closest unpaired one of its class
    rather than the one at the same index. Returns the largest box / score difference of the
    pairs, or None when the classes cannot be paired.
    """
    n = got_scores.shape[0]
    if n == 0:
        return 0.0
    got_labels = got_labels.astype(np.int64)
    want_labels = want_labels.astype(np.int64)
    if not np.array_equal(np.sort(got_labels), np.sort(want_labels)):
        return None
    cost = np.maximum(np.abs(got_boxes[:, None, :] - want_boxes[None, :, :]).max(-1),
                      np.abs(got_scores[:, None] - want_scores[None, :])).astype(np.float64)
    cost[got_labels[:, None] != want_labels[None, :]] = np.inf
    worst = 0.0
    free = np.ones(n, dtype=bool)
    for i in range(n):
        row = np.where(free, cost[i], np.inf)
        j = int(np.argmin(row))
        if not np.isfinite(row[j]):
            return None
        free[j] = False
        worst = max(worst, float(row[j]))
    return worst


def _compare_with_detector(report: CheckReport, model: nn.Module, normalized: Tensor, sizes: list[tuple[int, int]],
                           settings: PostprocessSettings, num: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                           classes: np.ndarray, atol: float) -> None:
    """The onnx-nms detections against :func:`ssdfast.detector.postprocess` in each image's pixels."""
    try:
        from ssdfast.detector import postprocess
    except ImportError:
        report.notes.append("ssdfast.detector is not available: compared with ops.ssd_postprocess only")
        return
    with torch.no_grad():
        confidences, locations = model(normalized)
        results = postprocess(confidences, locations, model.priors, sizes,
                              tuple(getattr(model.config, "variances", (0.1, 0.2))), settings.score_threshold,
                              settings.iou_threshold, settings.top_k, settings.max_detections)
    worst = 0.0
    for i, ((want_px, want_scores, want_labels), (h, w)) in enumerate(zip(results, sizes)):
        n = int(num[i, 0])
        if n != want_labels.shape[0]:
            report.failures.append(f"image {i}: {n} detections from onnxruntime, {want_labels.shape[0]} from the Detector")
            continue
        scale = np.array([w, h, w, h], dtype=np.float32)
        got_px = np.minimum(np.maximum(boxes[i, :n] * scale, 0), scale)
        # Compare boxes relative to the image size (the graph's boxes are normalized).
        err = _match_detections(got_px / max(h, w), scores[i, :n], classes[i, :n], want_px.numpy() / max(h, w),
                                want_scores.numpy(), want_labels.numpy())
        if err is None:
            report.failures.append(f"image {i}: the detections' classes differ from the Detector's")
        else:
            worst = max(worst, err)
    report.max_abs_diff["vs Detector (boxes / image size, scores)"] = worst
    if worst > atol:
        report.failures.append(f"detections differ from the Detector's by {worst:.3g} > {atol:g}")
