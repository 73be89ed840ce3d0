"""Networks saved by pytorch-ssd (qfgaohao/pytorch-ssd, dusty-nv/pytorch-ssd as jetson-inference
trains them), built and loaded exactly.

A pytorch-ssd ``.pth`` is a bare state dict: it says neither the network name, nor the class names,
nor the input size; its keys and shapes say the network (:mod:`ssdfast.models.identify`).
:func:`model_from_pytorch_ssd` builds the network (the one named, or the one identified), reads the
class count off the heads and loads every tensor. The model is marked to be fed as pytorch-ssd fed it
(``config.antialias = False``: OpenCV-style bilinear resize). Reading the file is
:mod:`ssdfast.model_files`'s.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..io.labels import class_count
from .identify import identify_pytorch_ssd, network_name, network_options, num_classes_of
from .registry import canonical_name, create_model, list_models
from .ssd import SSD
from .state_dicts import state_dict_of
from .weights import LoadReport, load_pretrained_ssd

__all__ = ["model_from_pytorch_ssd"]


def model_from_pytorch_ssd(
    weights: Mapping[str, Any],
    net: str | None = None,
    num_classes: int | None = None,
    *,
    width_mult: float | None = None,
    image_size: int | None = None,
    source: str = "a state dict",
) -> tuple[SSD, LoadReport]:
    """Build the network of a pytorch-ssd state dict and load it, every tensor (nothing re-initialised).

    Args:
        weights: the state dict (a ``.pth`` file's contents; wrappers such as ``{"state_dict": ...}``
            and ``module.`` prefixes are fine).
        net: the network name it was trained as (pytorch-ssd's ``--net``); default: identified from
            the file (:func:`identify_pytorch_ssd`). Its variant (vgg16-ssd's conv4_3 norm, the
            MobileNets' backbone) is always the file's.
        num_classes: classes including the background; default: read off the file's heads.
        width_mult: MobileNet width multiplier (pytorch-ssd's ``--mb2-width-mult``); default: read
            off the file's shapes. Given, it must fit them.
        image_size: input size (pytorch-ssd's ``--resolution``); default: the network's.
        source: what the state dict is, for messages and the report (e.g. its file).

    Returns:
        ``(model, report)``: the network in train mode on the CPU, with ``config.antialias`` False.
        Raises ValueError (naming ``source``, listing keys) when the state dict does not fit ``net``.
    """
    sd = state_dict_of(weights)
    if net is None:
        name, options = identify_pytorch_ssd(sd, width_mult=width_mult, source=source)
    else:
        name = canonical_name(net)
        if name not in list_models():
            raise ValueError(f"unknown network {net!r}; choose one of {', '.join(list_models())}")
        try:
            found = network_name(sd)
        except ValueError:
            found = None  # let the loader list the keys that do not fit
        if found is not None and found != name:
            raise ValueError(f"{source} holds a {found} network, not {name}")
        try:
            options = network_options(name, sd, width_mult) if found is not None else {}
        except ValueError as exc:
            raise ValueError(f"{source} does not fit {name}: {exc}") from None
    if width_mult is not None:
        options = {"width_mult": float(width_mult), **options}
    if num_classes is None:
        num_classes = num_classes_of(name, sd)
    model = create_model(name, num_classes, image_size=image_size, **options)
    report = load_pretrained_ssd(model, sd, source=source)
    if report.reinitialized:
        raise ValueError(
            f"{report.source}: its prediction heads do not fit {class_count(num_classes)}: "
            f"{', '.join(report.reinitialized[:4])}"
        )
    model.config.antialias = False
    return model, report
