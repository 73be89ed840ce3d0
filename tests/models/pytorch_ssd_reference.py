"""pytorch-ssd's networks, re-stated for the tests (independent of ssdfast.models).

Written from reading qfgaohao/pytorch-ssd (whose ``vision/`` dusty-nv/pytorch-ssd shares, minus
MobileNetV3): ``vision/ssd/ssd.py`` (the SSD forward), ``vision/nn/{vgg,mobilenet,mobilenet_v2,
mobilenetv3,scaled_l2_norm}.py`` (base nets), ``vision/ssd/{vgg_ssd,mobilenetv1_ssd,
mobilenetv1_ssd_lite,mobilenet_v2_ssd_lite,mobilenetv3_ssd_lite}.py`` (extras, heads, which layers
feed them) and ``vision/ssd/config/*_config.py`` + ``vision/utils/box_utils.py`` (priors). Module
structure and attribute names are pytorch-ssd's, so ``state_dict()`` has the keys of its ``.pth``
files; nothing here imports ssdfast's networks, so a layout mistake there cannot hide here.

Entry point: :func:`create(name, num_classes, **options)` -> ``PsSSD`` whose forward returns
``(confidences [B, P, C] logits, locations [B, P, 4])`` as pytorch-ssd's ``SSD`` (``is_test=False``),
and :func:`priors(name)`.
"""
from __future__ import annotations

import collections
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

GraphPath = collections.namedtuple("GraphPath", ["s0", "name", "s1"])


# ============================================================================ the SSD forward
class PsSSD(nn.Module):
    """pytorch-ssd's ``SSD``: source layers as ints, ``(index, add_on)`` tuples or ``GraphPath``s."""

    def __init__(self, num_classes, base_net, source_layer_indexes, extras, classification_headers,
                 regression_headers):
        super().__init__()
        self.num_classes = num_classes
        self.base_net = base_net
        self.source_layer_indexes = source_layer_indexes
        self.extras = extras
        self.classification_headers = classification_headers
        self.regression_headers = regression_headers
        self.source_layer_add_ons = nn.ModuleList(
            [t[1] for t in source_layer_indexes if isinstance(t, tuple) and not isinstance(t, GraphPath)]
        )

    def _head(self, i, x):
        conf = self.classification_headers[i](x).permute(0, 2, 3, 1).contiguous()
        loc = self.regression_headers[i](x).permute(0, 2, 3, 1).contiguous()
        return conf.view(conf.size(0), -1, self.num_classes), loc.view(loc.size(0), -1, 4)

    def forward(self, x):
        confidences, locations = [], []
        start = 0
        head = 0
        end = 0
        for source in self.source_layer_indexes:
            add_on = path = None
            if isinstance(source, GraphPath):
                path, end = source, source.s0
            elif isinstance(source, tuple):
                end, add_on = source
            else:
                end = source
            for layer in self.base_net[start:end]:
                x = layer(x)
            y = add_on(x) if add_on is not None else x
            if path is not None:
                sub = getattr(self.base_net[end], path.name)
                for layer in sub[: path.s1]:
                    x = layer(x)
                y = x
                for layer in sub[path.s1:]:
                    x = layer(x)
                end += 1
            start = end
            conf, loc = self._head(head, y)
            head += 1
            confidences.append(conf)
            locations.append(loc)
        for layer in self.base_net[end:]:
            x = layer(x)
        for layer in self.extras:
            x = layer(x)
            conf, loc = self._head(head, x)
            head += 1
            confidences.append(conf)
            locations.append(loc)
        return torch.cat(confidences, 1), torch.cat(locations, 1)


def _separable(in_ch, out_ch, batch_norm=True):
    """``SeperableConv2d`` (k=3, p=1): dw conv [+ BN] + ReLU6 (mb2/mb3) or ReLU (mb1-lite), then a 1x1."""
    layers = [nn.Conv2d(in_ch, in_ch, kernel_size=3, groups=in_ch, stride=1, padding=1)]
    if batch_norm:
        layers += [nn.BatchNorm2d(in_ch), nn.ReLU6()]
    else:
        layers += [nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(in_ch, out_ch, kernel_size=1))


def _lite_heads(num_classes, channels, batch_norm=True):
    """SSD-Lite heads: separable on every level but the last (a 1x1 conv); 6 anchors everywhere."""
    def heads(per_anchor):
        mods = [_separable(c, 6 * per_anchor, batch_norm) for c in channels[:-1]]
        return nn.ModuleList(mods + [nn.Conv2d(channels[-1], 6 * per_anchor, kernel_size=1)])

    return heads(num_classes), heads(4)


# ============================================================================ VGG16 SSD300
class ScaledL2Norm(nn.Module):
    """pytorch-ssd's ``ScaledL2Norm`` (the SSD paper's conv4_3 norm; pytorch-ssd before Sep 2018)."""

    def __init__(self, in_channels, initial_scale):
        super().__init__()
        self.scale = nn.Parameter(torch.full((in_channels,), float(initial_scale)))

    def forward(self, x):
        return F.normalize(x, p=2, dim=1) * self.scale[None, :, None, None]


def vgg_layers():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return layers + [
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),
        nn.ReLU(inplace=True),
    ]


def create_vgg_ssd(num_classes, conv4_3_norm="batchnorm"):
    base_net = nn.ModuleList(vgg_layers())
    norm = nn.BatchNorm2d(512) if conv4_3_norm == "batchnorm" else ScaledL2Norm(512, 20)

    def extra(i, mid, o, **kw):
        return nn.Sequential(nn.Conv2d(i, mid, kernel_size=1), nn.ReLU(),
                             nn.Conv2d(mid, o, kernel_size=3, **kw), nn.ReLU())

    extras = nn.ModuleList([extra(1024, 256, 512, stride=2, padding=1), extra(512, 128, 256, stride=2, padding=1),
                            extra(256, 128, 256), extra(256, 128, 256)])
    channels, anchors = [512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4]
    cls = nn.ModuleList(nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1) for c, a in zip(channels, anchors))
    reg = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in zip(channels, anchors))
    return PsSSD(num_classes, base_net, [(23, norm), len(base_net)], extras, cls, reg)


# ============================================================================ MobileNetV1
def mobilenet_v1_model():
    """``MobileNetV1(1001).model``."""
    def conv_bn(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    def conv_dw(i, o, s):
        return nn.Sequential(
            nn.Conv2d(i, i, 3, s, 1, groups=i, bias=False), nn.BatchNorm2d(i), nn.ReLU(inplace=True),
            nn.Conv2d(i, o, 1, 1, 0, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        )

    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    plan += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    return nn.Sequential(conv_bn(3, 32, 2), *(conv_dw(*p) for p in plan))


def create_mobilenetv1_ssd(num_classes):
    def extra(i, mid, o):
        return nn.Sequential(nn.Conv2d(i, mid, kernel_size=1), nn.ReLU(),
                             nn.Conv2d(mid, o, kernel_size=3, stride=2, padding=1), nn.ReLU())

    extras = nn.ModuleList([extra(1024, 256, 512), extra(512, 128, 256), extra(256, 128, 256), extra(256, 128, 256)])
    channels = [512, 1024, 512, 256, 256, 256]
    cls = nn.ModuleList(nn.Conv2d(c, 6 * num_classes, kernel_size=3, padding=1) for c in channels)
    reg = nn.ModuleList(nn.Conv2d(c, 6 * 4, kernel_size=3, padding=1) for c in channels)
    return PsSSD(num_classes, mobilenet_v1_model(), [12, 14], extras, cls, reg)


def create_mobilenetv1_ssd_lite(num_classes):
    def extra(i, mid, o):
        sep = nn.Sequential(nn.Conv2d(mid, mid, kernel_size=3, groups=mid, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(mid, o, kernel_size=1))
        return nn.Sequential(nn.Conv2d(i, mid, kernel_size=1), nn.ReLU(), sep)

    extras = nn.ModuleList([extra(1024, 256, 512), extra(512, 128, 256), extra(256, 128, 256), extra(256, 128, 256)])
    cls, reg = _lite_heads(num_classes, [512, 1024, 512, 256, 256, 256], batch_norm=False)
    return PsSSD(num_classes, mobilenet_v1_model(), [12, 14], extras, cls, reg)


# ============================================================================ MobileNetV2
class InvertedResidual(nn.Module):
    """pytorch-ssd's flat MobileNetV2 block: ``conv = [pw, bn, relu6, dw, bn, relu6, pw, bn]``
    (``[dw, bn, relu6, pw, bn]`` when the expand ratio is 1)."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        dw = [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
              nn.ReLU6(inplace=True)]
        project = [nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        if expand_ratio == 1:
            self.conv = nn.Sequential(*dw, *project)
        else:
            expand = [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            self.conv = nn.Sequential(*expand, *dw, *project)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_v2_features(width_mult=1.0):
    """``MobileNetV2(width_mult=...).features``: channels ``int(c * width_mult)``, the last 1280
    unless the width is above 1."""
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
    c = int(32 * width_mult)
    last = int(1280 * width_mult) if width_mult > 1.0 else 1280
    layers = [nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6(inplace=True))]
    for t, ch, n, s in setting:
        out = int(ch * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
            c = out
    layers.append(nn.Sequential(nn.Conv2d(c, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
    return nn.Sequential(*layers)


def create_mobilenetv2_ssd_lite(num_classes, width_mult=1.0):
    extras = nn.ModuleList([
        InvertedResidual(1280, 512, stride=2, expand_ratio=0.2),
        InvertedResidual(512, 256, stride=2, expand_ratio=0.25),
        InvertedResidual(256, 256, stride=2, expand_ratio=0.5),
        InvertedResidual(256, 64, stride=2, expand_ratio=0.25),
    ])
    cls, reg = _lite_heads(num_classes, [round(576 * width_mult), 1280, 512, 256, 256, 64])
    return PsSSD(num_classes, mobilenet_v2_features(width_mult), [GraphPath(14, "conv", 3), 19], extras, cls, reg)


# ============================================================================ MobileNetV3
class hswish(nn.Module):  # noqa: N801 (pytorch-ssd's name)
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class hsigmoid(nn.Module):  # noqa: N801
    def forward(self, x):
        return F.relu6(x + 3) / 6


class SeModule(nn.Module):
    def __init__(self, in_size, reduction=4):
        super().__init__()
        mid = in_size // reduction
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_size, mid, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, in_size, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(in_size),
            hsigmoid(),
        )

    def forward(self, x):
        return x * self.se(x)


class Block(nn.Module):
    """expand 1x1 + depthwise kxk + project 1x1; SE on the projected output; a shortcut whenever
    the stride is 1 (a 1x1 conv + BN when the channel count changes)."""

    def __init__(self, kernel_size, in_size, expand_size, out_size, nolinear, semodule, stride):
        super().__init__()
        self.stride = stride
        self.se = semodule
        self.conv1 = nn.Conv2d(in_size, expand_size, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(expand_size)
        self.nolinear1 = nolinear
        self.conv2 = nn.Conv2d(expand_size, expand_size, kernel_size=kernel_size, stride=stride,
                               padding=kernel_size // 2, groups=expand_size, bias=False)
        self.bn2 = nn.BatchNorm2d(expand_size)
        self.nolinear2 = nolinear
        self.conv3 = nn.Conv2d(expand_size, out_size, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_size)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_size != out_size:
            self.shortcut = nn.Sequential(nn.Conv2d(in_size, out_size, kernel_size=1, stride=1, padding=0, bias=False),
                                          nn.BatchNorm2d(out_size))

    def forward(self, x):
        out = self.nolinear1(self.bn1(self.conv1(x)))
        out = self.nolinear2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return out + self.shortcut(x) if self.stride == 1 else out


def _relu():
    return nn.ReLU(inplace=True)


LARGE_BNECK = [  # kernel, in, expand, out, activation, SE, stride
    (3, 16, 16, 16, _relu, False, 1), (3, 16, 64, 24, _relu, False, 2), (3, 24, 72, 24, _relu, False, 1),
    (5, 24, 72, 40, _relu, True, 2), (5, 40, 120, 40, _relu, True, 1), (5, 40, 120, 40, _relu, True, 1),
    (3, 40, 240, 80, hswish, False, 2), (3, 80, 200, 80, hswish, False, 1), (3, 80, 184, 80, hswish, False, 1),
    (3, 80, 184, 80, hswish, False, 1), (3, 80, 480, 112, hswish, True, 1), (3, 112, 672, 112, hswish, True, 1),
    (5, 112, 672, 160, hswish, True, 1), (5, 160, 672, 160, hswish, True, 2), (5, 160, 960, 160, hswish, True, 1),
]
SMALL_BNECK = [
    (3, 16, 16, 16, _relu, True, 2), (3, 16, 72, 24, _relu, False, 2), (3, 24, 88, 24, _relu, False, 1),
    (5, 24, 96, 40, hswish, True, 2), (5, 40, 240, 40, hswish, True, 1), (5, 40, 240, 40, hswish, True, 1),
    (5, 40, 120, 48, hswish, True, 1), (5, 48, 144, 48, hswish, True, 1), (5, 48, 288, 96, hswish, True, 2),
    (5, 96, 576, 96, hswish, True, 1), (5, 96, 576, 96, hswish, True, 1),
]


def mobilenet_v3_features(bneck, last):
    """``MobileNetV3_Large().features`` / ``MobileNetV3_Small().features``: conv1, bn1, hs1, the
    bneck blocks one per index, conv2, bn2, hs2."""
    layers = [nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), hswish()]
    for k, i, e, o, act, se, s in bneck:
        layers.append(Block(k, i, e, o, act(), SeModule(o) if se else None, s))
    c = bneck[-1][3]
    layers += [nn.Conv2d(c, last, kernel_size=1, stride=1, padding=0, bias=False), nn.BatchNorm2d(last), hswish()]
    return nn.Sequential(*layers)


def _create_mobilenetv3_ssd_lite(num_classes, bneck, last, first_map, sources):
    extras = nn.ModuleList([
        Block(3, last, 256, 512, hswish(), None, stride=2),
        Block(3, 512, 128, 256, hswish(), None, stride=2),
        Block(3, 256, 128, 256, hswish(), None, stride=2),
        Block(3, 256, 64, 64, hswish(), None, stride=2),
    ])
    cls, reg = _lite_heads(num_classes, [first_map, last, 512, 256, 256, 64])
    return PsSSD(num_classes, mobilenet_v3_features(bneck, last), sources, extras, cls, reg)


def create_mobilenetv3_large_ssd_lite(num_classes):
    return _create_mobilenetv3_ssd_lite(num_classes, LARGE_BNECK, 960, 112, [15, 21])


def create_mobilenetv3_small_ssd_lite(num_classes):
    return _create_mobilenetv3_ssd_lite(num_classes, SMALL_BNECK, 576, 48, [11, 17])


# ============================================================================ priors
SSDSpec = collections.namedtuple("SSDSpec", ["feature_map_size", "shrinkage", "box_min", "box_max", "aspect_ratios"])

VGG_SPECS = [SSDSpec(38, 8, 30, 60, [2]), SSDSpec(19, 16, 60, 111, [2, 3]), SSDSpec(10, 32, 111, 162, [2, 3]),
             SSDSpec(5, 64, 162, 213, [2, 3]), SSDSpec(3, 100, 213, 264, [2]), SSDSpec(1, 300, 264, 315, [2])]
MOBILENET_SPECS = [SSDSpec(19, 16, 60, 105, [2, 3]), SSDSpec(10, 32, 105, 150, [2, 3]),
                   SSDSpec(5, 64, 150, 195, [2, 3]), SSDSpec(3, 100, 195, 240, [2, 3]),
                   SSDSpec(2, 150, 240, 285, [2, 3]), SSDSpec(1, 300, 285, 330, [2, 3])]


def generate_ssd_priors(specs, image_size=300):
    """``box_utils.generate_ssd_priors``: cxcywh, level by level, row-major cells, clamped to [0, 1]."""
    out = []
    for spec in specs:
        scale = image_size / spec.shrinkage
        for j, i in itertools.product(range(spec.feature_map_size), repeat=2):
            cx, cy = (i + 0.5) / scale, (j + 0.5) / scale
            small = spec.box_min / image_size
            big = math.sqrt(spec.box_max * spec.box_min) / image_size
            out += [[cx, cy, small, small], [cx, cy, big, big]]
            for ratio in spec.aspect_ratios:
                r = math.sqrt(ratio)
                out += [[cx, cy, small * r, small / r], [cx, cy, small / r, small * r]]
    return torch.tensor(out).clamp_(0.0, 1.0)


# ============================================================================ by name
def create(name: str, num_classes: int, *, conv4_3_norm: str = "batchnorm", width_mult: float = 1.0) -> PsSSD:
    """pytorch-ssd's ``train_ssd.py --net name`` network (``conv4_3_norm="l2norm"``: its VGG before Sep 2018)."""
    if name == "vgg16-ssd":
        return create_vgg_ssd(num_classes, conv4_3_norm)
    if name == "mb2-ssd-lite":
        return create_mobilenetv2_ssd_lite(num_classes, width_mult)
    return {
        "mb1-ssd": create_mobilenetv1_ssd,
        "mb1-ssd-lite": create_mobilenetv1_ssd_lite,
        "mb3-large-ssd-lite": create_mobilenetv3_large_ssd_lite,
        "mb3-small-ssd-lite": create_mobilenetv3_small_ssd_lite,
    }[name](num_classes)


def priors(name: str) -> torch.Tensor:
    """The priors pytorch-ssd pairs with network ``name`` (its config module's ``priors``)."""
    return generate_ssd_priors(VGG_SPECS if name.startswith("vgg") else MOBILENET_SPECS)
