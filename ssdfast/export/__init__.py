"""Export to ONNX (jetson-inference, ONNX Runtime, TensorRT) and TensorRT engines.

By concern:

- :mod:`~ssdfast.export.formats`: the three formats (``jetson``, ``onnx-nms``, ``trt-nms``), their
  input/output names, opsets, :class:`PostprocessSettings`.
- :mod:`~ssdfast.export.onnx`: :class:`ExportModule` (the network as the graphs compute it), tracing,
  simplification (onnxslim) and :func:`export_onnx`, which writes the file plus ``labels.txt``.
- :mod:`~ssdfast.export.nms`: the post-processing graph parts (ONNX ``NonMaxSuppression`` graph,
  TensorRT ``EfficientNMS_TRT`` node).
- :mod:`~ssdfast.export.check` (with :mod:`~ssdfast.export.graph_checks`,
  :mod:`~ssdfast.export.runtime`, :mod:`~ssdfast.export.inputs`): :func:`check_export` compares the
  file in onnxruntime with the PyTorch model it came from.
- :mod:`~ssdfast.export.tensorrt`: :func:`build_engine` / :func:`trtexec_command` make a TensorRT
  engine; its sidecar JSON carries the checkpoint's sha256 and :func:`check_engine` refuses a stale one.
- :mod:`~ssdfast.export.model_dir`: :func:`pick_model_file`, the file ``--model-dir`` exports.
- :mod:`~ssdfast.export.deps`: :func:`require` gives one line naming a missing package.

The command line is ``ssdfast-export`` (:mod:`ssdfast.cli.export`).
"""
from .check import CheckError, CheckReport, check_export
from .deps import MissingPackageError, require
from .formats import DEFAULT_OPSET, FORMATS, PostprocessSettings
from .graph_checks import validate_efficient_nms
from .inputs import load_images, sample_images
from .model_dir import ModelChoice, ModelDirError, pick_model_file
from .onnx import ExportModule, ExportResult, export_onnx
from .tensorrt import (
    EngineInfo,
    StaleEngineError,
    build_engine,
    check_engine,
    file_sha256,
    read_sidecar,
    sidecar_path,
    tensorrt_available,
    trtexec_command,
    write_sidecar,
)

__all__ = [
    "FORMATS",
    "DEFAULT_OPSET",
    "PostprocessSettings",
    "ExportModule",
    "ExportResult",
    "export_onnx",
    "CheckReport",
    "CheckError",
    "check_export",
    "validate_efficient_nms",
    "load_images",
    "sample_images",
    "ModelChoice",
    "ModelDirError",
    "pick_model_file",
    "MissingPackageError",
    "require",
    "EngineInfo",
    "StaleEngineError",
    "build_engine",
    "check_engine",
    "file_sha256",
    "read_sidecar",
    "sidecar_path",
    "tensorrt_available",
    "trtexec_command",
    "write_sidecar",
]
