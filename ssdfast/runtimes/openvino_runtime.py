"""OpenVINO: an exported ``.onnx`` file or an OpenVINO model (``.xml`` + ``.bin``) as a detector's
network (:func:`openvino_network`).

On OpenVINO's ``CPU`` device by default (``GPU`` / ``NPU`` when asked for by name), in FP32
(``INFERENCE_PRECISION_HINT`` f32: on CPUs with bf16 units OpenVINO would otherwise compute in bf16,
and the detections would no longer be the PyTorch model's), with the threads this process plans for
its network. A graph with a dynamic batch is compiled for each batch size it meets (static shapes run
faster), the last few kept.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from ..export.formats import JETSON_OUTPUTS
from .exported import ExportedNetwork, GraphInfo, numpy_input, onnx_graph_info, shape_of

__all__ = ["openvino_network", "OPENVINO_DEVICES"]

#: OpenVINO device names a detector may be given instead of a torch device.
OPENVINO_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
#: Compiled batch sizes kept per network (a dynamic-batch graph meets a few: the batch size and a last, smaller batch).
_KEEP = 4


def openvino_device(device: Any) -> str:
    """OpenVINO's device for a detector's ``device``: an OpenVINO name as given (``"GPU"``, ``"GPU.1"``: an
    Intel GPU), else ``"CPU"`` (a torch device; a CUDA one, e.g. the command lines' ``--device auto`` on an
    NVIDIA machine, with a warning: OpenVINO does not run on NVIDIA GPUs)."""
    text = str(device)
    if text.split(".")[0].upper() in OPENVINO_DEVICES:
        return text.upper()
    if torch.device(text).type != "cpu":
        warnings.warn(f"the openvino runtime runs on OpenVINO devices ({', '.join(OPENVINO_DEVICES)}), not {text}: "
                      "running on the CPU", stacklevel=3)
    return "CPU"


class _Compiled:
    """The model compiled per batch size (or once, for a fixed batch): ``run(batch) -> (scores, boxes)``."""

    def __init__(self, core: Any, model: Any, device: str, config: dict[str, Any], graph: GraphInfo):
        self.core, self.model, self.device, self.config = core, model, device, config
        self.fixed = graph.batch_size is not None
        self.image_shape = [3, *graph.image_size]
        self.requests: OrderedDict[int | None, Any] = OrderedDict()

    def request(self, n: int) -> tuple[Any, Any, Any]:
        key = None if self.fixed else n
        if key in self.requests:
            self.requests.move_to_end(key)
            return self.requests[key]
        model = self.model
        if not self.fixed:
            model = model.clone()
            model.reshape({0: [n, *self.image_shape]})
        compiled = self.core.compile_model(model, self.device, self.config)
        entry = (compiled.create_infer_request(), compiled.output(JETSON_OUTPUTS[0]),
                 compiled.output(JETSON_OUTPUTS[1]))
        self.requests[key] = entry
        while len(self.requests) > _KEEP:
            self.requests.popitem(last=False)
        return entry

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        request, scores, boxes = self.request(int(batch.shape[0]))
        out = request.infer({0: numpy_input(batch)})
        return torch.from_numpy(out[scores]), torch.from_numpy(out[boxes])


def openvino_network(path: str | os.PathLike, *, device: Any = "cpu", threads: int | None = None,
                     resize: str | None = None) -> tuple[ExportedNetwork, torch.device]:
    """OpenVINO's compiled ``jetson`` graph in ``path`` (``.onnx``, or ``.xml`` with its ``.bin``) as a
    detector's network, and the device the detector prepares its batches on (the CPU).

    ``device``: ``"cpu"`` (OpenVINO's CPU) or an OpenVINO device name; ``threads``: inference threads
    (default: torch's, see :mod:`ssdfast.threads`); ``resize``: see
    :class:`~ssdfast.runtimes.exported.ExportedNetwork`. Raises
    :class:`~ssdfast.errors.MissingPackageError` (one line) without openvino.
    """
    from ..export.deps import require

    ov = require("openvino", "the openvino runtime")
    path = os.fspath(path)
    target = openvino_device(device)
    core = ov.Core()
    model = core.read_model(path)
    if path.lower().endswith(".onnx"):
        graph = onnx_graph_info(path)  # its metadata too, which OpenVINO does not keep
    else:
        outputs = {o.get_any_name(): shape_of(_dims(o.get_partial_shape())) for o in model.outputs}
        graph = GraphInfo(path, shape_of(_dims(model.inputs[0].get_partial_shape())), list(outputs), outputs)
    graph.check("openvino")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if target == "CPU":
        config["INFERENCE_NUM_THREADS"] = int(threads or torch.get_num_threads())
    run = _Compiled(core, model, target, config, graph)
    network = ExportedNetwork(run, graph, runtime="openvino", resize=resize)
    return network, torch.device("cpu")


def _dims(shape: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in shape]
