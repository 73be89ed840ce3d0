"""The SSD module shared by every network: base net + extras + per-level heads, and its config.

Module names follow pytorch-ssd (``base_net``, ``source_layer_add_ons``, ``extras``,
``classification_headers``, ``regression_headers``) so its checkpoints map onto ours key by key.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..priors import PriorSpec, generate_priors, scale_prior_spec

__all__ = [
    "SSD",
    "SSDConfig",
    "CONV4_3_NORMS",
    "BACKBONES",
    "SourceLayer",
    "L2Norm",
    "SeparableConv2d",
    "init_xavier",
    "probe_feature_maps",
    "assemble_ssd",
    "ssd_head",
    "ssdlite_head",
]


#: vgg16-ssd(512)'s norm at conv4_3, the first feature map: pytorch-ssd's ``BatchNorm2d(512)`` (its
#: VGG since Sep 2018; the default) or the SSD paper's L2Norm with a learned per-channel scale
#: (pytorch-ssd's VGG before that, and ssdfast's before this option existed).
CONV4_3_NORMS = ("batchnorm", "l2norm")
#: mb2-ssd-lite / mb3-*-ssd-lite backbones: pytorch-ssd's MobileNets (the default: its files load)
#: or torchvision's (their ImageNet weights load). For MobileNetV2 the two differ only in how a
#: width multiplier rounds channel counts; for MobileNetV3 they are different networks.
BACKBONES = ("pytorch-ssd", "torchvision")
#: The networks with a width multiplier (pytorch-ssd's --mb2-width-mult), the ones with a backbone choice.
WIDTH_MULT_NETS = ("mb2-ssd-lite", "mb3-large-ssd-lite", "mb3-small-ssd-lite")

#: What networks saved before ``conv4_3_norm`` / ``backbone`` existed were built with: a config
#: without those fields (an older ssdfast checkpoint) rebuilds into the same network.
_LEGACY_OPTIONS: dict[str, dict[str, str]] = {
    "vgg16-ssd": {"conv4_3_norm": "l2norm"},
    "vgg16-ssd512": {"conv4_3_norm": "l2norm"},
    "mb2-ssd-lite": {"backbone": "torchvision"},
    "mb3-large-ssd-lite": {"backbone": "torchvision"},
    "mb3-small-ssd-lite": {"backbone": "torchvision"},
}


@dataclass
class SSDConfig:
    """Everything needed to rebuild a network and feed it (stored in every checkpoint).

    Attributes:
        name: network name (see ``ssdfast.models.list_models()``).
        num_classes: classes including the background (class 0).
        image_size: side of the square network input, pixels.
        mean, std: per-channel normalization of RGB images scaled to [0, 1]:
            ``(image / 255 - mean) / std``.
        prior_spec: the priors (see :mod:`ssdfast.priors`).
        variances: box-coding variances (center, size).
        width_mult: width multiplier of the MobileNet backbones (1.0 elsewhere).
        antialias: how images are resized to ``image_size``: with antialiasing (torchvision's
            default, what ssdfast trains with) or, when False, plain bilinear as OpenCV's
            ``cv2.resize`` does (what pytorch-ssd trained its models with: a model loaded from a
            pytorch-ssd file gets False, so it sees the images it was trained on).
        conv4_3_norm: vgg16-ssd(512) only (None elsewhere): ``"batchnorm"`` or ``"l2norm"``
            (see :data:`CONV4_3_NORMS`).
        backbone: mb2-ssd-lite / mb3-*-ssd-lite only (None elsewhere): ``"pytorch-ssd"`` or
            ``"torchvision"`` (see :data:`BACKBONES`).
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    prior_spec: PriorSpec
    variances: tuple[float, float] = (0.1, 0.2)
    width_mult: float = 1.0
    antialias: bool = True
    conv4_3_norm: str | None = None
    backbone: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prior_spec, Mapping):
            self.prior_spec = PriorSpec.from_dict(self.prior_spec)
        self.num_classes = int(self.num_classes)
        self.image_size = int(self.image_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.variances = tuple(float(v) for v in self.variances)
        self.width_mult = float(self.width_mult)
        self.antialias = bool(self.antialias)
        for name, allowed in (("conv4_3_norm", CONV4_3_NORMS), ("backbone", BACKBONES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name} should be one of {', '.join(allowed)} (or None), got {value!r}")
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes should count the background and at least one class (>= 2), got {self.num_classes}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise ValueError(f"mean and std should have 3 values (std > 0), got {self.mean} and {self.std}")
        if len(self.variances) != 2 or not all(v > 0 for v in self.variances):
            raise ValueError(f"variances should be two positive numbers, got {self.variances}")
        if self.prior_spec.image_size != self.image_size:
            raise ValueError(
                f"prior_spec.image_size ({self.prior_spec.image_size}) differs from image_size ({self.image_size})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, float, lists, dicts): what checkpoints store."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["variances"] = list(self.variances)
        d["prior_spec"] = self.prior_spec.to_dict()
        return d

    @property
    def options(self) -> dict[str, str]:
        """The variant options that built the network (``create_model(name, n, **config.options)``)."""
        return {k: v for k, v in (("conv4_3_norm", self.conv4_3_norm), ("backbone", self.backbone)) if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SSDConfig:
        """Inverse of :meth:`to_dict` (also accepts ``dataclasses.asdict`` output).

        A dict without ``conv4_3_norm`` / ``backbone`` (written before they existed) gets the
        variant ssdfast built then: L2Norm for vgg16-ssd(512), torchvision's MobileNets for
        mb2-ssd-lite and mb3-*-ssd-lite.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SSDConfig fields {sorted(unknown)}")
        d = dict(d)
        for key, value in _LEGACY_OPTIONS.get(str(d.get("name")), {}).items():
            d.setdefault(key, value)
        return cls(**d)


@dataclass(frozen=True)
class SourceLayer:
    """Where a feature map leaves the base net (pytorch-ssd's ``source_layer_indexes`` entries).

    The feature map is the output of ``base_net[:index]`` (after ``add_on``, an index into
    ``source_layer_add_ons``, when given). With ``sub``, it is taken inside block ``base_net[index]``
    instead: after the first ``split`` layers of ``getattr(base_net[index], sub)`` (pytorch-ssd's
    ``GraphPath``); the rest of the block then runs, so the block must not be residual.
    """

    index: int
    add_on: int | None = None
    sub: str | None = None
    split: int = 0


def _extract_features(
    base_net: nn.Module,
    sources: Sequence[SourceLayer],
    extras: nn.ModuleList,
    add_ons: nn.ModuleList,
    x: Tensor,
) -> list[Tensor]:
    features: list[Tensor] = []
    start = 0
    for src in sources:
        for i in range(start, src.index):
            x = base_net[i](x)
        if src.sub is not None:
            block = getattr(base_net[src.index], src.sub)
            for i in range(src.split):
                x = block[i](x)
            features.append(x)
            for i in range(src.split, len(block)):
                x = block[i](x)
            start = src.index + 1
        else:
            features.append(add_ons[src.add_on](x) if src.add_on is not None else x)
            start = src.index
    for i in range(start, len(base_net)):
        x = base_net[i](x)
    for extra in extras:
        x = extra(x)
        features.append(x)
    return features


class _Features(nn.Module):
    """The feature extractor alone (used to probe feature-map shapes on the meta device)."""

    def __init__(
        self, base_net: nn.Module, sources: Sequence[SourceLayer], extras: nn.ModuleList, add_ons: nn.ModuleList
    ):
        super().__init__()
        self.base_net = base_net
        self.extras = extras
        self.source_layer_add_ons = add_ons
        self.sources = tuple(sources)

    def forward(self, x: Tensor) -> list[Tensor]:
        return _extract_features(self.base_net, self.sources, self.extras, self.source_layer_add_ons, x)


def probe_feature_maps(
    base_net: nn.Module,
    sources: Sequence[SourceLayer],
    extras: nn.ModuleList,
    add_ons: nn.ModuleList,
    image_size: int,
) -> list[tuple[int, int]]:
    """``(channels, side)`` of each feature map for a square input of ``image_size`` pixels.

    Runs the feature extractor on meta tensors (no memory, no arithmetic), so it costs nothing even
    for vgg16-ssd512. Raises ValueError when the input is too small for the network.
    """
    probe = _Features(base_net, sources, extras, add_ons)
    state = {k: torch.empty_like(v, device="meta") for k, v in probe.state_dict(keep_vars=True).items()}
    was_training = probe.training
    probe.eval()  # batch-norm in training mode refuses a 1x1 map with batch 1
    try:
        x = torch.empty(1, 3, image_size, image_size, device="meta")
        feats = torch.func.functional_call(probe, state, (x,))
    except RuntimeError as exc:
        raise ValueError(f"image_size {image_size} is too small for this network: {exc}") from exc
    finally:
        probe.train(was_training)
    out = []
    for f in feats:
        if f.shape[2] != f.shape[3] or f.shape[2] < 1:
            raise ValueError(f"image_size {image_size} gives a feature map of shape {tuple(f.shape[1:])}")
        out.append((int(f.shape[1]), int(f.shape[2])))
    return out


def SeparableConv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
    batch_norm: bool = True,
    activation: Callable[[], nn.Module] = nn.ReLU6,
) -> nn.Sequential:
    """Depthwise ``kernel_size`` conv (+ BN) + activation, then pointwise 1x1 conv (pytorch-ssd's
    ``SeperableConv2d``; keys ``0`` dw, ``1`` BN, ``3`` pw with BN, ``0`` dw, ``2`` pw without)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(in_channels))
    layers += [activation(), nn.Conv2d(in_channels, out_channels, kernel_size=1)]
    return nn.Sequential(*layers)


def init_xavier(module: nn.Module) -> None:
    """Xavier-uniform conv weights and zero biases (pytorch-ssd / torchvision SSD head init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


class L2Norm(nn.Module):
    """Channel-wise L2 normalization with a learned per-channel scale (SSD's conv4_3 norm).

    Same parameter name as pytorch-ssd's ``ScaledL2Norm`` (``scale``), so its checkpoints load.
    """

    def __init__(self, channels: int, initial_scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.initial_scale = float(initial_scale)
        self.eps = eps
        self.scale = nn.Parameter(torch.full((channels,), self.initial_scale))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.initial_scale)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(x, p=2.0, dim=1, eps=self.eps) * self.scale.view(1, -1, 1, 1)


class SSD(nn.Module):
    """Single Shot MultiBox Detector: a base net, extra layers and a conv head per feature map.

    Built by :func:`ssdfast.models.create_model`; the parts are given, not configured here.

    Attributes:
        base_net, source_layer_add_ons, extras, classification_headers, regression_headers: the
            parts, named as in pytorch-ssd.
        priors: ``Tensor[P, 4]`` cxcywh normalized (a buffer, not saved in the state dict: it is
            rebuilt from ``config.prior_spec``).
        config: the :class:`SSDConfig` that built the network.
    """

    priors: Tensor

    def __init__(
        self,
        base_net: nn.Module,
        sources: Sequence[SourceLayer],
        extras: nn.ModuleList,
        classification_headers: nn.ModuleList,
        regression_headers: nn.ModuleList,
        config: SSDConfig,
        source_layer_add_ons: nn.ModuleList | None = None,
    ):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.base_net = base_net
        self.sources = tuple(sources)
        self.source_layer_add_ons = source_layer_add_ons if source_layer_add_ons is not None else nn.ModuleList()
        self.extras = extras
        self.classification_headers = classification_headers
        self.regression_headers = regression_headers
        levels = len(self.sources) + len(self.extras)
        if not (len(classification_headers) == len(regression_headers) == levels == config.prior_spec.num_levels):
            raise ValueError(
                f"the network has {levels} feature maps, {len(classification_headers)} classification heads, "
                f"{len(regression_headers)} regression heads and {config.prior_spec.num_levels} prior levels"
            )
        self.register_buffer("priors", generate_priors(config.prior_spec), persistent=False)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # .half() / .to(bfloat16) cast buffers too: keep the priors float32 (fp16 priors are off by ~1e-3).
        super()._apply(fn, recurse)
        if self.priors.dtype != torch.float32:
            self.priors = generate_priors(self.config.prior_spec).to(self.priors.device)
        return self

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """Feature maps ``[B, C_l, H_l, W_l]``, one per level."""
        return _extract_features(self.base_net, self.sources, self.extras, self.source_layer_add_ons, images)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images[B, 3, H, W]`` normalized -> ``(confidences[B, P, C] logits, locations[B, P, 4])``.

        ``locations`` are SSD offsets relative to ``self.priors`` (decode with
        ``ssdfast.ops.decode_boxes(locations, priors, config.variances)``).
        """
        confidences = []
        locations = []
        features = self.extract_features(images)
        for x, cls_head, reg_head in zip(features, self.classification_headers, self.regression_headers):
            conf = cls_head(x)
            loc = reg_head(x)
            confidences.append(conf.permute(0, 2, 3, 1).reshape(conf.shape[0], -1, self.num_classes))
            locations.append(loc.permute(0, 2, 3, 1).reshape(loc.shape[0], -1, 4))
        return torch.cat(confidences, 1), torch.cat(locations, 1)

    def extra_repr(self) -> str:
        cfg = self.config
        options = "".join(f", {k}={v!r}" for k, v in cfg.options.items())
        return (f"name={cfg.name!r}{options}, num_classes={self.num_classes}, image_size={cfg.image_size}, "
                f"priors={self.priors.shape[0]}")


HeadFactory = Callable[[int, int, bool], nn.Module]


def ssd_head(in_channels: int, out_channels: int, last: bool) -> nn.Module:
    """SSD head: a 3x3 conv (pytorch-ssd uses it on every level, the 1x1 map included)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def ssdlite_head(batch_norm: bool = True) -> HeadFactory:
    """SSD-Lite head: depthwise-separable 3x3 conv, and a plain 1x1 conv on the last level."""

    def make(in_channels: int, out_channels: int, last: bool) -> nn.Module:
        if last:
            return nn.Conv2d(in_channels, out_channels, kernel_size=1)
        return SeparableConv2d(in_channels, out_channels, 3, padding=1, batch_norm=batch_norm,
                               activation=nn.ReLU6 if batch_norm else nn.ReLU)

    return make


def assemble_ssd(
    *,
    name: str,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    default_spec: PriorSpec,
    base_net: nn.Module,
    sources: Sequence[SourceLayer],
    extras: nn.ModuleList,
    make_head: HeadFactory,
    add_ons: nn.ModuleList | None = None,
    width_mult: float = 1.0,
    prior_spec: PriorSpec | None = None,
    variances: Sequence[float] = (0.1, 0.2),
    conv4_3_norm: str | None = None,
    backbone: str | None = None,
) -> SSD:
    """Build an :class:`SSD` from its backbone parts: heads sized from the probed feature maps.

    The feature-map sizes come from the network itself at ``image_size``; the priors are
    ``default_spec`` moved to that size (:func:`ssdfast.priors.scale_prior_spec`) unless
    ``prior_spec`` is given (e.g. the one stored in a checkpoint).
    """
    add_ons = add_ons if add_ons is not None else nn.ModuleList()
    maps = probe_feature_maps(base_net, sources, extras, add_ons, image_size)
    sides = tuple(side for _, side in maps)
    if prior_spec is None:
        if len(sides) != default_spec.num_levels:
            raise ValueError(
                f"{name}: the network has {len(sides)} feature maps, its prior spec {default_spec.num_levels}"
            )
        prior_spec = scale_prior_spec(default_spec, image_size, sides)
    if prior_spec.feature_maps != sides or prior_spec.image_size != image_size:
        raise ValueError(
            f"{name} at image_size {image_size} has feature maps {sides}, but the prior spec has "
            f"{prior_spec.feature_maps} at image_size {prior_spec.image_size}"
        )
    anchors = prior_spec.anchors_per_location
    last = len(maps) - 1
    channels = [c for c, _ in maps]
    cls_heads = nn.ModuleList(make_head(c, a * num_classes, i == last)
                              for i, (c, a) in enumerate(zip(channels, anchors)))
    reg_heads = nn.ModuleList(make_head(c, a * 4, i == last) for i, (c, a) in enumerate(zip(channels, anchors)))
    for part in (extras, cls_heads, reg_heads):
        init_xavier(part)
    config = SSDConfig(
        name=name,
        num_classes=num_classes,
        image_size=image_size,
        mean=tuple(mean),
        std=tuple(std),
        prior_spec=prior_spec,
        variances=tuple(variances),
        width_mult=width_mult,
        conv4_3_norm=conv4_3_norm,
        backbone=backbone,
    )
    return SSD(base_net, sources, extras, cls_heads, reg_heads, config, add_ons)
