"""Model files into networks: what every command that takes a model calls (:func:`load_model_file`:
an ssdfast checkpoint or a pytorch-ssd ``.pth``, alike), a checkpoint's network rebuilt
(:func:`model_from_checkpoint`), and a weight file loaded into a network being trained
(:func:`load_weights`: ``--pretrained-ssd``, ``--base-net``).

Each takes a path or a :class:`~ssdfast.model_files.read.ModelFile` already read, so no file is read
twice; their errors are :class:`~ssdfast.errors.ModelFileError` naming the file and the
flag that gave it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ModelFileError, first_line, one_line
from ..io import read_label_file
from ..io.labels import class_count
from ..models import (
    LoadReport,
    canonical_name,
    describe_network,
    identify_pytorch_ssd,
    load_base_net,
    load_pretrained_ssd,
    model_from_config,
    model_from_pytorch_ssd,
)
from .read import ModelFile, read_model_file

__all__ = ["LoadedModel", "load_model_file", "model_from_checkpoint", "load_weights"]

def _read(source: str | os.PathLike | ModelFile, flag: str | None) -> ModelFile:
    return source if isinstance(source, ModelFile) else read_model_file(source, flag=flag)


def model_from_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any] | ModelFile, device: str | torch.device = "cpu", *,
    flag: str | None = None,
) -> tuple[nn.Module, list[str]]:
    """Rebuild the network an ssdfast checkpoint describes and load its weights.

    Args:
        checkpoint: the file, the :class:`ModelFile` read from it, or its contents
            (:func:`~ssdfast.model_files.read.load_checkpoint`).
        device: where the model goes.
        flag: the flag that gave the file, named in errors.

    Returns:
        ``(model, class_names)``: the SSD on ``device`` in eval mode, and the class names
        (``BACKGROUND`` first).
    """
    if isinstance(checkpoint, Mapping):
        ckpt, where = dict(checkpoint), "the checkpoint"
    else:
        model_file = _read(checkpoint, flag)
        ckpt, where, flag = model_file.ssdfast_checkpoint(), model_file.path, model_file.flag
    try:
        model = model_from_config(ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelFileError.about(where, f"cannot rebuild its network: {first_line(exc)}", flag) from None
    class_names = list(ckpt["class_names"])
    if len(class_names) != model.config.num_classes:
        raise ModelFileError.about(where, f"class names of {class_count(len(class_names))} for a model of "
                                   f"{class_count(model.config.num_classes)}", flag)
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
    source: str | os.PathLike | ModelFile,
    *,
    flag: str | None = None,
    net: str | None = None,
    label_file: str | os.PathLike | None = None,
    width_mult: float | None = None,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Read an ssdfast checkpoint or a pytorch-ssd ``.pth`` into a ready network.

    Args:
        source: the model file, or the :class:`ModelFile` read from it.
        flag: the flag that gave the file (e.g. ``--trained-model``), named in errors.
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
        ModelFileError naming the file (and ``flag``) and, where one would fix it, the option;
        :class:`~ssdfast.errors.DataError` for a label file that cannot be read.
    """
    model_file = _read(source, flag)
    p, error = model_file.path, model_file.error
    names = None if label_file is None else read_label_file(label_file)

    ckpt = model_file.checkpoint
    if ckpt is not None:
        if net is not None and canonical_name(net) != ckpt["net"]:
            raise error(f"holds a {ckpt['net']} network, not {net} (leave out --net, or give the right file)")
        model, class_names = model_from_checkpoint(model_file, device=device)
        cfg = model.config
        if width_mult is not None and abs(float(width_mult) - cfg.width_mult) > 1e-9:
            raise error(f"has width multiplier {cfg.width_mult}, not {width_mult}")
        if resolution is not None and int(resolution) != cfg.image_size:
            raise error(f"takes {cfg.image_size}x{cfg.image_size} images, not resolution {resolution}")
        if names is not None:
            if len(names) != len(class_names):
                raise error(f"predicts {class_count(len(class_names))} ({', '.join(class_names[1:])}) but label file "
                            f"{os.fspath(label_file)} has {class_count(len(names))}")  # type: ignore[arg-type]
            class_names = names
        return LoadedModel(model, class_names, ckpt.get("category_ids"), "ssdfast", p, ckpt,
                           None if label_file is None else os.fspath(label_file))

    # A pytorch-ssd file: a bare state dict (possibly wrapped as {"state_dict": ...}).
    sd = model_file.state_dict
    what = "a pytorch-ssd model"
    if net is None:
        try:
            net, options = identify_pytorch_ssd(sd, width_mult=width_mult)
        except ValueError as exc:
            if width_mult is not None:  # the network is known, only not at that width?
                try:
                    found, options = identify_pytorch_ssd(sd)
                except ValueError:
                    pass
                else:
                    raise error(f"a pytorch-ssd {describe_network(found, options)}, not at width multiplier "
                                f"{width_mult}") from None
            raise error("not an ssdfast checkpoint; if it is a pytorch-ssd model, give its network with --net "
                        f"(e.g. --net mb1-ssd) and its class names with --label-file ({first_line(exc)})") from None
        what = f"a pytorch-ssd {describe_network(net, options)} (--net {net})"
    if names is None:
        label_file = os.path.join(os.path.dirname(os.path.abspath(p)), "labels.txt")
        if not os.path.isfile(label_file):
            raise error(f"{what}, which does not hold its class names: give its label file with --label-file "
                        "(no labels.txt beside it)")
        names = read_label_file(label_file)
    try:
        model, _report = model_from_pytorch_ssd(sd, net, len(names), width_mult=width_mult, image_size=resolution,
                                                source=p)
    except ValueError as exc:
        raise error(f"does not load as a pytorch-ssd {canonical_name(net)} with the {class_count(len(names))} of "
                    f"{label_file}: {first_line(exc)}") from None
    return LoadedModel(model.to(device).eval(), names, None, "pytorch-ssd", p, None, os.fspath(label_file))


def load_weights(model: nn.Module, source: str | os.PathLike | ModelFile, *, base_net: bool = False,
                 flag: str | None = None) -> LoadReport:
    """Load a weight file into ``model`` (an SSD being trained): a whole pretrained detector
    (:func:`~ssdfast.models.load_pretrained_ssd`, ``--pretrained-ssd``: heads of another class count
    re-initialised), or with ``base_net`` only its base net (:func:`~ssdfast.models.load_base_net`,
    ``--base-net``: ImageNet weights). A file that does not fit is a ModelFileError of one line
    naming the keys (nothing is copied then)."""
    model_file = _read(source, flag)
    try:
        if base_net:
            return load_base_net(model, model_file.state_dict, source=model_file.path)  # type: ignore[arg-type]
        return load_pretrained_ssd(model, model_file.state_dict, source=model_file.path,  # type: ignore[arg-type]
                                   checkpoint=model_file.checkpoint)
    except ValueError as exc:
        raise model_file.error(one_line(exc)) from None
