"""MobileNet SSD / SSD-Lite networks with pytorch-ssd's heads, extras and priors (3000 at 300 px).

- ``mb1-ssd`` / ``mb1-ssd-lite``: pytorch-ssd's MobileNetV1 (``base_net`` keys as
  ``mobilenet_v1_with_relu_69_5.pth``), feature maps after layer 11 (stride 16) and 13 (stride 32).
- ``mb2-ssd-lite``: MobileNetV2 built from torchvision's blocks (torchvision's ImageNet state dict
  loads as is; pytorch-ssd's flat ``conv.0 .. conv.7`` keys, e.g. ``mb2-imagenet-71_8.pth``, are
  re-keyed on load), the first map taken inside block 14 after its expansion conv (pytorch-ssd's
  ``GraphPath(14, 'conv', 3)``), the second at the end (1280 ch). With a width multiplier, channel
  counts are rounded as pytorch-ssd's MobileNetV2 does (``int(c * w)``, last conv 1280 unless w > 1;
  ``backbone="pytorch-ssd"``, the default) or as torchvision's (``_make_divisible(c * w, 8)``,
  ``backbone="torchvision"``); at width 1 both are the same network.
- ``mb3-large-ssd-lite`` / ``mb3-small-ssd-lite`` (``backbone="pytorch-ssd"``, the default):
  pytorch-ssd's own MobileNetV3 (``vision/nn/mobilenetv3.py``: ``Block`` modules with the
  squeeze-excite after the projection and a shortcut on every stride-1 block), first map after its
  layer 14 (112 ch, large) / 10 (48 ch, small) at stride 16, the second at the end (960 / 576 ch), and
  its MobileNetV3 ``Block`` extras; 2.39 M / 1.26 M parameters at 21 classes. pytorch-ssd has them at
  width 1 only; other widths scale every base-net channel count as torchvision does.
- the same names with ``backbone="torchvision"``: torchvision's ``MobileNetV3.features`` (so its
  ImageNet weights load), the first map after the expansion conv of the last stride-2 block (as
  torchvision's SSDLite: 672 / 288 ch), the second at the end, mb2-ssd-lite's extras; 3.92 M / 1.58 M
  parameters at 21 classes. (ssdfast's only mb3 networks before ``backbone`` existed.)

Every network then has four extra stride-2 stages down to 1x1 and a head per map.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2
from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3
from torchvision.ops.misc import Conv2dNormActivation

from ..priors import MOBILENET_SSD300_SPEC, PriorSpec
from .ssd import BACKBONES, SSD, SeparableConv2d, SourceLayer, assemble_ssd, ssd_head, ssdlite_head

__all__ = [
    "make_divisible",
    "mobilenet_v1_base",
    "mobilenet_v2_features",
    "mobilenet_v3_features",
    "MobileNetV3Block",
    "SEModule",
    "mb1_ssd",
    "mb1_ssd_lite",
    "mb2_ssd_lite",
    "mb3_large_ssd_lite",
    "mb3_small_ssd_lite",
    "MOBILENET_MEAN",
    "MOBILENET_STD",
]

#: pytorch-ssd's MobileNet preprocessing: (image - 127) / 128 on 0-255 pixels.
MOBILENET_MEAN = (127 / 255, 127 / 255, 127 / 255)
MOBILENET_STD = (128 / 255, 128 / 255, 128 / 255)


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


def mobilenet_v1_base() -> nn.Sequential:
    """pytorch-ssd's ``MobileNetV1().model``: 14 stages, 1024 channels at stride 32."""
    stages = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    stages += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    base = nn.Sequential(_conv_bn(3, 32, 2), *(_conv_dw(i, o, s) for i, o, s in stages))
    for m in base.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return base


def _check_width(name: str, width_mult: float) -> None:
    if width_mult != 1.0:
        raise ValueError(f"{name} has no width multiplier (only mb2-ssd-lite and mb3-*-ssd-lite do), got {width_mult}")


def _mobilenet_kwargs(
    name: str, num_classes: int, image_size: int, width_mult: float, prior_spec: PriorSpec | None,
    backbone: str | None = None,
) -> dict:
    return dict(
        name=name,
        num_classes=num_classes,
        image_size=image_size,
        mean=MOBILENET_MEAN,
        std=MOBILENET_STD,
        default_spec=MOBILENET_SSD300_SPEC,
        width_mult=width_mult,
        prior_spec=prior_spec,
        backbone=backbone,
    )


def mb1_ssd(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None
) -> SSD:
    """MobileNetV1 SSD (pytorch-ssd ``mb1-ssd``): 3x3 conv heads."""
    _check_width("mb1-ssd", width_mult)

    def extra(inp: int, mid: int, out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inp, mid, 1), nn.ReLU(), nn.Conv2d(mid, out, 3, stride=2, padding=1), nn.ReLU())

    extras = nn.ModuleList([extra(1024, 256, 512), extra(512, 128, 256), extra(256, 128, 256), extra(256, 128, 256)])
    return assemble_ssd(
        **_mobilenet_kwargs("mb1-ssd", num_classes, image_size, width_mult, prior_spec),
        base_net=mobilenet_v1_base(),
        sources=[SourceLayer(12), SourceLayer(14)],
        extras=extras,
        make_head=ssd_head,
    )


def mb1_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None
) -> SSD:
    """MobileNetV1 SSD-Lite (pytorch-ssd ``mb1-ssd-lite``): separable convs without batch norm."""
    _check_width("mb1-ssd-lite", width_mult)

    def extra(inp: int, mid: int, out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, mid, 1),
            nn.ReLU(),
            SeparableConv2d(mid, out, 3, stride=2, padding=1, batch_norm=False, activation=nn.ReLU),
        )

    extras = nn.ModuleList([extra(1024, 256, 512), extra(512, 128, 256), extra(256, 128, 256), extra(256, 128, 256)])
    return assemble_ssd(
        **_mobilenet_kwargs("mb1-ssd-lite", num_classes, image_size, width_mult, prior_spec),
        base_net=mobilenet_v1_base(),
        sources=[SourceLayer(12), SourceLayer(14)],
        extras=extras,
        make_head=ssdlite_head(batch_norm=False),
    )


def _lite_extras(in_channels: int) -> nn.ModuleList:
    """pytorch-ssd's mb2-ssd-lite extras: inverted residuals down to 1x1 (512, 256, 256, 64 ch)."""
    return nn.ModuleList([
        InvertedResidualV2(in_channels, 512, stride=2, expand_ratio=0.2),
        InvertedResidualV2(512, 256, stride=2, expand_ratio=0.25),
        InvertedResidualV2(256, 256, stride=2, expand_ratio=0.5),
        InvertedResidualV2(256, 64, stride=2, expand_ratio=0.25),
    ])


def _downsamples(block: nn.Module) -> bool:
    if isinstance(block, InvertedResidualV2):
        return block.stride == 2
    return isinstance(block, InvertedResidualV3) and bool(block._is_cn)  # torchvision: _is_cn = stride > 1


def _split_source(features: nn.Sequential, sub: str) -> SourceLayer:
    """The expansion output of the last downsampling block (the stride-16 map with most channels)."""
    index = max(i for i, m in enumerate(features) if _downsamples(m))
    if features[index].use_res_connect:  # a residual block cannot be split (its skip would be lost)
        raise ValueError(f"block {index} is residual and cannot give a feature map")
    return SourceLayer(index, sub=sub, split=1)


def _check_backbone(name: str, backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"{name}: backbone should be one of {', '.join(BACKBONES)}, got {backbone!r}")


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: the nearest multiple of ``divisor`` (>= divisor), never more
    than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _init_backbone(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------- MobileNetV2
_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


def mobilenet_v2_features(width_mult: float = 1.0, backbone: str = "pytorch-ssd") -> nn.Sequential:
    """MobileNetV2's 19 feature layers with torchvision's modules (and keys).

    ``backbone="torchvision"``: ``torchvision.models.mobilenet_v2(width_mult=...).features``.
    ``backbone="pytorch-ssd"``: the channel counts of pytorch-ssd's ``MobileNetV2(width_mult=...)``:
    ``int(c * width_mult)`` for the stem and every block, the last conv 1280 (``int(1280 * w)`` when
    w > 1), expansions ``round(inp * t)``. Both agree at width 1.
    """
    _check_backbone("mobilenet_v2", backbone)
    if backbone == "torchvision":
        return mobilenet_v2(weights=None, width_mult=width_mult).features
    channels = int(32 * width_mult)
    if min(channels, int(16 * width_mult)) < 1:
        raise ValueError(f"width_mult {width_mult} is too small for MobileNetV2 (a layer would have no channels)")
    last = int(1280 * width_mult) if width_mult > 1.0 else 1280
    layers: list[nn.Module] = [Conv2dNormActivation(3, channels, stride=2, activation_layer=nn.ReLU6)]
    for t, c, n, s in _V2_SETTING:
        out = int(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidualV2(channels, out, s if i == 0 else 1, t))
            channels = out
    layers.append(Conv2dNormActivation(channels, last, kernel_size=1, activation_layer=nn.ReLU6))
    features = nn.Sequential(*layers)
    _init_backbone(features)
    return features


def mb2_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None,
    backbone: str = "pytorch-ssd",
) -> SSD:
    """MobileNetV2 SSD-Lite (pytorch-ssd ``mb2-ssd-lite``; ``backbone`` only matters at width != 1)."""
    features = mobilenet_v2_features(width_mult, backbone)
    return assemble_ssd(
        **_mobilenet_kwargs("mb2-ssd-lite", num_classes, image_size, width_mult, prior_spec, backbone),
        base_net=features,
        sources=[_split_source(features, "conv"), SourceLayer(len(features))],
        extras=_lite_extras(features[-1].out_channels),
        make_head=ssdlite_head(batch_norm=True),
    )


# ------------------------------------------------------------------------- pytorch-ssd's MobileNetV3
class SEModule(nn.Module):
    """pytorch-ssd's squeeze-excite (``SeModule``): ``x * hardsigmoid(BN(conv(relu(BN(conv(pool(x)))))))``,
    the squeeze ``channels // 4`` wide, convs without bias (keys ``se.1``, ``se.2``, ``se.4``, ``se.5``)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = channels // reduction
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Hardsigmoid(),  # pytorch-ssd's hsigmoid: relu6(x + 3) / 6, the same numbers
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.se(x)


class MobileNetV3Block(nn.Module):
    """pytorch-ssd's MobileNetV3 ``Block`` (same attribute names, so the same state-dict keys).

    1x1 expansion (``conv1``, ``bn1``, ``nolinear1``), k x k depthwise with the stride (``conv2``,
    ``bn2``, ``nolinear2``), 1x1 projection (``conv3``, ``bn3``), then the squeeze-excite ``se`` on the
    projected output; a stride-1 block adds ``shortcut(x)`` (the identity, or a 1x1 conv + BN when the
    channel count changes). ``activation`` builds ``nn.ReLU`` or ``nn.Hardswish`` (pytorch-ssd's
    ``hswish``, ``x * relu6(x + 3) / 6``: the same numbers).
    """

    #: Children that run one after the other (for :mod:`ssdfast.models.fuse`: BatchNorms folded
    #: into the conv before them, activations fused).
    fuse_chains = (("conv1", "bn1", "nolinear1", "conv2", "bn2", "nolinear2", "conv3", "bn3"),)

    def __init__(self, kernel_size: int, in_channels: int, expand_channels: int, out_channels: int,
                 activation: Callable[[], nn.Module], se: bool, stride: int):
        super().__init__()
        self.stride = stride
        self.se = SEModule(out_channels) if se else None
        self.conv1 = nn.Conv2d(in_channels, expand_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(expand_channels)
        self.nolinear1 = activation()
        self.conv2 = nn.Conv2d(expand_channels, expand_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                               groups=expand_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(expand_channels)
        self.nolinear2 = activation()
        self.conv3 = nn.Conv2d(expand_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.nolinear2(self.bn2(self.conv2(self.nolinear1(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return out + self.shortcut(x) if self.stride == 1 else out


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


#: pytorch-ssd's MobileNetV3 blocks: (kernel, expansion, output, activation, squeeze-excite, stride);
#: the last conv's channels; how many blocks run before the first feature map (stride 16).
_V3_ARCHS: dict[str, tuple[list[tuple[int, int, int, Callable[[], nn.Module], bool, int]], int, int]] = {
    "large": ([
        (3, 16, 16, _relu, False, 1), (3, 64, 24, _relu, False, 2), (3, 72, 24, _relu, False, 1),
        (5, 72, 40, _relu, True, 2), (5, 120, 40, _relu, True, 1), (5, 120, 40, _relu, True, 1),
        (3, 240, 80, nn.Hardswish, False, 2), (3, 200, 80, nn.Hardswish, False, 1),
        (3, 184, 80, nn.Hardswish, False, 1), (3, 184, 80, nn.Hardswish, False, 1),
        (3, 480, 112, nn.Hardswish, True, 1), (3, 672, 112, nn.Hardswish, True, 1),
        (5, 672, 160, nn.Hardswish, True, 1), (5, 672, 160, nn.Hardswish, True, 2),
        (5, 960, 160, nn.Hardswish, True, 1),
    ], 960, 12),
    "small": ([
        (3, 16, 16, _relu, True, 2), (3, 72, 24, _relu, False, 2), (3, 88, 24, _relu, False, 1),
        (5, 96, 40, nn.Hardswish, True, 2), (5, 240, 40, nn.Hardswish, True, 1),
        (5, 240, 40, nn.Hardswish, True, 1), (5, 120, 48, nn.Hardswish, True, 1),
        (5, 144, 48, nn.Hardswish, True, 1), (5, 288, 96, nn.Hardswish, True, 2),
        (5, 576, 96, nn.Hardswish, True, 1), (5, 576, 96, nn.Hardswish, True, 1),
    ], 576, 8),
}


def mobilenet_v3_features(arch: str, width_mult: float = 1.0, backbone: str = "pytorch-ssd") -> nn.Sequential:
    """pytorch-ssd's ``MobileNetV3_Large().features`` (``arch="large"``, 21 layers) or
    ``MobileNetV3_Small().features`` (``"small"``, 17): conv1, bn1, hswish, one layer per block,
    conv2, bn2, hswish. Channel counts times ``width_mult`` rounded as torchvision's (all the same at 1).

    ``backbone="torchvision"``: ``torchvision.models.mobilenet_v3_large/small(width_mult=...).features``
    (another network: torchvision's blocks, its ImageNet weights load).
    """
    _check_backbone(f"mobilenet_v3_{arch}", backbone)
    if backbone == "torchvision":
        factory = mobilenet_v3_large if arch == "large" else mobilenet_v3_small
        return factory(weights=None, width_mult=width_mult).features
    blocks, last, _ = _V3_ARCHS[arch]
    width = lambda c: make_divisible(c * width_mult)  # noqa: E731
    channels = width(16)
    layers: list[nn.Module] = [nn.Conv2d(3, channels, kernel_size=3, stride=2, padding=1, bias=False),
                               nn.BatchNorm2d(channels), nn.Hardswish()]
    for kernel, expand, out, activation, se, stride in blocks:
        layers.append(MobileNetV3Block(kernel, channels, width(expand), width(out), activation, se, stride))
        channels = width(out)
    layers += [nn.Conv2d(channels, width(last), kernel_size=1, bias=False), nn.BatchNorm2d(width(last)), nn.Hardswish()]
    features = nn.Sequential(*layers)
    _init_backbone(features)
    return features


def _mb3(name: str, arch: str, num_classes: int, image_size: int, width_mult: float, prior_spec: PriorSpec | None,
         backbone: str) -> SSD:
    _check_backbone(name, backbone)
    kwargs = _mobilenet_kwargs(name, num_classes, image_size, width_mult, prior_spec, backbone)
    features = mobilenet_v3_features(arch, width_mult, backbone)
    if backbone == "torchvision":
        return assemble_ssd(
            **kwargs,
            base_net=features,
            sources=[_split_source(features, "block"), SourceLayer(len(features))],
            extras=_lite_extras(features[-1].out_channels),
            make_head=ssdlite_head(batch_norm=True),
        )
    last = features[-3].out_channels
    extras = nn.ModuleList([
        MobileNetV3Block(3, last, 256, 512, nn.Hardswish, False, stride=2),
        MobileNetV3Block(3, 512, 128, 256, nn.Hardswish, False, stride=2),
        MobileNetV3Block(3, 256, 128, 256, nn.Hardswish, False, stride=2),
        MobileNetV3Block(3, 256, 64, 64, nn.Hardswish, False, stride=2),
    ])
    first_map = 3 + _V3_ARCHS[arch][2]  # pytorch-ssd's source_layer_indexes: [15, 21] / [11, 17]
    return assemble_ssd(
        **kwargs,
        base_net=features,
        sources=[SourceLayer(first_map), SourceLayer(len(features))],
        extras=extras,
        make_head=ssdlite_head(batch_norm=True),
    )


def mb3_large_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None,
    backbone: str = "pytorch-ssd",
) -> SSD:
    """MobileNetV3-Large SSD-Lite: pytorch-ssd's (maps: 112 ch at /16, 960 ch at /32) or, with
    ``backbone="torchvision"``, on torchvision's MobileNetV3 (672 ch at /16, 960 ch at /32)."""
    return _mb3("mb3-large-ssd-lite", "large", num_classes, image_size, width_mult, prior_spec, backbone)


def mb3_small_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None,
    backbone: str = "pytorch-ssd",
) -> SSD:
    """MobileNetV3-Small SSD-Lite: pytorch-ssd's (maps: 48 ch at /16, 576 ch at /32) or, with
    ``backbone="torchvision"``, on torchvision's MobileNetV3 (288 ch at /16, 576 ch at /32)."""
    return _mb3("mb3-small-ssd-lite", "small", num_classes, image_size, width_mult, prior_spec, backbone)
