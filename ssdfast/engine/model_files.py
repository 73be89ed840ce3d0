"""The weight files a training run reads (``--resume``, ``--pretrained-ssd``, ``--base-net``), with
errors of one line of our own naming the flag and the file (never torch's multi-line texts).

A ``--resume`` file is one of:

- an ssdfast checkpoint with training state (``last.pth``): the run continues exactly where it was;
- a weights-only file: a pytorch-ssd ``.pth`` (a bare state dict, as its ``train_ssd.py`` writes) or
  an ssdfast checkpoint without training state. As pytorch-ssd's ``--resume`` does, all its weights
  are loaded (the heads must fit the classes) and training starts at epoch 0.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .errors import ConfigError

__all__ = ["read_weights_file", "ResumeFile", "read_resume_file"]


def read_weights_file(path: str | os.PathLike, flag: str, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or :class:`ConfigError` of one line naming
    ``flag`` and the file. ``mmap=True`` maps the tensors instead of reading them (cheap; files in
    torch's legacy format are read whole)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ConfigError(f"{flag} {p}: no such file")
    is_zip = zipfile.is_zipfile(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as exc:  # torch's messages run over many lines: say it in one
        if is_zip and "weights only" in str(exc).lower():
            raise ConfigError(
                f"{flag} {p}: not a plain weights file: it holds pickled Python objects, and model files are "
                "only read as tensors and plain values (torch.load weights_only=True); save the model's "
                "state_dict() instead") from None
        raise ConfigError(f"{flag} {p}: not a torch weights file (corrupt, truncated or another format)") from None


@dataclass
class ResumeFile:
    """A ``--resume`` file, read (see the module docstring).

    Attributes:
        path: the file.
        checkpoint: the ssdfast checkpoint (None for a pytorch-ssd file).
        state_dict: a pytorch-ssd file's contents (None for an ssdfast checkpoint).
    """

    path: str
    checkpoint: dict | None = None
    state_dict: Any = None

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
        """The run's settings (``train_state["args"]``), ``{}`` without training state."""
        return dict((self.train_state or {}).get("args") or {})

    @property
    def run_id(self) -> str | None:
        """The run identity of the checkpoint (None for weights-only files and older checkpoints)."""
        value = (self.train_state or {}).get("run_id")
        return str(value) if value else None

    @property
    def kind(self) -> str:
        """``"ssdfast"`` or ``"pytorch-ssd"``."""
        return "ssdfast" if self.checkpoint is not None else "pytorch-ssd"


def read_resume_file(path: str | os.PathLike, *, mmap: bool = True) -> ResumeFile:
    """Read and classify a ``--resume`` file. :class:`ConfigError` naming ``--resume`` when it is missing,
    unreadable, a damaged ssdfast checkpoint, or not a state dict at all."""
    from ..checkpoint import FORMAT, VERSION

    p = os.fspath(path)
    obj = read_weights_file(p, "--resume", mmap=mmap)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ConfigError(f"--resume {p}: checkpoint version {version!r}; this ssdfast reads versions <= {VERSION}")
        for key, kind in (("net", str), ("config", dict), ("class_names", list), ("model", dict)):
            if not isinstance(obj.get(key), kind):
                raise ConfigError(f"--resume {p}: a damaged checkpoint ({key!r} should be a {kind.__name__})")
        return ResumeFile(p, checkpoint=dict(obj))
    if isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in _tensors_of(obj)):
        return ResumeFile(p, state_dict=obj)
    raise ConfigError(f"--resume {p}: neither an ssdfast checkpoint nor a pytorch-ssd model (no state dict in it)")


def _tensors_of(obj: Mapping) -> list[Any]:
    """The values of a state dict, looking inside ``{"state_dict": ...}``-style wrappers."""
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj.get(key), Mapping):
            return list(obj[key].values())
    return list(obj.values())
