"""ONNX export of an SSD: :class:`ExportModule` (the network as the graphs compute it), tracing,
simplification, and :func:`export_onnx`, the entry point that writes one of the three formats of
:mod:`ssdfast.export.formats` (``jetson``, ``onnx-nms``, ``trt-nms``).

The network part is traced with PyTorch's TorchScript-based exporter (``dynamo=False``): it writes
any opset from 11 up, including 13, the last one TensorRT 8.2 (JetPack 4.6, Jetson Nano) parses.
The traced graph is then simplified by onnxslim (constant folding of ``Shape`` chains, identity and
dead-node removal, batch-independent reshapes): a fixed-batch graph has no ``Shape`` node left and
static output shapes (``[1, 8732, 21]``, not ``[1, ?, 21]``); a dynamic-batch graph keeps ``batch``
as its only symbolic dimension. The post-processing parts (:mod:`ssdfast.export.nms`) are appended
afterwards with :mod:`onnx.helper`, so their graph is exactly what that module writes.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..io import write_label_file
from ..ops.reference import DECODE_CLAMP
from ..ops.settings import DISPLAY, PostprocessSettings
from .deps import require
from .formats import (
    DEFAULT_OPSET,
    FORMATS,
    INPUT_NAME,
    JETSON_OUTPUTS,
    MAX_OPSET,
    MIN_OPSET,
    NMS_OUTPUTS,
    RAW_BOXES,
    RAW_SCORES,
    model_image_size,
    settings_metadata,
)
from .nms import append_efficient_nms, append_onnx_nms

__all__ = ["ExportModule", "ExportResult", "export_onnx"]


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
        self.fold_normalization = not (
            torch.allclose(scale, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-7)
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


# ----------------------------------------------------------------------------- tracing


def _trace_to_onnx(module: ExportModule, image_size: tuple[int, int], opset: int, batch_size: int | None,
                   output_names: Sequence[str]) -> Any:
    """Run the TorchScript-based exporter on ``module`` and return the ``onnx.ModelProto``."""
    onnx = require("onnx")

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



def _simplify(proto: Any) -> Any:
    """The traced graph simplified by onnxslim (same outputs, to the bit, on every network measured).

    What it does here: ``Shape`` / ``Gather`` / ``Unsqueeze`` / ``Concat`` chains with a known
    result become constants (the exporter keeps them for ``reshape(x.shape[0], -1, C)`` and
    ``expand_as``), ``Identity`` and dead nodes go, ``Constant`` nodes become initializers, and
    shape inference gives every output its static sizes. It keeps the input and output names, the
    opset and the IR version (what TensorRT 8.x reads).
    """
    onnxslim = require("onnxslim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(proto)


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
    settings: PostprocessSettings = DISPLAY,
    class_names: Sequence[str] | None = None,
    labels_path: str | os.PathLike | None = None,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export an SSD (``ssdfast.models`` ``SSD``: ``.config``, ``.priors``) to ONNX.

    Args:
        model: the network; exported on CPU in eval mode (the module itself is left as it was).
        path: the ``.onnx`` file to write (parent folders are created).
        format: ``"jetson"``, ``"onnx-nms"`` or ``"trt-nms"`` (see :mod:`ssdfast.export.formats`).
        opset: ONNX opset, ``>= 11`` (13 by default: TensorRT 8.2 parses up to 13).
        batch_size: a fixed batch size, or ``None`` / ``"dynamic"`` for a dynamic batch axis.
        settings: post-processing for the two NMS formats (default: ``DISPLAY``, the Detector's),
            written to the file's metadata (:func:`~ssdfast.export.formats.settings_metadata`).
        class_names: when given (BACKGROUND first, exactly C names), written to ``labels_path``
            (default ``labels.txt`` beside ``path``) and stored in the model's metadata.
        metadata: extra ``metadata_props`` (e.g. the checkpoint's sha256).

    Returns:
        An :class:`ExportResult`.
    """
    onnx = require("onnx")

    if format not in FORMATS:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, got {format!r}")
    opset = int(opset)
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(f"opset should be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    batch = _check_batch_size(batch_size)
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
        raw_names = JETSON_OUTPUTS if format == "jetson" else (RAW_SCORES, RAW_BOXES)
        with torch.no_grad():
            proto = _trace_to_onnx(module, image_size, opset, batch, raw_names)
    finally:
        model.to(device)
        model.train(was_training)

    proto = _simplify(proto)
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
        # the resize the model was trained with (ssdfast.detector.RESIZES), so a runtime feeds it the same
        "ssdfast.resize": "antialias" if bool(getattr(config, "antialias", True)) else "opencv",
    }
    if format != "jetson":
        meta.update(settings_metadata(settings))
    if class_names is not None:
        meta["ssdfast.class_names"] = "\n".join(class_names)
    meta.update(metadata or {})
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "ssdfast"
    proto.doc_string = f"ssdfast {format} export of {meta['ssdfast.net']}"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(proto)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a reader never sees half a file
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

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
