"""Reading model files: the one ``torch.load`` of ssdfast.

Every model file (an ssdfast checkpoint, a pytorch-ssd ``.pth``, an ImageNet base net, a training
folder's ``last.pth``) is read by :func:`read_model_file`: ``torch.load(weights_only=True)`` onto the
CPU, its tensors memory-mapped when the file is in torch's zip format (read from disk when used, so a
look at a checkpoint's training state reads none of its weights; legacy-format files are read whole;
``mmap=False`` reads a file whole, for tensors that live on, such as a resumed optimizer's state).
What the file is comes back with it (:class:`ModelFile`), so a caller reads a file once and hands it
on. A file that is missing, unreadable, holds pickled Python objects or no state dict is a
:class:`~ssdfast.errors.ModelFileError` of one line naming the file and the flag that gave it.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import ModelFileError
from ..models.state_dicts import state_dict_of
from .checkpoint import FORMAT, check_checkpoint
from .exported import exported_format

__all__ = ["KINDS", "ModelFile", "read_model_file", "load_checkpoint"]

#: What a model file can be: an ssdfast checkpoint, a whole pytorch-ssd detector (its state dict), or
#: another state dict (an ImageNet base net...).
KINDS = ("ssdfast", "pytorch-ssd", "weights")


@dataclass
class ModelFile:
    """A model file, read (:func:`read_model_file`).

    Attributes:
        path: the file.
        kind: one of :data:`KINDS`.
        state_dict: its weights by name (wrappers such as ``{"state_dict": ...}`` and ``module.``
            prefixes undone); a checkpoint's ``"model"``.
        checkpoint: the whole ssdfast checkpoint, checked (None for other files).
        flag: the command-line flag that gave the file (None if none), named in its errors.
    """

    path: str
    kind: str
    state_dict: dict[str, Tensor]
    checkpoint: dict[str, Any] | None = None
    flag: str | None = None

    def error(self, problem: str) -> ModelFileError:
        """A :class:`ModelFileError` about this file: ``--resume last.pth: <problem>``."""
        return ModelFileError.about(self.path, problem, self.flag)

    def ssdfast_checkpoint(self) -> dict[str, Any]:
        """The ssdfast checkpoint, or a ModelFileError saying the file is none (e.g. a pytorch-ssd
        ``.pth``: :func:`~ssdfast.model_files.load.load_model_file` reads those)."""
        if self.checkpoint is None:
            raise self.error(f"not an ssdfast checkpoint (no format tag {FORMAT!r}); a pytorch-ssd model loads "
                             "with its --net and --label-file (ssdfast.model_files.load_model_file)")
        return self.checkpoint

    @property
    def train_state(self) -> dict | None:
        """The checkpoint's training state, or None (weights only)."""
        return (self.checkpoint or {}).get("train_state") or None

    @property
    def continues_run(self) -> bool:
        """True when the file has the training state to continue its run exactly."""
        return self.train_state is not None

    @property
    def saved_settings(self) -> dict[str, Any]:
        """The run's training settings (``train_state["args"]``), ``{}`` without training state."""
        return dict((self.train_state or {}).get("args") or {})

    @property
    def run_id(self) -> str | None:
        """The run identity of the checkpoint (None for weights-only files and older checkpoints)."""
        value = (self.train_state or {}).get("run_id")
        return str(value) if value else None


def read_model_file(path: str | os.PathLike, *, flag: str | None = None, mmap: bool = True) -> ModelFile:
    """Read and identify a model file (see the module docstring); errors name ``flag`` and the file."""
    p = os.fspath(path)
    contents = _load(p, flag, mmap)
    if isinstance(contents, Mapping) and contents.get("format") == FORMAT:
        checkpoint = check_checkpoint(contents, p, flag)
        return ModelFile(p, "ssdfast", dict(checkpoint["model"]), checkpoint, flag)
    try:
        state_dict = state_dict_of(contents)
    except ValueError:
        raise ModelFileError.about(p, "neither an ssdfast checkpoint nor a state dict (names mapped to tensors)",
                                   flag) from None
    detector = any(k.startswith("base_net.") for k in state_dict) and any(
        k.startswith("classification_headers.") for k in state_dict)
    return ModelFile(p, "pytorch-ssd" if detector else "weights", state_dict, None, flag)


def load_checkpoint(path: str | os.PathLike, *, flag: str | None = None) -> dict[str, Any]:
    """The ssdfast checkpoint in ``path``, checked (:func:`~ssdfast.model_files.checkpoint.check_checkpoint`).

    Raises:
        ModelFileError naming the file when it is missing, unreadable, or not an ssdfast checkpoint
        (e.g. a pytorch-ssd ``.pth``: :func:`~ssdfast.model_files.load.load_model_file` reads those).
    """
    return read_model_file(path, flag=flag).ssdfast_checkpoint()


def _load(path: str, flag: str | None, mmap: bool) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU (memory-mapped for zip-format files), or a
    ModelFileError of one line (torch's own texts run over many lines and suggest ``weights_only=False``,
    which no one should do with a file they cannot read)."""
    if not os.path.isfile(path):
        raise ModelFileError.about(path, "no such file", flag)
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as exc:
        exported = exported_format(path)
        if exported is not None:
            raise ModelFileError.about(path, f"an exported {exported} model, not a PyTorch model file: give the "
                                       "checkpoint or .pth it was exported from", flag) from None
        raise ModelFileError.about(path, _load_failure(exc, is_zip), flag) from None


def _load_failure(exc: BaseException, is_zip: bool) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words (a torch file that its safe
    unpickler refuses holds Python objects; anything else is not a torch file, or a damaged one)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found or (is_zip and "weights only" in text.lower()):
        what = f" ({found.group(1)})" if found else ""
        return (f"not a plain weights file: it stores Python objects{what}, not just tensors (a whole pickled "
                "model?); model files are read as tensors and plain values only: save the model's state_dict() "
                "and load that")
    return "not a torch weights file (corrupt, truncated or another format)"
