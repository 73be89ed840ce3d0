"""Exported model files: an ONNX graph (``.onnx``) or an OpenVINO model (``.xml`` + ``.bin``), named
here once. They are not read with ``torch.load``: the runtimes of :mod:`ssdfast.runtimes` run them,
and :func:`~ssdfast.model_files.read.read_model_file` says what such a file is when it is given
where a PyTorch model file belongs (e.g. ``--pretrained-ssd model.onnx``)."""
from __future__ import annotations

import os

__all__ = ["EXPORTED_FORMATS", "exported_format"]

#: File suffix -> the exported format it holds.
EXPORTED_FORMATS = {".onnx": "onnx", ".xml": "openvino"}


def exported_format(path: str | os.PathLike) -> str | None:
    """``"onnx"`` / ``"openvino"`` for an exported model file (by its suffix), None for others (a
    PyTorch model file: an ssdfast checkpoint, a pytorch-ssd ``.pth``)."""
    return EXPORTED_FORMATS.get(os.path.splitext(os.fspath(path))[1].lower())
