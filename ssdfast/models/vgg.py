"""VGG16 SSD300 / SSD512 (Liu et al.), with pytorch-ssd's module layout.

``base_net`` is a ModuleList of 35 layers: indices 0-29 are torchvision's ``vgg16().features[0:30]``
(conv1_1 ... relu5_3; the third pool uses ``ceil_mode`` as in SSD), then pool5 (3x3, stride 1),
the dilated fc6 conv (31), ReLU, the fc7 1x1 conv (33) and ReLU. So torchvision's ImageNet keys
``features.N.*`` and pytorch-ssd's ``vgg16_reducedfc.pth`` keys ``N.*`` both map onto it.

conv4_3 (after index 22) goes to the first head through ``source_layer_add_ons.0``, chosen by
``conv4_3_norm``:

- ``"batchnorm"`` (default): a ``BatchNorm2d(512)``, as pytorch-ssd's ``vgg16-ssd`` since Sep 2018
  (its ``train_ssd.py`` today; keys ``source_layer_add_ons.0.{weight,bias,running_mean,running_var}``);
- ``"l2norm"``: the SSD paper's L2Norm with a learned per-channel scale starting at 20 (pytorch-ssd's
  ``ScaledL2Norm`` before that, key ``source_layer_add_ons.0.scale``; ssdfast's only choice before).

``vgg16-ssd512`` is not in pytorch-ssd (either lineage): the SSD512 layout of the paper on the same
base net, with the same ``conv4_3_norm`` choice.
"""
from __future__ import annotations

from torch import nn

from ..priors import VGG_SSD300_SPEC, VGG_SSD512_SPEC, PriorSpec
from .ssd import CONV4_3_NORMS, SSD, L2Norm, SourceLayer, assemble_ssd, ssd_head

__all__ = ["vgg16_base", "vgg16_ssd", "vgg16_ssd512", "conv4_3_norm_layer", "VGG_MEAN", "VGG_STD"]

#: pytorch-ssd's vgg preprocessing: image (0-255) minus (123, 117, 104), not divided.
VGG_MEAN = (123 / 255, 117 / 255, 104 / 255)
VGG_STD = (1 / 255, 1 / 255, 1 / 255)

_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]


def vgg16_base() -> nn.ModuleList:
    """The 35 layers of SSD's VGG16 (see the module doc), Kaiming-initialised as torchvision's VGG."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(v)
    layers += [
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),
        nn.ReLU(inplace=True),
    ]
    base = nn.ModuleList(layers)
    for m in base.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return base


def _extra(in_channels: int, mid: int, out: int, **conv: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, kernel_size=1),
        nn.ReLU(),
        nn.Conv2d(mid, out, **{"kernel_size": 3, **conv}),
        nn.ReLU(),
    )


def conv4_3_norm_layer(conv4_3_norm: str) -> nn.Module:
    """The module between conv4_3 and the first head (see the module doc)."""
    if conv4_3_norm == "batchnorm":
        return nn.BatchNorm2d(512)
    if conv4_3_norm == "l2norm":
        return L2Norm(512, 20.0)
    raise ValueError(f"conv4_3_norm should be one of {', '.join(CONV4_3_NORMS)}, got {conv4_3_norm!r}")


def _build(name: str, num_classes: int, image_size: int, default_spec: PriorSpec, extras: nn.ModuleList,
           prior_spec: PriorSpec | None, conv4_3_norm: str) -> SSD:
    return assemble_ssd(
        name=name,
        num_classes=num_classes,
        image_size=image_size,
        mean=VGG_MEAN,
        std=VGG_STD,
        default_spec=default_spec,
        base_net=vgg16_base(),
        sources=[SourceLayer(23, add_on=0), SourceLayer(35)],
        add_ons=nn.ModuleList([conv4_3_norm_layer(conv4_3_norm)]),
        extras=extras,
        make_head=ssd_head,
        prior_spec=prior_spec,
        conv4_3_norm=conv4_3_norm,
    )


def _check_width(name: str, width_mult: float) -> None:
    if width_mult != 1.0:
        raise ValueError(f"{name} has no width multiplier, got {width_mult}")


def vgg16_ssd(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None,
    conv4_3_norm: str = "batchnorm",
) -> SSD:
    """SSD300: 6 feature maps (38, 19, 10, 5, 3, 1 at 300 px), 8732 priors."""
    _check_width("vgg16-ssd", width_mult)
    extras = nn.ModuleList([
        _extra(1024, 256, 512, stride=2, padding=1),
        _extra(512, 128, 256, stride=2, padding=1),
        _extra(256, 128, 256),
        _extra(256, 128, 256),
    ])
    return _build("vgg16-ssd", num_classes, image_size, VGG_SSD300_SPEC, extras, prior_spec, conv4_3_norm)


def vgg16_ssd512(
    num_classes: int, image_size: int = 512, width_mult: float = 1.0, prior_spec: PriorSpec | None = None,
    conv4_3_norm: str = "batchnorm",
) -> SSD:
    """SSD512: 7 feature maps (64, 32, 16, 8, 4, 2, 1 at 512 px), 24564 priors."""
    _check_width("vgg16-ssd512", width_mult)
    extras = nn.ModuleList([
        _extra(1024, 256, 512, stride=2, padding=1),
        _extra(512, 128, 256, stride=2, padding=1),
        _extra(256, 128, 256, stride=2, padding=1),
        _extra(256, 128, 256, stride=2, padding=1),
        _extra(256, 128, 256, kernel_size=4, padding=1),
    ])
    return _build("vgg16-ssd512", num_classes, image_size, VGG_SSD512_SPEC, extras, prior_spec, conv4_3_norm)
