"""An exported ``jetson``-format graph as a :class:`~ssdfast.detector.Detector`'s network, whatever
runtime runs it: :class:`ExportedNetwork` (the network contract of :mod:`ssdfast.detector.network`)
and :class:`GraphInfo` (what a runtime reports of the graph it loaded).

A ``jetson`` graph takes ``input_0``, RGB in [-1, 1] (its model's mean/std folded in), and gives
``scores`` (softmax probabilities) and ``boxes`` (decoded, normalized xyxy). Its boxes are handed to
``ops.ssd_postprocess`` re-encoded against *unit* priors (centre 0, size 1, variances (1, 1): offsets
``(cx, cy, log w, log h)``), which the op decodes back to the same boxes; so no priors need to be known
for a file given alone, and the post-processing is ssdfast's, as in the PyTorch runtime. The
preprocessing is the detector's, with mean = std = 0.5 (detectNet's ``(pixel / 255 - 0.5) / 0.5``)
and the resize the model was trained with (the file's ``ssdfast.resize`` metadata).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .. import ops
from ..detector import Preprocessing
from ..export.formats import JETSON_OUTPUTS

__all__ = ["GraphInfo", "ExportedNetwork", "UNIT_VARIANCES", "unit_priors", "shape_of", "numpy_input",
           "onnx_graph_info"]

#: Variances of the unit priors: offsets are the boxes' (cx, cy, log w, log h) themselves.
UNIT_VARIANCES = (1.0, 1.0)
#: The input an exported graph takes: RGB in [-1, 1].
GRAPH_MEAN = GRAPH_STD = (0.5, 0.5, 0.5)


def unit_priors(num_priors: int, device: str | torch.device = "cpu") -> Tensor:
    """``[P, 4]`` cxcywh priors at (0, 0) of size 1: against them (variances (1, 1)) a box's SSD offsets
    are its ``(cx, cy, log w, log h)``."""
    priors = torch.zeros(num_priors, 4, device=device)
    priors[:, 2:] = 1.0
    return priors


@dataclass
class GraphInfo:
    """What a runtime reports of a graph it loaded.

    Attributes:
        path: the file.
        input_shape: of ``input_0``: ``[B, 3, H, W]``, None for a dynamic dimension.
        outputs: output names, in order.
        output_shapes: output name -> its shape (None for dynamic dimensions).
        metadata: the file's metadata (ONNX ``metadata_props``; ``{}`` when it has none).
        producer: the program that wrote it (ONNX ``producer_name``; ``""`` when unknown).
    """

    path: str
    input_shape: Sequence[int | None]
    outputs: Sequence[str]
    output_shapes: dict[str, Sequence[int | None]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""

    def check(self, runtime: str) -> None:
        """A ValueError naming the file when it is not a ``jetson``-format graph."""
        where = f"{self.path}"
        missing = [name for name in JETSON_OUTPUTS if name not in self.outputs]
        if missing:
            fmt = self.metadata.get("ssdfast.format")
            what = f"an {fmt} export" if fmt else f"a graph with outputs {list(self.outputs)}"
            raise ValueError(f"{where}: {what}; the {runtime} runtime runs jetson-format files (outputs "
                             "scores and boxes, ssdfast-export's default format)")
        if len(self.input_shape) != 4 or self.input_shape[1] not in (3, None):
            raise ValueError(f"{where}: its input should be [B, 3, H, W], got {list(self.input_shape)}")
        if not all(isinstance(d, int) and d > 0 for d in self.input_shape[2:]):
            raise ValueError(f"{where}: its input size should be fixed, got {list(self.input_shape)}")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.input_shape[2]), int(self.input_shape[3])  # type: ignore[arg-type]

    @property
    def batch_size(self) -> int | None:
        """The graph's fixed batch size, None when it is dynamic."""
        b = self.input_shape[0]
        return b if isinstance(b, int) and b > 0 else None

    @property
    def num_classes(self) -> int | None:
        c = (self.output_shapes.get("scores") or [None])[-1]
        if isinstance(c, int) and c > 0:
            return c
        named = self.metadata.get("ssdfast.num_classes", "")
        return int(named) if named.isdigit() else None

    @property
    def num_priors(self) -> int | None:
        shape = self.output_shapes.get("scores") or []
        p = shape[1] if len(shape) == 3 else None
        return p if isinstance(p, int) and p > 0 else None

    @property
    def resize(self) -> str:
        """The resize its model was trained with: the file's ``ssdfast.resize``; for files without it,
        antialiased for ssdfast's exports, OpenCV's for others (pytorch-ssd's ``onnx_export.py``:
        its models were trained on ``cv2.resize``)."""
        named = self.metadata.get("ssdfast.resize")
        if named in ("antialias", "opencv"):
            return named
        return "antialias" if self.producer in ("ssdfast", "") else "opencv"

    @property
    def class_names(self) -> list[str] | None:
        """The class names stored in the file (``ssdfast.class_names``), if any."""
        names = self.metadata.get("ssdfast.class_names")
        return names.split("\n") if names else None


def shape_of(dims: Sequence[Any]) -> list[int | None]:
    """A runtime's shape (ints, strings or None for dynamic dimensions, -1 too) -> ints and None."""
    return [d if isinstance(d, int) and d > 0 else None for d in dims]


class ExportedNetwork:
    """A ``jetson`` graph as a detector's network (see the module docstring).

    Args:
        run: ``run(batch[N, 3, H, W] float32) -> (scores[N, P, C], boxes[N, P, 4])`` torch tensors,
            the runtime's call on a batch it can take (see ``batch_size`` and ``max_batch``).
        graph: what the runtime reports of the graph (checked: a ``jetson`` graph).
        runtime: its name (for messages).
        resize: the resize of its preprocessing (default: ``graph.resize``).
        max_batch: the most images one ``run`` takes (None: any number) when the graph's batch is dynamic.
    """

    outputs_probabilities = True
    variances = UNIT_VARIANCES

    def __init__(self, run: Callable[[Tensor], tuple[Tensor, Tensor]], graph: GraphInfo, *, runtime: str,
                 resize: str | None = None, max_batch: int | None = None):
        graph.check(runtime)
        self.graph = graph
        self.runtime = runtime
        self._run = run
        self.batch_size = graph.batch_size
        self.max_batch = max_batch
        self.preprocessing = Preprocessing(graph.image_size, GRAPH_MEAN, GRAPH_STD, resize or graph.resize)
        self.priors = unit_priors(graph.num_priors or 0)
        self.num_classes = graph.num_classes

    @property
    def path(self) -> str:
        return os.fspath(self.graph.path)

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        scores, boxes = self._run_batched(batch.float())
        if self.priors.shape[0] != boxes.shape[1] or self.priors.device != boxes.device:
            self.priors = unit_priors(boxes.shape[1], boxes.device)
        return scores, ops.encode_boxes(boxes, self.priors, UNIT_VARIANCES)

    def _run_batched(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """``run`` on the whole batch, or in chunks: of the graph's fixed batch size (the last one
        padded by repeating its last image, whose outputs are dropped), or of ``max_batch``."""
        n = batch.shape[0]
        step = self.batch_size or self.max_batch
        if step is None or n == step or (self.batch_size is None and n <= step):
            return self._run(batch)
        parts = []
        for chunk in batch.split(step):
            real = chunk.shape[0]
            if self.batch_size is not None and real < step:
                chunk = torch.cat([chunk, chunk[-1:].expand(step - real, *chunk.shape[1:])])
            scores, boxes = self._run(chunk)
            parts.append((scores[:real], boxes[:real]))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def numpy_input(batch: Tensor) -> Any:
    """A batch as the contiguous float32 numpy array runtimes take (a view when it is one already)."""
    return batch.detach().to("cpu", torch.float32).contiguous().numpy()


def onnx_graph_info(path: str | os.PathLike) -> GraphInfo:
    """What an ``.onnx`` file says of itself (read with onnx, for runtimes that keep no metadata)."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)

    def dims(value: Any) -> list[int | None]:
        return shape_of([d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim])

    outputs = {o.name: dims(o) for o in proto.graph.output}
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    return GraphInfo(os.fspath(path), dims(inputs[0]) if inputs else [], list(outputs), outputs,
                     {p.key: p.value for p in proto.metadata_props}, proto.producer_name)
