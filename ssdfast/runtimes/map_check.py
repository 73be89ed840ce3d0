"""The mAP of what ships next to the PyTorch model's: :func:`compare_map` (``ssdfast-export --check
--data DIR``).

The PyTorch model and its export are scored on the same images with the same post-processing
(:data:`~ssdfast.ops.EVALUATION`) and the same metric: with ssdfast's preprocessing the two must agree
within :data:`MAP_MARGINS` (mAP points: 0.5 for an FP32 graph, whose only difference is float
rounding; 1.0 for an INT8 one); the export's figure with detectNet's preprocessing (nearest-neighbour
resize, what a Jetson feeds it) is reported beside them, for information: that difference is the
preprocessing's, not the export's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from ..detector import Detector
from ..ops.settings import EVALUATION, PostprocessSettings
from .load import load_detector
from .names import MAP_MARGINS

__all__ = ["MAP_MARGINS", "MapComparison", "compare_map", "graph_precision"]

#: Operators that make a graph INT8 (explicit quantization, or ONNX Runtime's integer operators).
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def graph_precision(path: str | os.PathLike) -> str:
    """``"int8"`` when the ``.onnx`` file holds quantization operators, else ``"fp32"``."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return "int8" if any(node.op_type in _INT8_OPS for node in proto.graph.node) else "fp32"


@dataclass
class MapComparison:
    """What :func:`compare_map` measured (mAP as fractions; differences and the margin in points)."""

    metric: str
    num_images: int
    pytorch: float
    exported: float
    runtime: str
    precision: str
    detectnet: float | None = None
    name: str = "the export"

    @property
    def margin(self) -> float:
        return MAP_MARGINS[self.precision]

    @property
    def difference(self) -> float:
        """Exported minus PyTorch, in mAP points."""
        return (self.exported - self.pytorch) * 100

    @property
    def passed(self) -> bool:
        return abs(self.difference) <= self.margin

    def summary(self) -> str:
        """The figures side by side, a few lines."""
        kind = "VOC mAP@0.5" if self.metric == "voc" else "COCO AP@[.5:.95]"
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"{kind} on {self.num_images} test images, PyTorch vs {self.name} ({self.precision}) in {self.runtime}:",
            f"  PyTorch, ssdfast preprocessing:          {self.pytorch:.4f}",
            f"  exported, ssdfast preprocessing:         {self.exported:.4f}  ({self.difference:+.2f} points; "
            f"margin {self.margin:g}: {verdict})",
        ]
        if self.detectnet is not None:
            lines.append(f"  exported, detectnet preprocessing:       {self.detectnet:.4f}  "
                         f"({(self.detectnet - self.pytorch) * 100:+.2f} points; nearest-neighbour resize as "
                         "detectNet feeds it; for information)")
        return "\n".join(lines)


def compare_map(
    pytorch: Detector,
    exported: str | os.PathLike | Sequence[str | os.PathLike],
    dataset: Any,
    *,
    runtime: str = "onnxruntime",
    label_file: str | os.PathLike | None = None,
    metric: str = "voc",
    settings: PostprocessSettings = EVALUATION,
    batch_size: int = 16,
    num_workers: int = 0,
    detectnet: bool = True,
    progress: bool = False,
) -> list[MapComparison]:
    """Score ``pytorch`` (the model's detector, torch runtime) once and each exported file of ``exported``
    (e.g. the FP32 export and its INT8 files; in ``runtime``, with ssdfast's preprocessing and, when
    ``detectnet``, with detectNet's) on ``dataset`` with ``metric`` (``"voc"`` or ``"coco"``) and
    ``settings``: one :class:`MapComparison` per file (see the module docstring)."""
    from ..evaluation import evaluate

    def score(detector: Detector) -> dict[str, Any]:
        return evaluate(detector, dataset, batch_size=batch_size, metric=metric, settings=settings,
                        num_workers=num_workers, progress=progress)

    files = [exported] if isinstance(exported, (str, os.PathLike)) else list(exported)
    reference = score(pytorch)
    out = []
    for path in files:
        shipped = load_detector(path, runtime=runtime, settings=settings, label_file=label_file)
        result = score(shipped)
        nearest = None
        if detectnet:  # the same network, fed as detectNet feeds it
            fed_as_detectnet = Detector(shipped.network, shipped.class_names, shipped.device, settings,
                                        preprocessing=shipped.preprocessing.with_resize("nearest"))
            nearest = float(score(fed_as_detectnet)["mAP"])
        out.append(MapComparison(metric, int(reference["num_images"]), float(reference["mAP"]), float(result["mAP"]),
                                 runtime, graph_precision(path), nearest, os.path.basename(os.fspath(path))))
    return out
