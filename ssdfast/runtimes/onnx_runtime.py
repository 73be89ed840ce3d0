"""ONNX Runtime: an exported ``.onnx`` file as a detector's network (:func:`onnxruntime_network`).

On the CPU (``CPUExecutionProvider``), or on a GPU with ``CUDAExecutionProvider`` when the detector's
device is CUDA and onnxruntime-gpu is installed. The session's threads are the ones this process
plans for its network (:mod:`ssdfast.threads`); idle threads sleep instead of spinning.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from ..export.formats import INPUT_NAME, JETSON_OUTPUTS
from ..export.runtime import onnxruntime_session
from .exported import ExportedNetwork, GraphInfo, numpy_input, shape_of

__all__ = ["onnxruntime_network"]


def _providers(ort, device: torch.device) -> tuple[list, torch.device]:
    """The session's providers and where the detector then runs (CPU unless CUDA is asked and available)."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"], torch.device("cpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        warnings.warn("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu): running on the "
                      "CPU", stacklevel=3)
        return ["CPUExecutionProvider"], torch.device("cpu")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"], device


def onnxruntime_network(path: str | os.PathLike, *, device: str | torch.device = "cpu", threads: int | None = None,
                        resize: str | None = None) -> tuple[ExportedNetwork, torch.device]:
    """An onnxruntime session of the ``jetson`` graph in ``path`` as a detector's network, and the device
    the detector prepares its batches on.

    ``threads``: intra-op threads (default: torch's, which :func:`ssdfast.threads.plan_cpu` sets from the
    cores this process may use); ``resize``: see :class:`~ssdfast.runtimes.exported.ExportedNetwork`.
    Raises :class:`~ssdfast.errors.MissingPackageError` (one line) without onnxruntime.
    """
    from ..export.deps import require

    ort = require("onnxruntime", "the onnxruntime runtime")
    providers, where = _providers(ort, torch.device(device))
    session = onnxruntime_session(os.fspath(path), threads or torch.get_num_threads(), providers=providers)
    meta = session.get_modelmeta()
    outputs = {o.name: shape_of(o.shape) for o in session.get_outputs()}
    graph = GraphInfo(os.fspath(path), shape_of(session.get_inputs()[0].shape), list(outputs), outputs,
                      dict(meta.custom_metadata_map), meta.producer_name)
    input_name = session.get_inputs()[0].name if session.get_inputs() else INPUT_NAME
    names = list(JETSON_OUTPUTS)

    def run(batch: Tensor) -> tuple[Tensor, Tensor]:
        scores, boxes = session.run(names, {input_name: numpy_input(batch)})
        return torch.from_numpy(scores), torch.from_numpy(boxes)

    network = ExportedNetwork(run, graph, runtime="onnxruntime", resize=resize)
    network.session = session
    return network, where
