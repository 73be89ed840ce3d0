"""Export to ONNX (jetson-inference, ONNX Runtime, TensorRT) and TensorRT engines.

- :func:`export_onnx` writes one of three formats (``jetson``, ``onnx-nms``, ``trt-nms``; see
  :mod:`ssdfast.export.onnx`) plus ``labels.txt``.
- :func:`check_export` compares the file in onnxruntime with the PyTorch model it came from.
- :func:`build_engine` / :func:`trtexec_command` make a TensorRT engine; its sidecar JSON carries the
  checkpoint's sha256 and :func:`check_engine` refuses a stale engine.

The command line is ``ssdfast-export`` (:mod:`ssdfast.cli.export`).
"""
from .check import CheckError, CheckReport, check_export, load_images, sample_images, validate_efficient_nms
from .onnx import (
    DEFAULT_OPSET,
    FORMATS,
    ExportModule,
    ExportResult,
    PostprocessSettings,
    export_onnx,
)
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
