"""Checking an exported model against the PyTorch model it came from: :func:`check_export`.

The graph is validated (``onnx.checker``, TensorRT-importable operators, input and output names and
shapes; :mod:`ssdfast.export.tensorrt_rules`), then run in onnxruntime (:mod:`ssdfast.export.runtime`)
on real preprocessed images and compared with the PyTorch model, which runs once on the same batch:

- ``jetson``: ``scores`` and ``boxes`` within ``atol`` (1e-4) of the model's softmax scores and
  :func:`ssdfast.ops.decode_boxes` boxes.
- ``onnx-nms``: the same detections as the PyTorch inference tail (:func:`ssdfast.ops.ssd_postprocess`)
  and as the Detector's post-processing (:func:`ssdfast.detector.postprocess`, in each image's
  pixels): same count and classes per image, boxes and scores within ``atol``.
- ``trt-nms``: onnxruntime cannot run the TensorRT plugin, so the ``EfficientNMS_TRT`` node's
  attributes are validated and the network part (everything before the plugin) is cut out and
  compared with PyTorch as for ``jetson``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import ops
from ..detector import Detections, postprocess
from ..ops.settings import DISPLAY, PostprocessSettings
from .deps import require
from .formats import (
    INPUT_NAME,
    JETSON_OUTPUTS,
    NMS_OUTPUTS,
    RAW_BOXES,
    RAW_SCORES,
    model_image_size,
    settings_from_metadata,
)
from .inputs import prepare_inputs, sample_images
from .runtime import graph_batch_size, onnxruntime_session, run_batched
from .tensorrt_rules import network_part, unsupported_ops, validate_efficient_nms

__all__ = ["CheckReport", "CheckError", "check_export"]


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


# ----------------------------------------------------------------------------- the PyTorch side


@dataclass
class _Reference:
    """The PyTorch model's outputs on the check batch (it runs once) and what is derived from them."""

    confidences: Tensor  # [B, P, C] logits
    locations: Tensor  # [B, P, 4] offsets
    priors: Tensor  # [P, 4] cxcywh
    variances: tuple[float, float]
    sizes: list[tuple[int, int]]  # (H, W) of each image

    @classmethod
    def run(cls, model: nn.Module, normalized: Tensor, sizes: list[tuple[int, int]]) -> _Reference:
        with torch.no_grad():
            confidences, locations = model(normalized)
        variances = tuple(float(v) for v in getattr(model.config, "variances", (0.1, 0.2)))
        return cls(confidences.float(), locations.float(), model.priors.detach().float().cpu(), variances, sizes)

    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores[B, P, C] softmax, boxes[B, P, 4] normalized xyxy)``, as the jetson graph's outputs."""
        scores = torch.softmax(self.confidences, dim=-1)
        boxes = ops.decode_boxes(self.locations, self.priors, self.variances)
        return scores.numpy(), boxes.numpy()

    def detections(self, settings: PostprocessSettings) -> tuple[np.ndarray, ...]:
        """``(boxes[B, K, 4] normalized xyxy, scores[B, K], labels[B, K], num[B])`` of ``ops.ssd_postprocess``."""
        out = ops.ssd_postprocess(self.locations, torch.softmax(self.confidences, dim=-1), self.priors,
                                  self.variances, **asdict(settings))
        return tuple(t.numpy() for t in out)

    def detector(self, settings: PostprocessSettings) -> list[Detections]:
        """The Detector's per-image detections, boxes in pixels (:func:`ssdfast.detector.postprocess`)."""
        return postprocess(self.confidences, self.locations, self.priors, self.sizes, self.variances, settings)


# ----------------------------------------------------------------------------- comparisons


def _compare(report: CheckReport, name: str, got: np.ndarray, want: np.ndarray, atol: float) -> None:
    if got.shape != want.shape:
        report.failures.append(f"{name}: shape {got.shape} from onnxruntime, {want.shape} from PyTorch")
        return
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if got.size else 0.0
    report.max_abs_diff[name] = max(diff, report.max_abs_diff.get(name, 0.0))
    if not np.isfinite(diff) or diff > atol:
        report.failures.append(f"{name}: max abs difference {diff:.3g} > {atol:g}")


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


def _compare_raw(report: CheckReport, got: Sequence[np.ndarray], reference: _Reference, atol: float,
                 suffix: str = "") -> None:
    """The network's ``scores`` / ``boxes`` from onnxruntime against PyTorch's."""
    got_scores, got_boxes = got
    want_scores, want_boxes = reference.raw()
    _compare(report, "scores" + suffix, got_scores, want_scores, atol)
    _compare(report, "boxes" + suffix, got_boxes, want_boxes, atol)


def _compare_nms(report: CheckReport, got: Sequence[np.ndarray], reference: _Reference,
                 settings: PostprocessSettings, atol: float) -> None:
    """onnx-nms detections against ``ops.ssd_postprocess`` and against the Detector."""
    num, boxes, scores, classes = got
    for name, arr, dtype in (("num_detections", num, np.int32), ("detection_classes", classes, np.int32),
                             ("detection_boxes", boxes, np.float32), ("detection_scores", scores, np.float32)):
        if arr.dtype != dtype:
            report.failures.append(f"{name} should be {np.dtype(dtype).name}, got {arr.dtype}")
    K = settings.max_detections
    if boxes.shape[1:] != (K, 4) or num.shape[1:] != (1,):
        report.failures.append(f"detection shapes {num.shape}, {boxes.shape}: expected [B, 1] and [B, {K}, 4]")
        return
    report.num_detections = [int(n) for n in num[:, 0]]
    want_boxes, want_scores, want_labels, want_num = reference.detections(settings)
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

    # The same detections in each image's pixels, as the Detector reports them (scaled, clipped).
    worst = 0.0
    for i, (det, (h, w)) in enumerate(zip(reference.detector(settings), reference.sizes)):
        want_px, want_sc, want_lb = det.boxes, det.scores, det.labels
        n = int(num[i, 0])
        if n != want_lb.shape[0]:
            report.failures.append(f"image {i}: {n} detections from onnxruntime, {want_lb.shape[0]} from the Detector")
            continue
        scale = np.array([w, h, w, h], dtype=np.float32)
        got_px = np.minimum(np.maximum(boxes[i, :n] * scale, 0), scale)
        # Boxes compared relative to the image size (the graph's boxes are normalized).
        err = _match_detections(got_px / max(h, w), scores[i, :n], classes[i, :n], want_px.numpy() / max(h, w),
                                want_sc.numpy(), want_lb.numpy())
        if err is None:
            report.failures.append(f"image {i}: the detections' classes differ from the Detector's")
        else:
            worst = max(worst, err)
    report.max_abs_diff["vs Detector (boxes / image size, scores)"] = worst
    if worst > atol:
        report.failures.append(f"detections differ from the Detector's by {worst:.3g} > {atol:g}")


# ----------------------------------------------------------------------------- entry point


def _check_graph(report: CheckReport, proto: Any, config: Any) -> None:
    """Validity, operators, input name and shape: what needs no runtime."""
    import onnx

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
    h, w = model_image_size(config)
    in_shape = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if in_shape[1:] != [3, h, w]:
        report.failures.append(f"input {INPUT_NAME} should be [B, 3, {h}, {w}], got {in_shape}")


def check_export(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    format: str | None = None,
    images: Sequence[Any] | None = None,
    settings: PostprocessSettings | None = None,
    atol: float = 1e-4,
) -> CheckReport:
    """Check an exported ``.onnx`` file against the PyTorch ``model`` it was exported from.

    Args:
        path: the exported file.
        model: the same network (``.config``, ``.priors``), on any device; run on CPU, once.
        format: ``jetson`` / ``onnx-nms`` / ``trt-nms``; read from the file's metadata when None.
        images: images as :func:`ssdfast.detector.preprocess` takes them (numpy ``[H, W, 3]`` RGB,
            PIL images, ``[3, H, W]`` tensors), any sizes (default: :func:`sample_images`).
        settings: the post-processing settings the file was exported with (default: from the
            file's metadata, else ``DISPLAY``, :func:`export_onnx`'s default).
        atol: tolerance on raw outputs, detection boxes and scores.

    Returns:
        A :class:`CheckReport` (``report.raise_if_failed()`` raises :class:`CheckError`).

    Raises:
        MissingPackageError: onnx or onnxruntime is not installed.
    """
    onnx = require("onnx")
    require("onnxruntime", "checking an export against PyTorch")
    path = Path(path)
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    format = format or meta.get("ssdfast.format") or "jetson"
    settings = settings or settings_from_metadata(meta) or DISPLAY
    report = CheckReport(path=path, format=format)
    config = model.config
    _check_graph(report, proto, config)

    if images is None:
        h, w = model_image_size(config)
        images = sample_images(4, size=(int(h * 0.8), int(w * 1.1)))
    report.num_images = len(images)
    device = next(iter(model.parameters()), torch.zeros(())).device
    was_training = model.training
    model.eval().cpu()
    try:
        normalized, exported_input, sizes = prepare_inputs(images, config)
        reference = _Reference.run(model, normalized, sizes)
    finally:
        model.to(device)
        model.train(was_training)
    x = exported_input.numpy().astype(np.float32)
    batch = graph_batch_size(proto)

    expected_outputs = {"jetson": JETSON_OUTPUTS, "onnx-nms": NMS_OUTPUTS}.get(format)
    out_names = [o.name for o in proto.graph.output]
    if expected_outputs is not None and out_names != list(expected_outputs):
        report.failures.append(f"outputs should be {list(expected_outputs)}, got {out_names}")
    if format == "jetson":
        got = run_batched(onnxruntime_session(path), x, batch)
        _compare_raw(report, got, reference, atol)
        if got[0].shape[-1] != int(config.num_classes):
            report.failures.append(f"scores have {got[0].shape[-1]} classes, the model {config.num_classes}")
    elif format == "onnx-nms":
        _compare_nms(report, run_batched(onnxruntime_session(path), x, batch), reference, settings, atol)
    elif format == "trt-nms":
        report.failures.extend(validate_efficient_nms(proto, settings, int(config.num_classes)))
        sub = network_part(proto)
        if sub is None:
            report.failures.append(f"the graph has no {RAW_SCORES!r} / {RAW_BOXES!r} feeding EfficientNMS_TRT")
        else:
            _compare_raw(report, run_batched(onnxruntime_session(sub), x, batch), reference, atol,
                         suffix=" (EfficientNMS input)")
        report.notes.append("EfficientNMS_TRT runs in TensorRT only: its node was validated, not run")
    else:
        report.failures.append(f"unknown format {format!r}")
    return report
