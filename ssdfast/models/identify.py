"""Which network a state dict holds, read off its keys and shapes: pytorch-ssd's files
(qfgaohao/pytorch-ssd, dusty-nv/pytorch-ssd as jetson-inference trains them) and ssdfast's own.

A pytorch-ssd ``.pth`` is a bare state dict (``base_net.*``, ``source_layer_add_ons.*``, ``extras.*``,
``classification_headers.*``, ``regression_headers.*``): it says neither the network name, nor the
class names, nor the input size. Its keys and shapes do say the network, though:

==========================  ============================================================================
network                     what gives it away
==========================  ============================================================================
vgg16-ssd / vgg16-ssd512    ``base_net.31`` / ``base_net.33`` (fc6 / fc7 convs); 4 / 5 extras;
                            ``source_layer_add_ons.0.scale`` -> ``conv4_3_norm="l2norm"``,
                            ``source_layer_add_ons.0.running_mean`` -> ``"batchnorm"``
mb1-ssd / mb1-ssd-lite      MobileNetV1's 14 stages (``base_net.13.3``); plain / separable heads
mb2-ssd-lite                MobileNetV2 blocks (``base_net.N.conv.*``, pytorch-ssd's flat keys or
                            torchvision's nested ones); the width multiplier and its channel rounding
                            (``backbone``) from the base net's shapes
mb3-large/small-ssd-lite    pytorch-ssd's MobileNetV3 (``base_net.3.conv1``; 15 / 11 blocks) or, as
                            ssdfast's ``backbone="torchvision"``, torchvision's (``base_net.1.block``)
==========================  ============================================================================

:func:`identify_pytorch_ssd` reads that off a state dict (:func:`network_name`, :func:`network_options`,
:func:`num_classes_of` its parts); :func:`describe_network` names a network and its variant; the hints
(:func:`pretrained_ssd_hint`, :func:`base_net_hint`) say, when a file does not fit a model, which
network the file holds.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..priors import MOBILENET_SSD300_SPEC, VGG_SSD300_SPEC, VGG_SSD512_SPEC
from .mobilenet import make_divisible, mobilenet_v2_features, mobilenet_v3_features
from .ssd import SSD, WIDTH_MULT_NETS, SSDConfig
from .state_dicts import state_dict_of

__all__ = ["identify_pytorch_ssd", "network_name", "network_options", "num_classes_of", "describe_network",
           "pretrained_ssd_hint", "base_net_hint"]

_MB3 = ("mb3-large-ssd-lite", "mb3-small-ssd-lite")

#: Width multipliers tried when a file's width is not given, the simplest first (1.0, 0.5, 0.9 ...
#: then two decimals, then eighths): pytorch-ssd's channels are ``int(c * w)``, so many widths give
#: the same network and the simplest one names it.
_CANDIDATE_WIDTHS = sorted(
    {k / 100 for k in range(1, 401)} | {k / 8 for k in range(1, 33)},
    key=lambda w: (len(f"{w:g}".partition(".")[2]), abs(w - 1.0), w),
)


def _natural(key: str) -> tuple:
    """Sort key putting ``a.2.b`` before ``a.10.b`` (numbers compared as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split("."))


def _indices(sd: Mapping[str, Tensor], prefix: str) -> set[int]:
    """The N of keys ``prefix.N.*``."""
    out = set()
    for k in sd:
        if k.startswith(prefix + "."):
            head = k[len(prefix) + 1:].split(".", 1)[0]
            if head.isdigit():
                out.add(int(head))
    return out


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, Tensor) else None


def network_name(sd: Mapping[str, Tensor]) -> str:
    """The network name a state dict's keys say (ValueError when they fit none)."""
    if not any(k.startswith("base_net.") for k in sd):
        raise ValueError("it has no base_net.* keys (not an SSD state dict of pytorch-ssd's layout)")
    base = _indices(sd, "base_net")
    last = max(base, default=-1)
    fc6 = _shape(sd, "base_net.31.weight")
    if fc6 is not None and fc6[:2] == (1024, 512) and "base_net.33.weight" in sd:
        extras = len(_indices(sd, "extras"))
        if extras in (4, 5):
            return "vgg16-ssd" if extras == 4 else "vgg16-ssd512"
        raise ValueError(f"it has VGG16's base net but {extras} extra layers (vgg16-ssd has 4, vgg16-ssd512 5)")
    if _shape(sd, "base_net.13.3.weight") == (1024, 1024, 1, 1) and last == 13:
        if "classification_headers.0.weight" in sd:
            return "mb1-ssd"
        if "classification_headers.0.0.weight" in sd:
            return "mb1-ssd-lite"
    if last == 18 and ("base_net.1.conv.0.weight" in sd or "base_net.1.conv.0.0.weight" in sd):
        return "mb2-ssd-lite"
    if "base_net.3.conv1.weight" in sd:  # pytorch-ssd's MobileNetV3: conv1, bn1, hswish, blocks, conv2, bn2, hswish
        blocks = {i for i in base if f"base_net.{i}.conv1.weight" in sd}
        if blocks == set(range(3, 18)) and last == 19:
            return "mb3-large-ssd-lite"
        if blocks == set(range(3, 14)) and last == 15:
            return "mb3-small-ssd-lite"
    if "base_net.1.block.0.0.weight" in sd:  # torchvision's MobileNetV3 (backbone="torchvision")
        blocks = {i for i in base if any(k.startswith(f"base_net.{i}.block.") for k in sd)}
        if blocks == set(range(1, 16)) and last == 16:
            return "mb3-large-ssd-lite"
        if blocks == set(range(1, 12)) and last == 12:
            return "mb3-small-ssd-lite"
    raise ValueError("its base_net keys match none of pytorch-ssd's networks")


def _signature(sd: Mapping[str, Tensor], prefix: str = "") -> list[tuple[int, ...]]:
    """The shapes of a base net's conv weights in key order (the same for pytorch-ssd's flat
    MobileNetV2 keys and torchvision's nested ones)."""
    keys = sorted((k for k, v in sd.items() if k.startswith(prefix) and k.endswith("weight") and v.dim() == 4),
                  key=_natural)
    return [tuple(sd[k].shape) for k in keys]


@functools.lru_cache(maxsize=256)
def _base_signature(name: str, backbone: str, width_mult: float) -> tuple[tuple[int, ...], ...] | None:
    """The conv-weight shapes of network ``name``'s base net at ``width_mult`` (built on the meta
    device: no memory); None when that width cannot be built."""
    try:
        with torch.device("meta"):
            if name == "mb2-ssd-lite":
                base: nn.Module = mobilenet_v2_features(width_mult, backbone)
            else:
                base = mobilenet_v3_features("large" if name == _MB3[0] else "small", width_mult, backbone)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    return tuple(_signature(base.state_dict()))


def _outer_channels(name: str, backbone: str, w: float) -> tuple[int, int, int]:
    """``(first conv's outputs, last conv's inputs, last conv's outputs)`` of the base net at width
    ``w``: cheap arithmetic that leaves few widths to build and compare in full."""
    md = make_divisible
    if name == "mb2-ssd-lite":
        if backbone == "pytorch-ssd":
            return int(32 * w), int(320 * w), int(1280 * w) if w > 1.0 else 1280
        return md(32 * w), md(320 * w), md(1280 * max(1.0, w))
    large = name == _MB3[0]
    last_in = md((160 if large else 96) * w)
    last_out = md((960 if large else 576) * w) if backbone == "pytorch-ssd" else 6 * last_in
    return md(16 * w), last_in, last_out


def _backbones(name: str, sd: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The backbones whose layout the file's base net has."""
    if name == "mb2-ssd-lite":
        if "base_net.1.conv.0.weight" in sd or "base_net.1.conv.0.0.weight" in sd:
            return ("pytorch-ssd", "torchvision")  # same modules; the channel rounding tells them apart
        return ()
    if "base_net.3.conv1.weight" in sd:
        return ("pytorch-ssd",)
    return ("torchvision",) if "base_net.1.block.0.0.weight" in sd else ()


def _find_width(name: str, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """``{"width_mult", "backbone"}`` of the simplest width whose base net has the file's shapes."""
    signature = tuple(_signature(sd, "base_net."))
    backbones = _backbones(name, sd)
    if not signature or not backbones:
        return None
    outer = (signature[0][0], signature[-1][1], signature[-1][0])
    for w in _CANDIDATE_WIDTHS:
        for backbone in backbones:
            if _outer_channels(name, backbone, w) == outer and _base_signature(name, backbone, w) == signature:
                return {"width_mult": w, "backbone": backbone}
    return None


def network_options(name: str, sd: Mapping[str, Tensor], width_mult: float | None = None) -> dict[str, Any]:
    """The ``create_model`` options (variant, width multiplier) of the network ``name`` in ``sd``.

    ``width_mult``, when given, is checked against the file (ValueError naming the width that fits).
    """
    if name.startswith("vgg16"):
        if "source_layer_add_ons.0.scale" in sd:
            return {"conv4_3_norm": "l2norm"}
        if "source_layer_add_ons.0.running_mean" in sd or "source_layer_add_ons.0.weight" in sd:
            return {"conv4_3_norm": "batchnorm"}
        raise ValueError(f"it has no source_layer_add_ons.0 (the conv4_3 norm of {name})")
    if name not in WIDTH_MULT_NETS:
        return {}
    if width_mult is not None:
        w = float(width_mult)
        signature = tuple(_signature(sd, "base_net."))
        for backbone in _backbones(name, sd):
            if _base_signature(name, backbone, w) == signature:
                return {"width_mult": w, "backbone": backbone}
        found = _find_width(name, sd)
        fits = f"; it is {describe_network(name, found)}" if found else ""
        raise ValueError(f"its base net is not {name}'s at width multiplier {w}{fits}")
    found = _find_width(name, sd)
    if found is None:
        raise ValueError(f"its base net's channel counts fit {name} at no width multiplier")
    return found


def describe_network(name: str, options: Mapping[str, Any]) -> str:
    """``mb2-ssd-lite (width_mult=0.5)``, ``vgg16-ssd (conv4_3_norm='l2norm')``: a network and the
    options that are not the defaults."""
    shown = [f"width_mult={options['width_mult']:g}"] if options.get("width_mult", 1.0) != 1.0 else []
    if options.get("conv4_3_norm") == "l2norm":
        shown.append("conv4_3_norm='l2norm'")
    if options.get("backbone") == "torchvision" and not (name == "mb2-ssd-lite" and not shown):
        shown.append("backbone='torchvision'")
    return f"{name} ({', '.join(shown)})" if shown else name


def identify_pytorch_ssd(
    weights: Mapping[str, Any], *, width_mult: float | None = None, source: str = "a state dict"
) -> tuple[str, dict[str, Any]]:
    """The network a pytorch-ssd state dict (or an ssdfast one) holds, from its keys and shapes.

    Args:
        weights: the state dict (wrapped or not: :func:`~ssdfast.models.state_dicts.state_dict_of`),
            e.g. a ``.pth`` file's contents.
        width_mult: the width multiplier if known (checked against the file), else read off it.
        source: what the state dict is, for the message (e.g. its file).

    Returns:
        ``(name, options)`` such that ``create_model(name, num_classes, **options)`` builds the
        network: ``options`` holds ``conv4_3_norm`` (vgg16-ssd*), ``width_mult`` and ``backbone``
        (mb2-ssd-lite, mb3-*-ssd-lite) as the file says. Raises ValueError (saying why) when the
        keys fit none of the networks.
    """
    sd = state_dict_of(weights)
    try:
        name = network_name(sd)
        return name, network_options(name, sd, width_mult)
    except ValueError as exc:
        raise ValueError(f"cannot tell which network {source} holds: {exc}") from None


#: Priors per location on the first feature map, the divisor of its classification head's outputs.
_FIRST_LEVEL_ANCHORS = {"vgg16-ssd": VGG_SSD300_SPEC.anchors_per_location[0],
                        "vgg16-ssd512": VGG_SSD512_SPEC.anchors_per_location[0]}


def num_classes_of(name: str, sd: Mapping[str, Tensor]) -> int:
    """The class count of the file's heads: the first classification head's outputs / anchors."""
    anchors = _FIRST_LEVEL_ANCHORS.get(name, MOBILENET_SSD300_SPEC.anchors_per_location[0])
    keys = sorted((k for k, v in sd.items()
                   if re.match(r"classification_headers\.0\.(.+\.)?weight$", k) and v.dim() == 4), key=_natural)
    if not keys:
        raise ValueError(f"the file has no classification head of {name} (is it a {name} model?)")
    channels = int(sd[keys[-1]].shape[0])
    if channels % anchors == 0 and channels // anchors >= 2:
        return channels // anchors
    raise ValueError(f"{keys[-1]} has {channels} outputs, not a multiple of the {anchors} priors per location "
                     f"of {name}")


def _model_options(model: SSD) -> dict[str, Any]:
    cfg = model.config
    return {"width_mult": cfg.width_mult, **cfg.options}


def _differs(found: str, options: Mapping[str, Any], model: SSD) -> bool:
    mine = _model_options(model)
    return found != model.config.name or any(mine.get(k, 1.0 if k == "width_mult" else None) != v
                                              for k, v in options.items())


def _build_with(found: str, options: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"create_model({found!r}, num_classes{', ' + args if args else ''})"


def pretrained_ssd_hint(model: SSD, sd: Mapping[str, Tensor], checkpoint: Mapping[str, Any] | None) -> str:
    """A line for the error when a whole-detector file does not fit ``model``: which network and
    variant the file holds, if that is not the model's ("" when it cannot tell or they agree)."""
    if checkpoint is not None:
        try:
            cfg = SSDConfig.from_dict(checkpoint["config"])
        except (ValueError, TypeError, KeyError):
            return ""
        found, options = cfg.name, {"width_mult": cfg.width_mult, **cfg.options}
        what = "an ssdfast checkpoint of"
    else:
        try:
            found, options = identify_pytorch_ssd(sd)
        except ValueError:
            return ""
        what = "a pytorch-ssd"
    if not _differs(found, options, model):
        return ""
    return (f"(the file is {what} {describe_network(found, options)}; the model is "
            f"{describe_network(model.config.name, _model_options(model))}: build it as {_build_with(found, options)})")


def base_net_hint(model: SSD, base_sd: Mapping[str, Tensor]) -> str:
    """A line for the error when an ImageNet base-net file does not fit ``model``: the backbone and
    width it fits, if another one ("" when it cannot tell or they agree)."""
    name = model.config.name
    if name not in WIDTH_MULT_NETS:
        return ""
    found = _find_width(name, {f"base_net.{k}": v for k, v in base_sd.items()})
    if found is None or not _differs(name, found, model):
        return ""
    return (f"(the file is the base net of {describe_network(name, found)}: "
            f"build the model as {_build_with(name, found)})")
