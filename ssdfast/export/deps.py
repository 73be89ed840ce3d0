"""The packages export needs, imported where they are used, with a one-line message when one is missing.

``onnx`` and ``onnxslim`` are dependencies of ssdfast (every export needs them); ``onnxruntime``
(checking an export, INT8 exports, the onnxruntime runtime) is the ``export`` extra, because on GPU
machines and Jetsons users install ``onnxruntime-gpu`` instead, which provides the same module and must
not be overwritten; ``openvino`` (the OpenVINO runtime) is the ``openvino`` extra; ``tensorrt`` comes
with JetPack / NVIDIA's wheels.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingPackageError

__all__ = ["require"]

#: module -> (what to install, why ssdfast wants it)
PACKAGES = {
    "onnx": ("pip install onnx", "ONNX export"),
    "onnxslim": ("pip install onnxslim", "ONNX export (it simplifies the traced graph)"),
    "onnxruntime": ("pip install onnxruntime (or onnxruntime-gpu), e.g. pip install 'ssdfast[export]'",
                    "checking an export against PyTorch"),
    "tensorrt": ("JetPack's python3-libnvinfer, or pip install tensorrt", "building TensorRT engines"),
    "openvino": ("pip install openvino, e.g. pip install 'ssdfast[openvino]'", "the openvino runtime"),
}


def require(module: str, purpose: str | None = None) -> ModuleType:
    """``import module``, or :class:`~ssdfast.errors.MissingPackageError` naming the package and how to
    install it.

    ``purpose`` overrides the default reason in the message (e.g. ``"--check"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        install, why = PACKAGES.get(module, (f"pip install {module}", "this step"))
        if exc.name in (module, None):
            state = "which is not installed"
        else:  # the package is there but one of its own imports fails
            state = f"which does not import ({' '.join(str(exc).split())})"
        raise MissingPackageError(f"{purpose or why} needs the {module} package, {state}: {install}") from None
