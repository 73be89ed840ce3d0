"""INT8 ONNX exports with Q/DQ nodes (explicit quantization), calibrated on the user's images.

:func:`quantize_onnx` turns an FP32 export (any format) into an INT8 one: ``QuantizeLinear`` /
``DequantizeLinear`` pairs around the convolutions, with per-channel weight scales and activation
scales calibrated on images already prepared as the graph's input
(:func:`ssdfast.export.inputs.calibration_batches`). The graph keeps its input and outputs (float32
``input_0`` in, the format's float outputs out); the SSD tail (softmax, box decoding, NMS) stays
float. The quantizer is ONNX Runtime's static quantization (``quantize_static``, min/max
calibration), chosen by measurement over NVIDIA Model Optimizer's ONNX PTQ and NNCF
(``benchmarks/int8_cases.py``).

One file per target, because what runs fast differs (:data:`INT8_RECIPES`):

- ``tensorrt``: symmetric int8 activations (zero points 0), per-channel symmetric int8 weights kept
  in float behind their own Q/DQ pair, float biases, Q/DQ on the inputs of convolutions and residual
  additions only: what TensorRT builds explicitly quantized INT8 engines from (TensorRT 8.x on
  Jetsons and later: ``trtexec --onnx=FILE --int8``).
- ``cpu``: unsigned int8 activations with zero points, ReLU / ReLU6 folded into the quantization of
  each convolution's output, per-channel int8 weights, int32 biases: what ONNX Runtime's and
  OpenVINO's CPU kernels fuse into integer convolutions. (ONNX Runtime runs the ``tensorrt`` file at
  about half its FP32 speed; OpenVINO on AMX CPUs runs its signed activations less accurately.)
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .deps import require
from .formats import INPUT_NAME

if TYPE_CHECKING:
    import numpy as np

__all__ = ["INT8_TARGETS", "CALIBRATION_METHODS", "Int8Recipe", "INT8_RECIPES",
           "Int8Result", "int8_path", "quantize_onnx", "qdq_summary"]

#: Per-channel QuantizeLinear / DequantizeLinear (the ``axis`` attribute) need opset 13.
MIN_INT8_OPSET = 13
#: Calibration images used at most (``ssdfast-export --calib-count``'s default).
CALIBRATION_COUNT = 256


@dataclass(frozen=True)
class Int8Recipe:
    """How the INT8 file of one target is quantized.

    ``activations``: ``"int8"`` (symmetric, zero point 0) or ``"uint8"`` (asymmetric, a zero point).
    ``float_weights``: weights stay float32 behind a QuantizeLinear / DequantizeLinear pair
    (TensorRT's form) instead of being stored as int8 behind a DequantizeLinear.
    ``quantize_bias``: biases stored as int32 (scale = input scale x weight scale).
    ``quantize_outputs``: the outputs of the quantized operators get a Q/DQ pair too, ReLU / ReLU6
    folded into it (:data:`FOLDED_ACTIVATIONS`): what CPU runtimes fuse into integer convolutions
    with an int8 output (the heads' logits and box offsets included; the tail takes them dequantized).
    TensorRT's placement quantizes only the inputs of convolutions and residual additions and leaves
    the fusions to TensorRT.
    """

    target: str
    activations: str
    float_weights: bool
    quantize_bias: bool
    quantize_outputs: bool
    runs_on: str


INT8_RECIPES = {
    recipe.target: recipe
    for recipe in (
        Int8Recipe("tensorrt", "int8", float_weights=True, quantize_bias=False, quantize_outputs=False,
                   runs_on="TensorRT (trtexec --onnx=FILE --int8; Jetson)"),
        Int8Recipe("cpu", "uint8", float_weights=False, quantize_bias=True, quantize_outputs=True,
                   runs_on="ONNX Runtime and OpenVINO on CPUs"),
    )
}
INT8_TARGETS = tuple(INT8_RECIPES)
#: Calibration methods of :func:`quantize_onnx`, the first is the default.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Operators quantized: the convolutions (the compute) and the residual additions between them.
QUANTIZED_OPS = ("Conv", "Add")
#: The coarsest quantization step (in logits or box offsets) a head output of the CPU file takes: a
#: head whose calibrated outputs span more than 255 such steps keeps its output float. Trained heads
#: measured span 8-19 (steps 0.03-0.07); an undertrained mb1-ssd had two heads spanning 200-600,
#: whose int8 outputs cost it 3.3 points of mAP (0.1 with them float).
MAX_HEAD_STEP = 0.25
#: Activations the CPU files fold into the quantization of the convolution before them (an unsigned
#: int8 range from 0 clips as ReLU / ReLU6 do), so each convolution output is quantized once.
FOLDED_ACTIVATIONS = ("Relu", "Clip")


@dataclass
class Int8Result:
    """What :func:`quantize_onnx` wrote."""

    path: Path
    target: str
    calibration_images: int
    quantized_convs: int
    total_convs: int
    float_head_outputs: int = 0  # CPU file: heads whose output range is too wide for int8 (MAX_HEAD_STEP)


def int8_path(fp32_path: str | os.PathLike, target: str) -> Path:
    """Where the INT8 file of ``target`` goes beside an FP32 export: ``best.onnx`` ->
    ``best-int8-tensorrt.onnx``, ``best-int8-cpu.onnx``."""
    if target not in INT8_RECIPES:
        raise ValueError(f"target should be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    path = Path(fp32_path)
    return path.with_name(f"{path.stem}-int8-{target}{path.suffix or '.onnx'}")


class _Batches:
    """``onnxruntime.quantization.CalibrationDataReader``: one ``{input_0: batch}`` at a time."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches = list(batches)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        import numpy as np

        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self._next = 0


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizer logs advice on the root logger (pre-process the model first: the export
    already has static shapes and a simplified graph); other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_advice() -> Iterator[None]:
    root = logging.getLogger()
    advice = _DropAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _check_source(proto: Any) -> None:
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_INT8_OPSET:
        raise ValueError(f"INT8 needs opset {MIN_INT8_OPSET} or higher (per-channel weight scales), "
                         f"the export has opset {opset}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise ValueError("the model is already quantized (it has QuantizeLinear / DequantizeLinear nodes)")


def _feeds_conv(nodes: Sequence[Any]) -> list[bool]:
    """For each node (in topological order, as ONNX lists them): is a convolution downstream of it?"""
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    feeds = [False] * len(nodes)
    for index in reversed(range(len(nodes))):
        feeds[index] = any(nodes[c].op_type == "Conv" or feeds[c]
                           for out in nodes[index].output for c in consumers.get(out, ()))
    return feeds


def _float_nodes(proto: Any, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types`` that stay float: all but the convolutions, the residual
    additions and activations between convolutions; i.e. those with a constant operand (the folded
    input normalization) and those after the last convolutions (the box decoding and its clamp)."""
    nodes = list(proto.graph.node)
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    feeds = _feeds_conv(nodes)
    return [n.name for i, n in enumerate(nodes)
            if n.op_type in op_types and n.op_type != "Conv"
            and (n.op_type == "Add" and any(name in constants for name in n.input) or not feeds[i])]


def _float_wide_head_outputs(proto: Any, numpy_helper: Any) -> int:
    """Take out (in place) the Q/DQ pair of each head output quantized in steps coarser than
    :data:`MAX_HEAD_STEP`, so the tail gets it in float; returns how many."""
    nodes = list(proto.graph.node)
    feeds = _feeds_conv(nodes)
    scales = {i.name: i for i in proto.graph.initializer}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    users: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for i, q in enumerate(nodes):
        source = producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if source is None or nodes[source].op_type != "Conv" or feeds[source] or users[q.input[0]] != 1:
            continue
        if float(numpy_helper.to_array(scales[q.input[1]]).max()) <= MAX_HEAD_STEP:
            continue
        dequantizers = [j for j, n in enumerate(nodes) if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
        drop |= {i, *dequantizers}
        rename.update({nodes[j].output[0]: q.input[0] for j in dequantizers})
    kept = [n for i, n in enumerate(nodes) if i not in drop]
    for node in kept:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return sum(nodes[i].op_type == "QuantizeLinear" for i in drop)


def quantize_onnx(
    source: str | os.PathLike,
    output: str | os.PathLike,
    calibration: Sequence[np.ndarray],
    *,
    target: str = INT8_TARGETS[0],
    method: str = CALIBRATION_METHODS[0],
) -> Int8Result:
    """Write the INT8 (Q/DQ) version of the FP32 export ``source`` for ``target`` to ``output``.

    Args:
        source: an FP32 ``.onnx`` export (opset >= 13), e.g. from :func:`ssdfast.export.export_onnx`.
        output: the ``.onnx`` file to write (atomically).
        calibration: batches ``[b, 3, H, W]`` float32 of the graph's input (RGB in [-1, 1]), each of
            a batch size the graph takes (:func:`ssdfast.export.inputs.calibration_batches`).
        target: ``"tensorrt"`` or ``"cpu"`` (:data:`INT8_RECIPES`).
        method: how activation ranges are calibrated: ``"minmax"`` (the minimum and maximum over the
            images), ``"entropy"`` or ``"percentile"`` (99.999%) of their histograms. The histogram
            methods keep every calibrated activation of every image in memory until the end.

    The source's metadata is kept, with ``ssdfast.int8_target`` added.
    """
    onnx = require("onnx")
    require("onnxruntime", "INT8 export (calibration and quantization)")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in INT8_RECIPES:
        raise ValueError(f"target should be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method should be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    recipe = INT8_RECIPES[target]
    batches = list(calibration)
    if not batches:
        raise ValueError("INT8 calibration needs at least one image")
    source, output = Path(source), Path(output)
    proto = onnx.load(str(source))
    _check_source(proto)
    symmetric = recipe.activations == "int8"
    op_types = [*QUANTIZED_OPS, *(FOLDED_ACTIVATIONS if recipe.quantize_outputs else ())]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ssdfast-int8-", dir=output.parent) as work, _quiet_advice():
        unnamed = [n for n in proto.graph.node if not n.name]
        if unnamed:  # the quantizer picks nodes by name
            for i, node in enumerate(unnamed):
                node.name = f"ssdfast_{node.op_type}_{i}"
            source = Path(work) / "named.onnx"
            onnx.save(proto, str(source))
        quantized = Path(work) / "int8.onnx"
        quantize_static(
            str(source), str(quantized), _Batches(batches), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types, nodes_to_exclude=_float_nodes(proto, op_types), per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={
                "ActivationSymmetric": symmetric, "WeightSymmetric": True,
                "AddQDQPairToWeight": recipe.float_weights, "QuantizeBias": recipe.quantize_bias,
                "OpTypesToExcludeOutputQuantization": [] if recipe.quantize_outputs else list(QUANTIZED_OPS),
            },
        )
        result = onnx.load(str(quantized))
        float_heads = _float_wide_head_outputs(result, onnx.numpy_helper) if recipe.quantize_outputs else 0
        onnx.helper.set_model_props(result, {**{p.key: p.value for p in proto.metadata_props},
                                             "ssdfast.int8_target": target})
        result.producer_name = proto.producer_name
        result.doc_string = f"{proto.doc_string} (INT8 Q/DQ for {target})".strip()
        onnx.checker.check_model(result)
        tmp = Path(work) / "final.onnx"
        onnx.save(result, str(tmp))
        os.replace(tmp, output)
    summary = qdq_summary(result)
    return Int8Result(path=output, target=target, calibration_images=sum(int(b.shape[0]) for b in batches),
                      quantized_convs=summary["quantized_convs"], total_convs=summary["convs"],
                      float_head_outputs=float_heads)


def qdq_summary(proto: Any) -> dict[str, int]:
    """Counts in a Q/DQ graph: ``quantize``, ``dequantize`` nodes, ``convs``, and ``quantized_convs``
    (convolutions whose input and weight both come from a DequantizeLinear)."""
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    return {
        "quantize": sum(n.op_type == "QuantizeLinear" for n in proto.graph.node),
        "dequantize": len(dequantized),
        "convs": len(convs),
        "quantized_convs": sum(n.input[0] in dequantized and n.input[1] in dequantized for n in convs),
    }
