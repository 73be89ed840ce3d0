"""Model files: reading and identifying them, the checkpoint format, loading them into networks.

Every model file ssdfast reads goes through :func:`read_model_file` (:mod:`.read`, the one
``torch.load``): an ssdfast checkpoint, a pytorch-ssd ``.pth``, an ImageNet base net. The
:class:`ModelFile` it returns says what the file is and is handed on, so a file is read once.

- :mod:`.checkpoint`: the self-describing checkpoint (:data:`FORMAT`, :data:`VERSION`),
  :func:`save_checkpoint` (atomic), :func:`unwrap_model`;
- :mod:`.read`: :func:`read_model_file`, :class:`ModelFile`, :func:`load_checkpoint`;
- :mod:`.load`: :func:`load_model_file` (checkpoint or pytorch-ssd file -> :class:`LoadedModel`, what
  every command that takes a model calls), :func:`model_from_checkpoint`, :func:`load_weights`
  (``--pretrained-ssd`` / ``--base-net`` into a network);
- :mod:`.exported`: :func:`exported_format`, what an exported file (``.onnx``, OpenVINO ``.xml``) is
  (the runtimes of :mod:`ssdfast.runtimes` run them);
- :mod:`.pick`: :func:`pick_model_file`, the file of a training folder to use (``--model-dir``);
Their one error is :class:`ssdfast.errors.ModelFileError`, naming the file and the flag that gave it.

The networks and the loading of state dicts into them are :mod:`ssdfast.models`'.
"""
from __future__ import annotations

from .checkpoint import FORMAT, VERSION, check_checkpoint, save_checkpoint, unwrap_model
from .exported import EXPORTED_FORMATS, exported_format
from .load import LoadedModel, load_model_file, load_weights, model_from_checkpoint
from .pick import ModelChoice, pick_model_file, pytorch_ssd_loss
from .read import KINDS, ModelFile, load_checkpoint, read_model_file

__all__ = [
    "FORMAT",
    "VERSION",
    "KINDS",
    "ModelFile",
    "EXPORTED_FORMATS",
    "exported_format",
    "read_model_file",
    "load_checkpoint",
    "check_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "LoadedModel",
    "load_model_file",
    "model_from_checkpoint",
    "load_weights",
    "ModelChoice",
    "pick_model_file",
    "pytorch_ssd_loss",
]
