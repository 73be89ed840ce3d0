"""ssdfast: SSD and SSD-Lite detection for PyTorch, with C++/CUDA kernels for the hot paths."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "ops", "Detector", "PostprocessSettings", "create_model", "list_models", "load_detector"]

# Lazy attributes, so `import ssdfast.ops` stays light (no torchvision models imported).
_LAZY = {
    "ops": ("ssdfast.ops", None),
    "Detector": ("ssdfast.detector", "Detector"),
    "PostprocessSettings": ("ssdfast.ops.settings", "PostprocessSettings"),
    "create_model": ("ssdfast.models", "create_model"),
    "list_models": ("ssdfast.models", "list_models"),
    "load_detector": ("ssdfast.runtimes.load", "load_detector"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ssdfast' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
