"""Networks saved by pytorch-ssd (qfgaohao/pytorch-ssd, dusty-nv/pytorch-ssd as jetson-inference
trains them): build the network a file holds and load it, exactly.

A pytorch-ssd ``.pth`` is a bare state dict (``base_net.*``, ``source_layer_add_ons.*``, ``extras.*``,
``classification_headers.*``, ``regression_headers.*``): it says neither the network name, nor the
class names, nor the input size. :func:`model_from_pytorch_ssd` takes the name (``--net``), reads the
class count off the heads, builds the network and loads every tensor; the model is marked to be fed
as pytorch-ssd fed it (``config.antialias = False``: OpenCV-style bilinear resize).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from torch import Tensor

from .ssd import SSD
from .weights import LoadReport, _read, load_pretrained_ssd

__all__ = ["model_from_pytorch_ssd", "read_state_dict"]


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of a pytorch-ssd file (``module.`` prefixes dropped); ValueError naming the file."""
    sd, _ = _read(source, "pytorch-ssd model")
    return sd


def _num_classes(net: str, sd: Mapping[str, Tensor], width_mult: float, image_size: int | None) -> int:
    """The class count of the file's heads: the first classification head's outputs / anchors."""
    from . import create_model

    probe = create_model(net, 2, width_mult=width_mult, image_size=image_size)
    anchors = probe.config.prior_spec.anchors_per_location[0]
    for key, t in probe.state_dict().items():
        if key.startswith("classification_headers.0.") and t.dim() == 4 and t.shape[0] == 2 * anchors:
            if key not in sd:
                break
            channels = int(sd[key].shape[0])
            if channels % anchors == 0 and channels // anchors >= 2:
                return channels // anchors
            raise ValueError(f"{key} has {channels} outputs, not a multiple of the {anchors} priors per location of {net}")
    raise ValueError(f"the file has no classification head of {net} (is it a {net} model?)")


def model_from_pytorch_ssd(
    source: str | os.PathLike | Mapping[str, Any],
    net: str,
    num_classes: int | None = None,
    *,
    width_mult: float | None = None,
    image_size: int | None = None,
) -> tuple[SSD, LoadReport]:
    """Build network ``net`` and load a pytorch-ssd file into it, every tensor (nothing re-initialised).

    Args:
        source: the ``.pth`` file (or its state dict).
        net: the network name it was trained as (pytorch-ssd's ``--net``).
        num_classes: classes including the background; default: read off the file's heads.
        width_mult: MobileNet width multiplier (pytorch-ssd's ``--mb2-width-mult``).
        image_size: input size (pytorch-ssd's ``--resolution``); default: the network's.

    Returns:
        ``(model, report)``: the network in train mode on the CPU, with ``config.antialias`` False.
        Raises ValueError (naming the file, listing keys) when the file does not fit ``net``.
    """
    from . import create_model

    sd = read_state_dict(source)
    width = 1.0 if width_mult is None else float(width_mult)
    if num_classes is None:
        num_classes = _num_classes(net, sd, width, image_size)
    model = create_model(net, num_classes, width_mult=width, image_size=image_size)
    report = load_pretrained_ssd(model, sd)
    report.source = os.fspath(source) if not isinstance(source, Mapping) else report.source
    if report.reinitialized:
        raise ValueError(
            f"{report.source}: its prediction heads do not fit {num_classes} classes "
            f"(background included): {', '.join(report.reinitialized[:4])}"
        )
    model.config.antialias = False
    return model, report
