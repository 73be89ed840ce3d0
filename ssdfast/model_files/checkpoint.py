"""The self-describing checkpoint: its format, and writing it. One file holds the network config,
class names, weights and (optionally) everything needed to resume training.

Format (a plain dict, readable with ``torch.load(path, weights_only=True)``)::

    {"format": "ssdfast-checkpoint", "version": 1,
     "net": "mb2-ssd-lite",                      # network name
     "config": {...},                            # SSDConfig.to_dict(): image_size, mean, std, prior_spec...
     "class_names": ["BACKGROUND", ...],
     "category_ids": [int, ...] | None,          # COCO: label -> category id
     "model": state_dict,                        # CPU tensors
     "train_state": None | {"optimizer", "scheduler", "scaler", "epoch", "step", "rng", "metrics", "args",
                            "run_id"}}

Writes are atomic: a temporary file in the same directory, flushed and fsync'ed, then
``os.replace``'d over the target, so a crash never leaves a partial checkpoint behind. Reading is
:mod:`ssdfast.model_files.read`'s (:func:`~ssdfast.model_files.read.load_checkpoint`), which checks
a file with :func:`check_checkpoint`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tempfile
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ModelFileError
from ..io.labels import class_count

__all__ = ["FORMAT", "VERSION", "check_checkpoint", "save_checkpoint", "unwrap_model"]

FORMAT = "ssdfast-checkpoint"
VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _plain(value: Any, where: str) -> Any:
    """``value`` with only types ``torch.load(weights_only=True)`` accepts (tensors, numbers, str,
    bool, None, lists, tuples, dicts); Namespaces, paths, dataclasses and numpy values converted."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:  # before the plain types: np.float64 subclasses float but does not unpickle safely
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
        if isinstance(value, np.generic):
            return value.item()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (Tensor, torch.dtype, torch.device)):
        return value
    for kind in (bool, int, float, str):  # subclasses (enums...) stored as the plain type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if type(value) is tuple else items
    raise TypeError(
        f"cannot store {where} of type {type(value).__name__} in a checkpoint "
        "(use tensors, numbers, strings, lists or dicts so it loads with weights_only=True)"
    )


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    class_names: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` (an SSD from ``create_model``, possibly wrapped by DDP / torch.compile) to ``path``.

    Args:
        path: destination file; its directory is created if needed. Written atomically.
        model: the network; its ``config`` is stored and its weights copied to CPU.
        class_names: one per class, ``BACKGROUND`` first; must match ``config.num_classes``.
        category_ids: COCO category id of each label (optional).
        train_state: for resuming: ``{"optimizer", "scheduler", "scaler", "epoch", "step", "rng",
            "metrics", "args"}`` (state dicts, numbers, tensors; an argparse Namespace and paths are
            converted to plain types).
    """
    net = unwrap_model(model)
    config = getattr(net, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"model should be an ssdfast SSD (with a .config), got {type(net).__name__}")
    class_names = [str(c) for c in class_names]
    if len(class_names) != config.num_classes:
        raise ValueError(
            f"class names of {class_count(len(class_names))} for a model of {class_count(config.num_classes)}"
        )
    if category_ids is not None:
        category_ids = [int(c) for c in category_ids]
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "net": config.name,
        "config": config.to_dict(),
        "class_names": class_names,
        "category_ids": category_ids,
        "model": state,
        "train_state": None if train_state is None else _plain(dict(train_state), "train_state"),
    }
    _atomic_save(checkpoint, os.fspath(path))


def _atomic_save(obj: Any, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere, e.g. Windows
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def check_checkpoint(contents: Mapping[str, Any], path: str | os.PathLike, flag: str | None = None) -> dict[str, Any]:
    """``contents`` (read from ``path``, tagged :data:`FORMAT`) checked to be a checkpoint this version
    reads, ``category_ids`` / ``train_state`` filled in when absent; a
    :class:`~ssdfast.errors.ModelFileError` naming the file (and ``flag``) otherwise."""
    version = contents.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelFileError.about(path, f"checkpoint version {version!r}; this ssdfast reads versions <= {VERSION}",
                                   flag)
    for key, kind in (("net", str), ("config", dict), ("class_names", list), ("model", dict)):
        if not isinstance(contents.get(key), kind):
            got = type(contents.get(key)).__name__
            raise ModelFileError.about(path, f"a damaged checkpoint: {key!r} should be a {kind.__name__}, got {got}",
                                       flag)
    checked = dict(contents)
    checked.setdefault("category_ids", None)
    checked.setdefault("train_state", None)
    return checked
