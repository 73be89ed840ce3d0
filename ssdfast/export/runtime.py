"""Running an exported graph in onnxruntime, batch by batch at the graph's batch size (the check's
runs, and :mod:`ssdfast.runtimes`' sessions)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .deps import require
from .formats import INPUT_NAME

__all__ = ["onnxruntime_session", "graph_batch_size", "run_batched"]


def onnxruntime_session(proto_or_path: Any, threads: int = 4, *, providers: Sequence[Any] = ("CPUExecutionProvider",),
                        purpose: str | None = None) -> Any:
    """An onnxruntime ``InferenceSession`` of a ModelProto or an ``.onnx`` file (on the CPU unless
    ``providers`` say otherwise).

    At most ``threads`` intra-op threads and one inter-op thread; idle threads sleep instead of
    spinning (a session shares the machine with PyTorch, data workers and others). Needs onnxruntime
    (:class:`~ssdfast.errors.MissingPackageError`, its message starting with ``purpose``).
    """
    ort = require("onnxruntime", purpose)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, min(int(threads), os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(proto_or_path, (str, os.PathLike)):
        source = os.fspath(proto_or_path)
    else:
        source = proto_or_path.SerializeToString()
    return ort.InferenceSession(source, options, providers=list(providers))


def graph_batch_size(proto: Any) -> int | None:
    """The fixed batch size of the graph's input, or None when it is dynamic."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def run_batched(session: Any, x: np.ndarray, batch_size: int | None) -> list[np.ndarray]:
    """Run ``session`` on ``x[N, 3, H, W]`` (``input_0``): in one call when the batch is dynamic
    (``batch_size`` None), else in chunks of ``batch_size``, the last one padded by repeating its
    last image (the padding's outputs are dropped). Returns the outputs, each ``[N, ...]``."""
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
