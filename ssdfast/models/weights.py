"""Loading weights into SSD networks: ImageNet backbones and whole pretrained detectors.

Both loaders take state dicts (a weight file's contents, read by :mod:`ssdfast.model_files`; wrappers
unwrapped by :func:`~ssdfast.models.state_dicts.state_dict_of`), check every key and shape before
copying anything, and raise ValueError listing the mismatched keys when the weights do not fit the
network.

Base nets (:func:`load_base_net`), in either layout:

==================  =====================================  ==========================================
network             torchvision ImageNet state dict         pytorch-ssd file
==================  =====================================  ==========================================
vgg16-ssd(512)      ``vgg16`` (``features.N.*``; fc6/fc7    ``vgg16_reducedfc.pth`` (``N.*``, 31/33 =
                    sub-sampled from ``classifier.0/3``)    fc6/fc7 convs)
mb1-ssd(-lite)      --                                      ``mobilenet_v1_with_relu_69_5.pth``
mb2-ssd-lite        ``mobilenet_v2`` (width 1)              ``mb2-imagenet-71_8.pth`` (re-keyed)
mb3-*-ssd-lite      ``mobilenet_v3_large`` / ``_small``     ``MobileNetV3_Large().features`` (``N.*``)
                    (``backbone="torchvision"``)            or its whole state dict (``features.N.*``, or
                                                            ``conv1`` / ``bneck.i`` / ``conv2``, re-keyed)
                                                            (``backbone="pytorch-ssd"``)
==================  =====================================  ==========================================

Whole detectors (:func:`load_pretrained_ssd`): a pytorch-ssd SSD checkpoint (``base_net.*``,
``extras.*``, ``source_layer_add_ons.*``, ``classification_headers.*``, ``regression_headers.*``) or an
ssdfast checkpoint, with any class count: heads whose shapes differ are re-initialised. The file must
be of the model's variant (vgg16-ssd's ``conv4_3_norm``, the MobileNets' ``backbone`` and width): when
it is not, the error says which variant the file holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2

from .identify import base_net_hint, pretrained_ssd_hint
from .ssd import SSD, init_xavier
from .state_dicts import state_dict_of

__all__ = ["LoadReport", "load_base_net", "load_pretrained_ssd"]

_HEADS = ("classification_headers.", "regression_headers.")
_SHOWN = 12  # keys listed per category in messages


@dataclass
class LoadReport:
    """What a weight file gave the network (``str(report)`` is a readable summary).

    Attributes:
        source: the file (or a description of the state dict).
        loaded: model keys copied from the file.
        reinitialized: model keys re-initialised because the file's shape differs (heads of another
            class count).
        not_in_file: model keys the file lacks, left as initialised.
        ignored: file keys not used (e.g. an ImageNet classifier).
        notes: anything else worth knowing (e.g. fc6/fc7 sub-sampled from the classifier).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = self._lines()
        lines[0] += f" from {self.source}"
        return "\n".join(lines)

    def summary(self) -> str:
        """The report on one line, without its source: ``loaded 130 of 142 tensors; re-initialised
        (shape differs): classification_headers.0, ... (12 tensors)``."""
        return "; ".join(self._lines())

    def _lines(self) -> list[str]:
        total = len(self.loaded) + len(self.reinitialized) + len(self.not_in_file)
        lines = [f"loaded {len(self.loaded)} of {total} tensors"]
        if self.reinitialized:
            lines.append(f"re-initialised (shape differs): {_modules(self.reinitialized)}")
        if self.not_in_file:
            lines.append(f"not in the file, left as initialised: {_modules(self.not_in_file)}")
        if self.ignored:
            lines.append(f"ignored from the file: {_listing(self.ignored)}")
        return lines + self.notes


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _modules(keys: list[str]) -> str:
    """Keys grouped by module: ``classification_headers.0, classification_headers.1 (4 tensors)``."""
    mods = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))
    return f"{_listing(mods)} ({len(keys)} tensors)"


def _mismatch_error(source: str, target: str, missing: list[str], unexpected: list[str],
                    mismatched: list[tuple[str, tuple, tuple]], hint: str = "") -> ValueError:
    # the hint on the first line: a quote of the message on one line, cut short, keeps it
    parts = [f"{source} does not fit {target}{' ' + hint if hint else ''}:"]
    if missing:
        parts.append(f"  {len(missing)} keys missing from the file: {_listing(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected keys in the file: {_listing(unexpected)}")
    if mismatched:
        shown = [f"{k} (file {list(a)}, model {list(b)})" for k, a, b in mismatched]
        parts.append(f"  {len(mismatched)} keys with another shape: {_listing(shown)}")
    return ValueError("\n".join(parts))


def _remap_pytorch_ssd_inverted_residuals(sd: dict[str, Tensor], blocks: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """Re-key pytorch-ssd's flat MobileNetV2 blocks (``conv.0 .. conv.7``) to torchvision's nested ones.

    pytorch-ssd: ``conv = [pw, bn, relu6, dw, bn, relu6, pw-linear, bn]`` (``[dw, bn, relu6, pw, bn]``
    when the expand ratio is 1); torchvision: ``conv = [ConvBNReLU pw, ConvBNReLU dw, pw-linear, bn]``
    (``[ConvBNReLU dw, pw, bn]``). A block already in torchvision's layout is left alone.
    """
    expanded = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    unexpanded = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
    pattern = re.compile(r"^(?P<block>.+)\.conv\.(?P<idx>\d+)\.(?P<param>[A-Za-z_]+)$")
    flat_blocks = {
        prefix for prefix in blocks
        if f"{prefix}.conv.0.weight" in sd and f"{prefix}.conv.0.0.weight" not in sd
    }
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        m = pattern.match(key)
        if m and m["block"] in flat_blocks:
            table = expanded if len(blocks[m["block"]].conv) == 4 else unexpanded
            idx = int(m["idx"])
            if idx in table:
                key = f"{m['block']}.conv.{table[idx]}.{m['param']}"
        out[key] = value
    return out


def _inverted_residuals(module: nn.Module, prefix: str) -> dict[str, nn.Module]:
    return {f"{prefix}{name}": m for name, m in module.named_children() if isinstance(m, InvertedResidualV2)}


def _reduce_fc(weight6: Tensor, bias6: Tensor, weight7: Tensor, bias7: Tensor) -> dict[str, Tensor]:
    """fc6 / fc7 of ImageNet VGG16 sub-sampled into SSD's dilated conv6 / conv7 (the SSD paper's
    'reduced fc': every 4th filter, every 3rd tap of the 7x7 fc6 kernel)."""
    w6 = weight6.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous()
    w7 = weight7[::4, ::4].reshape(1024, 1024, 1, 1).contiguous()
    return {"31.weight": w6, "31.bias": bias6[::4].clone(), "33.weight": w7, "33.bias": bias7[::4].clone()}


def _base_net_keys(model: SSD, sd: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    """The file's keys relative to ``model.base_net`` (ImageNet classifier keys set aside)."""
    name = model.config.name
    out: dict[str, Tensor] = {}
    whole_ssd = any(k.startswith("base_net.") for k in sd)  # e.g. a pytorch-ssd detector: take its base net
    for k, v in sd.items():
        if k.startswith(("classifier.", "fc.")) or (whole_ssd and not k.startswith("base_net.")):
            report.ignored.append(k)
            continue
        for prefix in ("base_net.", "features.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[k] = v
    if name.startswith("vgg16") and "31.weight" not in out:
        fc_keys = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
        fc = [sd.get(k) for k in fc_keys]
        if all(t is not None for t in fc) and fc[0].shape == (4096, 25088) and fc[2].shape == (4096, 4096):
            out.update(_reduce_fc(*fc))
            for k in fc_keys:
                report.ignored.remove(k)
            report.notes.append(
                "fc6/fc7 (base_net.31, base_net.33) sub-sampled from the ImageNet classifier.0/classifier.3"
            )
    if name == "mb2-ssd-lite":
        out = _remap_pytorch_ssd_inverted_residuals(out, _inverted_residuals(model.base_net, ""))
    if name.startswith("mb3") and model.config.backbone == "pytorch-ssd":
        out = _rekey_mobilenet_v3(out, len(model.base_net), report)
    return out


def _rekey_mobilenet_v3(sd: dict[str, Tensor], layers: int, report: LoadReport) -> dict[str, Tensor]:
    """A whole pytorch-ssd ``MobileNetV3_Large`` / ``_Small`` state dict onto its ``features`` (the
    base net): its ``conv1``, ``bn1``, ``bneck.i``, ``conv2``, ``bn2`` are ``features.0, 1, 3 + i,
    layers - 3, layers - 2`` (its state dict holds both names when it has ``features``); the
    classifier (``linear3``, ``bn3``, ``linear4``) is set aside."""
    if not any(k.startswith("bneck.") for k in sd):
        return sd
    has_features = any(k.split(".", 1)[0].isdigit() for k in sd)  # the prefix "features." was stripped
    names = {"conv1": "0", "bn1": "1", "conv2": str(layers - 3), "bn2": str(layers - 2)}
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".")
        if head.isdigit():
            out[k] = v
        elif has_features and (head in names or head == "bneck"):
            continue  # the same tensors again, under the module's own names
        elif head in names:
            out[f"{names[head]}.{rest}"] = v
        elif head == "bneck":
            index, _, rest = rest.partition(".")
            out[f"{3 + int(index)}.{rest}"] = v
        else:  # linear3 / bn3 / linear4: the ImageNet classifier
            report.ignored.append(k)
    return out


def load_base_net(model: SSD, weights: Mapping[str, Any], *, source: str = "a state dict") -> LoadReport:
    """Load ImageNet backbone weights into ``model.base_net`` (``--base-net``); the rest is untouched.

    Args:
        model: a network from :func:`ssdfast.models.create_model`.
        weights: a state dict in torchvision's or pytorch-ssd's layout (see the module doc), e.g. a
            weight file's contents.
        source: what ``weights`` are, for the report and messages (e.g. their file).

    Returns:
        a :class:`LoadReport`. Raises ValueError (listing the keys) when the weights do not fit.
    """
    sd = state_dict_of(weights)
    report = LoadReport(source=source)
    mapped = _base_net_keys(model, sd, report)
    target = model.base_net.state_dict()
    optional = set()
    if model.config.name.startswith("vgg16"):
        optional = {"31.weight", "31.bias", "33.weight", "33.bias"}  # torchvision's features-only files lack fc6/fc7
    missing = [k for k in target if k not in mapped and k not in optional and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in target]
    mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in mapped.items()
                  if k in target and v.shape != target[k].shape]
    if missing or unexpected or mismatched:
        raise _mismatch_error(source, f"the base net of {model.config.name}", missing, unexpected, mismatched,
                              base_net_hint(model, mapped))
    model.base_net.load_state_dict(mapped, strict=False)
    report.loaded = [f"base_net.{k}" for k in target if k in mapped]
    report.not_in_file = [f"base_net.{k}" for k in target if k not in mapped]
    return report


def load_pretrained_ssd(model: SSD, weights: Mapping[str, Any], *, source: str = "a state dict",
                        checkpoint: Mapping[str, Any] | None = None) -> LoadReport:
    """Load a whole pretrained detector (``--pretrained-ssd``), of any class count.

    Args:
        model: a network from :func:`ssdfast.models.create_model`.
        weights: the state dict of a pytorch-ssd SSD of the same network (``base_net.*``, ``extras.*``,
            ``classification_headers.*``...) or of an ssdfast one (a checkpoint's contents do too).
        source: what ``weights`` are, for the report and messages (e.g. their file).
        checkpoint: the ssdfast checkpoint they come from, if any: its network is named when they
            do not fit.

    Returns:
        a :class:`LoadReport`: heads whose shapes differ (another class count) are re-initialised
        and listed. Any other missing, unexpected or differently shaped key raises ValueError
        listing them; nothing is copied then.
    """
    sd = {k: v for k, v in state_dict_of(weights).items() if k != "priors"}
    blocks = _inverted_residuals(model.base_net, "base_net.") | _inverted_residuals(model.extras, "extras.")
    if blocks:
        sd = _remap_pytorch_ssd_inverted_residuals(sd, blocks)
    target = model.state_dict()
    report = LoadReport(source=source)
    missing, mismatched, reinit = [], [], []
    for k, t in target.items():
        if k not in sd:
            if k.startswith(_HEADS):
                reinit.append(k)
            elif not k.endswith("num_batches_tracked"):
                missing.append(k)
        elif sd[k].shape != t.shape:
            (reinit if k.startswith(_HEADS) else mismatched).append(k)
    unexpected = [k for k in sd if k not in target]
    if missing or unexpected or mismatched:
        if checkpoint is not None and checkpoint.get("net") != model.config.name:
            hint = (
                f"(the file is an ssdfast checkpoint of {checkpoint.get('net')!r}, "
                f"the model is {model.config.name!r})"
            )
        else:
            hint = pretrained_ssd_hint(model, sd, checkpoint)
        raise _mismatch_error(
            source, model.config.name, missing, unexpected,
            [(k, tuple(sd[k].shape), tuple(target[k].shape)) for k in mismatched], hint,
        )
    reinit_set = set(reinit)
    model.load_state_dict({k: v for k, v in sd.items() if k not in reinit_set}, strict=False)
    for module_name in dict.fromkeys(k.rsplit(".", 1)[0] for k in reinit):
        init_xavier(model.get_submodule(module_name))
    report.loaded = [k for k in target if k in sd and k not in reinit_set]
    report.reinitialized = [k for k in reinit if k in sd]
    report.not_in_file = [k for k in target if k not in sd]
    if checkpoint is not None:
        report.notes.append(f"ssdfast checkpoint of {checkpoint.get('net')!r}")
    return report
