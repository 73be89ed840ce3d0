"""TensorRT: an exported ``.onnx`` file built into an engine (cached, :mod:`ssdfast.runtimes.cache`)
and run on the GPU as a detector's network (:func:`tensorrt_network`).

Needs the ``tensorrt`` Python package (8.5 or newer: its tensor API) and a CUDA GPU. The engine is
FP32 (the detections stay the PyTorch model's up to TensorRT's arithmetic) with a dynamic batch up to
``max_batch`` for a dynamic-batch file; it runs on torch's current CUDA stream, its inputs and
outputs torch CUDA tensors, so the post-processing stays on the GPU.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from ..export.formats import INPUT_NAME, JETSON_OUTPUTS
from .exported import ExportedNetwork, onnx_graph_info

__all__ = ["TensorRTRun", "tensorrt_network", "MAX_BATCH"]

#: The largest batch of the engine built for a dynamic-batch file (bigger batches run in chunks).
MAX_BATCH = 32


class TensorRTRun:
    """A deserialized engine and its execution context: ``run(batch) -> (scores, boxes)`` on ``device``.

    ``trt`` is the tensorrt module (a stand-in in tests). The engine's largest batch is
    ``max_batch`` (None for a fixed-batch engine).
    """

    def __init__(self, engine_bytes: bytes, device: torch.device, trt: Any):
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not load the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.device = torch.device(device)
        shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        self.max_batch = None
        if shape and shape[0] < 0:  # dynamic: the optimization profile's largest
            self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        x = batch.to(self.device, torch.float32).contiguous()
        context = self.context
        context.set_input_shape(INPUT_NAME, tuple(x.shape))
        context.set_tensor_address(INPUT_NAME, x.data_ptr())
        outputs = []
        for name in JETSON_OUTPUTS:
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        if not context.execute_async_v3(stream):
            raise RuntimeError("TensorRT failed to run the engine")
        return outputs[0], outputs[1]


def tensorrt_network(path: str | os.PathLike, *, device: str | torch.device = "cuda", resize: str | None = None,
                     max_batch: int = MAX_BATCH, cache_dir: str | os.PathLike | None = None
                     ) -> tuple[ExportedNetwork, torch.device]:
    """The ``jetson`` graph in ``path`` as a TensorRT engine (built once, cached), as a detector's
    network, and the CUDA device it runs on. A one-line error without the tensorrt package
    (:class:`~ssdfast.errors.MissingPackageError`) or without a CUDA GPU (ValueError)."""
    from ..export.deps import require
    from .cache import cached_engine

    trt = require("tensorrt", "the tensorrt runtime")
    device = torch.device(device)
    if not torch.cuda.is_available():
        raise ValueError("the tensorrt runtime runs on a CUDA GPU, and none is available here")
    if device.type != "cuda":
        raise ValueError(f"the tensorrt runtime runs on a CUDA GPU: give a CUDA device, not {device}")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    graph = onnx_graph_info(path)
    graph.check("tensorrt")
    with torch.cuda.device(device):
        engine = cached_engine(path, tensorrt_version=trt.__version__, gpu=torch.cuda.get_device_name(device),
                               max_batch=max_batch, batch_size=graph.batch_size, image_size=graph.image_size,
                               cache_dir=cache_dir)
        run = TensorRTRun(engine.read_bytes(), device, trt)
    return ExportedNetwork(run, graph, runtime="tensorrt", resize=resize, max_batch=run.max_batch), device
