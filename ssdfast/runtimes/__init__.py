"""Runtimes: a :class:`~ssdfast.detector.Detector`'s network in ONNX Runtime, OpenVINO or TensorRT,
and :func:`load_detector`, the loader every command line uses (public as ``ssdfast.load_detector``).

By concern:

- :mod:`.names`: the runtime and preprocessing names, the default runtime (chosen by measurement);
- :mod:`.exported`: :class:`ExportedNetwork`, a ``jetson``-format graph as a detector's network
  whatever runs it (ssdfast's preprocessing and ``ops.ssd_postprocess`` around it);
- :mod:`.onnx_runtime`, :mod:`.openvino_runtime`, :mod:`.tensorrt_runtime`: each runtime's session;
- :mod:`.cache`: a PyTorch model file exported on the fly (ssdfast's export code), cached by content
  and settings; TensorRT engines likewise;
- :mod:`.load`: :func:`load_detector`;
- :mod:`.map_check`: :func:`compare_map`, the PyTorch model's mAP next to its export's
  (``ssdfast-export --check --data``).

The names below are imported when first used, so the command lines' ``--help`` loads no runtime.
"""
from __future__ import annotations

from .._lazy import lazy_names

#: submodule -> the public names it provides here
_PROVIDERS = {
    "names": ("RUNTIMES", "PREPROCESSES", "CPU_DEFAULT", "EXPORTED_DEFAULTS", "MAP_MARGINS", "default_runtime"),
    "exported": ("ExportedNetwork", "GraphInfo", "unit_priors"),
    "onnx_runtime": ("onnxruntime_network",),
    "openvino_runtime": ("openvino_network",),
    "tensorrt_runtime": ("tensorrt_network",),
    "cache": ("default_cache_dir", "cached_export", "cached_engine"),
    "load": ("ModelSource", "load_detector"),
    "map_check": ("MapComparison", "compare_map", "graph_precision"),
}

__all__, __getattr__, __dir__ = lazy_names(__name__, _PROVIDERS)
