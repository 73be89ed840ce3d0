"""MobileNet SSD / SSD-Lite networks with pytorch-ssd's heads, extras and priors (3000 at 300 px).

- ``mb1-ssd`` / ``mb1-ssd-lite``: pytorch-ssd's MobileNetV1 (``base_net`` keys as
  ``mobilenet_v1_with_relu_69_5.pth``), feature maps after layer 11 (stride 16) and 13 (stride 32).
- ``mb2-ssd-lite``: torchvision's ``MobileNetV2.features`` (so its ImageNet state dict loads; pytorch-ssd's
  ``mb2-imagenet-71_8.pth`` is re-keyed on load), the first map taken inside block 14 after its
  expansion conv (pytorch-ssd's ``GraphPath(14, 'conv', 3)``), the second at the end (1280 ch).
- ``mb3-large-ssd-lite`` / ``mb3-small-ssd-lite``: torchvision's ``MobileNetV3.features``, the first map
  after the expansion conv of the last stride-2 block (as torchvision's SSDLite), the second at the end.

Every network then has four extra stride-2 stages down to 1x1 and a head per map.
"""
from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2
from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3

from ..priors import MOBILENET_SSD300_SPEC, PriorSpec
from .ssd import SSD, SeparableConv2d, SourceLayer, assemble_ssd, ssd_head, ssdlite_head

__all__ = [
    "mobilenet_v1_base",
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
    name: str, num_classes: int, image_size: int, width_mult: float, prior_spec: PriorSpec | None
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


def mb2_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None
) -> SSD:
    """MobileNetV2 SSD-Lite (pytorch-ssd ``mb2-ssd-lite``) on torchvision's MobileNetV2."""
    features = mobilenet_v2(weights=None, width_mult=width_mult).features
    return assemble_ssd(
        **_mobilenet_kwargs("mb2-ssd-lite", num_classes, image_size, width_mult, prior_spec),
        base_net=features,
        sources=[_split_source(features, "conv"), SourceLayer(len(features))],
        extras=_lite_extras(features[-1].out_channels),
        make_head=ssdlite_head(batch_norm=True),
    )


def _mb3(name: str, factory, num_classes: int, image_size: int, width_mult: float, prior_spec: PriorSpec | None) -> SSD:
    features = factory(weights=None, width_mult=width_mult).features
    return assemble_ssd(
        **_mobilenet_kwargs(name, num_classes, image_size, width_mult, prior_spec),
        base_net=features,
        sources=[_split_source(features, "block"), SourceLayer(len(features))],
        extras=_lite_extras(features[-1].out_channels),
        make_head=ssdlite_head(batch_norm=True),
    )


def mb3_large_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None
) -> SSD:
    """MobileNetV3-Large SSD-Lite on torchvision's MobileNetV3 (maps: 672 ch at /16, 960 ch at /32)."""
    return _mb3("mb3-large-ssd-lite", mobilenet_v3_large, num_classes, image_size, width_mult, prior_spec)


def mb3_small_ssd_lite(
    num_classes: int, image_size: int = 300, width_mult: float = 1.0, prior_spec: PriorSpec | None = None
) -> SSD:
    """MobileNetV3-Small SSD-Lite on torchvision's MobileNetV3 (maps: 288 ch at /16, 576 ch at /32)."""
    return _mb3("mb3-small-ssd-lite", mobilenet_v3_small, num_classes, image_size, width_mult, prior_spec)
