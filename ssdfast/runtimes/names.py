"""The names the command lines and :func:`ssdfast.load_detector` take, and the default runtime (no
heavy imports: ``--help`` and usage errors load no runtime)."""
from __future__ import annotations

import importlib.util

__all__ = ["RUNTIMES", "PREPROCESSES", "CPU_DEFAULT", "EXPORTED_DEFAULTS", "MAP_MARGINS", "PACKAGES", "default_runtime"]

#: The runtimes a detector's network can run in.
RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")
#: ``ssdfast``: the model's own input path (its resize, mean/std); ``detectnet``: jetson-inference
#: detectNet's (nearest-neighbour resize to the network size, the normalization the graph carries).
PREPROCESSES = ("ssdfast", "detectnet")
#: The runtime of a PyTorch model file on a CPU, chosen by measurement (README, "Runtimes"): ONNX Runtime
#: was the fastest, or within 10% of the fastest, end to end at batch 1 and 32 for mb1-ssd, mb2-ssd-lite,
#: mb3-large-ssd-lite and vgg16-ssd (1.07-1.42x the torch runtime); OpenVINO led it by 1-8% at batch 1 for
#: mb1-ssd, mb2-ssd-lite and vgg16-ssd and trailed it for mb3-large-ssd-lite by 14-34%. Without onnxruntime
#: installed: torch.
CPU_DEFAULT = "onnxruntime"
#: The runtime an exported file runs in when none is named, by its format.
EXPORTED_DEFAULTS = {"onnx": "onnxruntime", "openvino": "openvino"}

#: Largest difference, in mAP points (1 point = 0.01), between the PyTorch model and its export with
#: ssdfast's preprocessing (``ssdfast-export --check --data``), by the export's precision: FP32 differs by
#: float rounding only; INT8 quantization may cost a little.
MAP_MARGINS = {"fp32": 0.5, "int8": 1.0}

#: runtime -> the package it needs
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


def default_runtime(exported: str | None, device_type: str = "cpu") -> str:
    """The runtime used when none is named: an exported file's (:data:`EXPORTED_DEFAULTS`, by
    ``exported`` format); for a PyTorch model file, torch on a GPU and :data:`CPU_DEFAULT` on a CPU
    (torch when that runtime's package is not installed)."""
    if exported is not None:
        return EXPORTED_DEFAULTS[exported]
    if device_type != "cpu" or CPU_DEFAULT == "torch":
        return "torch"
    module = PACKAGES[CPU_DEFAULT]
    return CPU_DEFAULT if importlib.util.find_spec(module) is not None else "torch"
