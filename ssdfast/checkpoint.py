"""Self-describing checkpoints: one file holds the network config, class names, weights and
(optionally) everything needed to resume training.

Format (a plain dict, readable with ``torch.load(path, weights_only=True)``)::

    {"format": "ssdfast-checkpoint", "version": 1,
     "net": "mb2-ssd-lite",                      # network name
     "config": {...},                            # SSDConfig.to_dict(): image_size, mean, std, prior_spec...
     "class_names": ["BACKGROUND", ...],
     "category_ids": [int, ...] | None,          # COCO: label -> category id
     "model": state_dict,                        # CPU tensors
     "train_state": None | {"optimizer", "scheduler", "scaler", "epoch", "step", "rng", "metrics", "args"}}

Writes are atomic: a temporary file in the same directory, flushed and fsync'ed, then
``os.replace``'d over the target, so a crash never leaves a partial checkpoint behind.

:func:`load_model_file` is what every command that takes a model calls: it reads an ssdfast
checkpoint or a pytorch-ssd ``.pth`` (a bare state dict, given its network name and class names) alike.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .io.labels import class_count

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "unwrap_model",
    "LoadedModel",
    "load_model_file",
]

FORMAT = "ssdfast-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not an ssdfast checkpoint (message names the file)."""


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
    raise CheckpointError(
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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).
    ``mmap=True`` maps its tensors instead of reading them (cheap, for a look at its other entries).

    Raises:
        CheckpointError (a ValueError) naming the file when it is missing, unreadable, or not an
        ssdfast checkpoint (e.g. a pytorch-ssd ``.pth``: load that with ``--pretrained-ssd``).
    """
    p = os.fspath(path)
    return _checked(_read_file(p, "checkpoint", map_location, mmap=mmap), p)


def _read_file(p: str, what: str, map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """``torch.load(p, weights_only=True)``, or a CheckpointError naming the ``what`` (checkpoint,
    model file) ``p`` when it is missing or torch cannot read it."""
    if not os.path.isfile(p):
        raise CheckpointError(f"{what} {p} does not exist")
    try:
        # mmap only for torch's zip format (a legacy-format file is read whole)
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap and zipfile.is_zipfile(p))
    except Exception as exc:
        raise CheckpointError(f"cannot read {what} {p}: {_load_failure(exc)}") from exc


def _checked(ckpt: Any, p: str) -> dict[str, Any]:
    """``ckpt`` (read from ``p``) checked to be an ssdfast checkpoint this version reads."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{p} is not an ssdfast checkpoint (no format tag {FORMAT!r}); "
            "a pytorch-ssd model loads with its --net and --label-file (ssdfast.checkpoint.load_model_file)"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{p} has checkpoint version {version!r}; this ssdfast reads versions <= {VERSION}")
    for key, kind in (("net", str), ("config", dict), ("class_names", list), ("model", dict)):
        if not isinstance(ckpt.get(key), kind):
            got = type(ckpt.get(key)).__name__
            raise CheckpointError(f"{p} is damaged: {key!r} should be a {kind.__name__}, got {got}")
    ckpt.setdefault("category_ids", None)
    ckpt.setdefault("train_state", None)
    return ckpt


def model_from_checkpoint(
    ckpt_or_path: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu", *,
    where: str = "checkpoint",
) -> tuple[nn.Module, list[str]]:
    """Rebuild the network a checkpoint describes and load its weights.

    Returns:
        ``(model, class_names)``: the SSD on ``device`` in eval mode, and the class names
        (``BACKGROUND`` first).
    """
    from .models import model_from_config  # models import torchvision: keep this module light

    if isinstance(ckpt_or_path, Mapping):
        ckpt = dict(ckpt_or_path)
    else:
        ckpt, where = load_checkpoint(ckpt_or_path), os.fspath(ckpt_or_path)
    try:
        model = model_from_config(ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot rebuild the network of {where}: {exc}") from exc
    class_names = list(ckpt["class_names"])
    if len(class_names) != model.config.num_classes:
        raise CheckpointError(f"{where} has class names of {class_count(len(class_names))} for a model of "
                              f"{class_count(model.config.num_classes)}")
    return model.to(device).eval(), class_names


@dataclass
class LoadedModel:
    """A model file read by :func:`load_model_file`.

    Attributes:
        model: the SSD, on the device asked for, in eval mode.
        class_names: one per class, ``BACKGROUND`` first.
        category_ids: COCO category id of each label (ssdfast checkpoints of COCO runs), else None.
        kind: ``"ssdfast"`` (a checkpoint) or ``"pytorch-ssd"`` (a bare state dict).
        path: the file.
        checkpoint: the whole ssdfast checkpoint (training state included); None for pytorch-ssd files.
        label_file: the label file the class names came from (None when the checkpoint's own were used).
    """

    model: nn.Module
    class_names: list[str]
    category_ids: list[int] | None
    kind: str
    path: str
    checkpoint: dict[str, Any] | None = None
    label_file: str | None = None

    def describe(self) -> str:
        """One line for the command lines: ``ssdfast model best.pth: mb1-ssd 300x300, 14 classes +
        background (class names from the checkpoint)``."""
        config = self.model.config
        source = f"labels from {self.label_file}" if self.label_file else "class names from the checkpoint"
        return (f"{self.kind} model {self.path}: {config.name} {config.image_size}x{config.image_size}, "
                f"{class_count(len(self.class_names))} ({source})")


def load_model_file(
    path: str | os.PathLike,
    *,
    net: str | None = None,
    label_file: str | os.PathLike | None = None,
    width_mult: float | None = None,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Read an ssdfast checkpoint or a pytorch-ssd ``.pth`` into a ready network.

    Args:
        path: the model file.
        net: the network name. For a pytorch-ssd file, default: the network its keys and shapes
            say (:func:`ssdfast.models.identify_pytorch_ssd`), and its variant is always the file's;
            for an ssdfast checkpoint it is checked against the file's.
        label_file: class names (any of the three label-file formats). A pytorch-ssd file takes
            them from here, else from ``labels.txt`` beside it; for a checkpoint they replace its
            names (same count required).
        width_mult: MobileNet width multiplier (pytorch-ssd's ``--mb2-width-mult``); checked
            against a checkpoint's.
        resolution: input size (pytorch-ssd's ``--resolution``); checked against a checkpoint's.
        device: where the model goes.

    Raises:
        CheckpointError (a ValueError) naming the file and, where one would fix it, the option.
    """
    from .io import FileError, read_label_file
    from .io.errors import first_line
    from .models import canonical_name, identify_pytorch_ssd, model_from_pytorch_ssd
    from .models.pytorch_ssd import describe_network

    p = os.fspath(path)
    obj = _read_file(p, "model file")
    names = None
    if label_file is not None:
        try:
            names = read_label_file(label_file)
        except FileError as exc:
            raise CheckpointError(f"label file {exc}") from None

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        ckpt = _checked(obj, p)
        if net is not None and canonical_name(net) != ckpt["net"]:
            raise CheckpointError(f"{p} holds a {ckpt['net']} network, not {net} (leave out --net, or give the right file)")
        model, class_names = model_from_checkpoint(ckpt, device=device, where=p)
        cfg = model.config
        if width_mult is not None and abs(float(width_mult) - cfg.width_mult) > 1e-9:
            raise CheckpointError(f"{p} has width multiplier {cfg.width_mult}, not {width_mult}")
        if resolution is not None and int(resolution) != cfg.image_size:
            raise CheckpointError(f"{p} takes {cfg.image_size}x{cfg.image_size} images, not resolution {resolution}")
        if names is not None:
            if len(names) != len(class_names):
                raise CheckpointError(
                    f"label file {os.fspath(label_file)} has {class_count(len(names))} but "
                    f"{p} predicts {class_count(len(class_names))}: {', '.join(class_names[1:])}"
                )
            class_names = names
        return LoadedModel(model, class_names, ckpt.get("category_ids"), "ssdfast", p, ckpt,
                           None if label_file is None else os.fspath(label_file))

    # A pytorch-ssd file: a bare state dict (possibly wrapped as {"state_dict": ...}).
    what = "a pytorch-ssd model"
    if net is None:
        try:
            net, options = identify_pytorch_ssd(obj, width_mult=width_mult)
        except ValueError as exc:
            if width_mult is not None:  # the network is known, only not at that width?
                try:
                    found, options = identify_pytorch_ssd(obj)
                except ValueError:
                    pass
                else:
                    raise CheckpointError(f"{p} is a pytorch-ssd {describe_network(found, options)}, "
                                          f"not at width multiplier {width_mult}") from None
            raise CheckpointError(
                f"{p} is not an ssdfast checkpoint; if it is a pytorch-ssd model, give its network "
                f"with --net (e.g. --net mb1-ssd) and its class names with --label-file ({first_line(exc)})"
            ) from None
        what = f"a pytorch-ssd {describe_network(net, options)} (--net {net})"
    if names is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(p)), "labels.txt")
        if not os.path.isfile(beside):
            raise CheckpointError(
                f"{p} is {what}, which does not hold its class names: give its label file "
                "with --label-file (no labels.txt beside it)"
            )
        label_file = beside
        try:
            names = read_label_file(beside)
        except FileError as exc:
            raise CheckpointError(f"label file {exc}") from None
    try:
        model, _report = model_from_pytorch_ssd(obj, net, len(names), width_mult=width_mult, image_size=resolution)
    except ValueError as exc:
        raise CheckpointError(f"{p} does not load as a pytorch-ssd {canonical_name(net)} with the "
                              f"{class_count(len(names))} of {label_file}: {first_line(exc)}") from None
    return LoadedModel(model.to(device).eval(), names, None, "pytorch-ssd", p, None, os.fspath(label_file))


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words (torch's own text is long and
    suggests ``weights_only=False``, which a user should not do with a file they cannot read)."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return (f"it stores Python objects ({match.group(1)}), not just tensors (a whole pickled model?): "
                "save its state_dict() and load that")
    return "not a PyTorch file, or a damaged one"


