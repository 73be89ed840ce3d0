"""Export to ONNX (jetson-inference, ONNX Runtime, TensorRT) and TensorRT engines.

By concern:

- :mod:`~ssdfast.export.formats`: the three formats (``jetson``, ``onnx-nms``, ``trt-nms``), their
  input/output names, opsets, the post-processing settings' metadata keys (the settings themselves are
  :class:`ssdfast.ops.PostprocessSettings`).
- :mod:`~ssdfast.export.onnx`: :class:`ExportModule` (the network as the graphs compute it), tracing,
  simplification (onnxslim) and :func:`export_onnx`, which writes the file plus ``labels.txt``.
- :mod:`~ssdfast.export.nms`: the post-processing graph parts (ONNX ``NonMaxSuppression`` graph,
  TensorRT ``EfficientNMS_TRT`` node).
- :mod:`~ssdfast.export.compare` (with :mod:`~ssdfast.export.runtime`, :mod:`~ssdfast.export.inputs`):
  :func:`check_export` compares the file in onnxruntime with the PyTorch model it came from;
  :mod:`~ssdfast.export.tensorrt_rules`: what TensorRT requires of a graph (its operators, the
  ``EfficientNMS_TRT`` node), checked without TensorRT.
- :mod:`~ssdfast.export.quantize`: :func:`quantize_onnx` writes the INT8 (Q/DQ) file of a target
  (``tensorrt``, ``cpu``) from an FP32 export, calibrated on images (:func:`calibration_batches`).
- :mod:`~ssdfast.export.tensorrt`: :func:`build_engine` / :func:`trtexec_command` make a TensorRT
  engine; its sidecar JSON carries the checkpoint's sha256 and :func:`check_engine` refuses a stale one.
- :mod:`~ssdfast.export.deps`: :func:`require` gives one line naming a missing package.

The command line is ``ssdfast-export`` (:mod:`ssdfast.cli.export`). The names below are imported
when first used, so that importing one light submodule (``formats``, ``deps``) does not load torch,
the models and the checks.
"""
from __future__ import annotations

from .._lazy import lazy_names

#: submodule -> the public names it provides here
_PROVIDERS = {
    "formats": ("FORMATS", "DEFAULT_OPSET"),
    "onnx": ("ExportModule", "ExportResult", "export_onnx"),
    "compare": ("CheckReport", "CheckError", "check_export"),
    "tensorrt_rules": ("validate_efficient_nms",),
    "inputs": ("load_images", "sample_images", "calibration_batches"),
    "quantize": ("INT8_TARGETS", "Int8Result", "int8_path", "quantize_onnx"),
    "deps": ("require",),
    "tensorrt": ("EngineInfo", "build_engine", "check_engine", "file_sha256", "read_sidecar",
                 "sidecar_path", "tensorrt_available", "trtexec_command", "write_sidecar", "has_qdq_nodes"),
}

__all__, __getattr__, __dir__ = lazy_names(__name__, _PROVIDERS)
