"""Prior (default box) generation, with pytorch-ssd's layout.

A :class:`PriorSpec` describes the priors of an SSD network: for each feature map (level) its size,
its shrinkage (the image pixels per cell used to place the centers), a small and a large box size in
pixels and the aspect ratios. :func:`generate_priors` turns it into ``Tensor[P, 4]`` priors in
``cxcywh`` normalized to [0, 1], in the order the network's heads produce them: level by level, then
cell by cell in row-major order (y, then x), then anchor by anchor. Each cell has
``2 + 2 * len(aspect_ratios)`` anchors, in pytorch-ssd's order::

    (min, min), (sqrt(min * max), sqrt(min * max)),
    then for each ratio r: (min * sqrt(r), min / sqrt(r)), (min / sqrt(r), min * sqrt(r))

(widths and heights in pixels, divided by ``image_size``). Centers are ``(i + 0.5) * shrinkage /
image_size``. With ``clip`` the priors are clamped to [0, 1] (as pytorch-ssd does).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "PriorSpec",
    "generate_priors",
    "VGG_SSD300_SPEC",
    "VGG_SSD512_SPEC",
    "MOBILENET_SSD300_SPEC",
    "scale_prior_spec",
]


def _tuple(values: Sequence[Any], kind: type) -> tuple:
    return tuple(kind(v) for v in values)


@dataclass(frozen=True)
class PriorSpec:
    """Where the priors of an SSD network are and how big they are.

    Attributes:
        image_size: side of the (square) network input, pixels.
        feature_maps: side of each feature map, one per level (e.g. ``(19, 10, 5, 3, 2, 1)``).
        shrinkage: pixels per cell used to place the centers, one per level (pytorch-ssd's
            ``shrinkage``; the stride of the feature map, or ``image_size / feature_map``).
        min_sizes: side of the small square box of each level, pixels.
        max_sizes: the large square box of each level has side ``sqrt(min_size * max_size)``.
        aspect_ratios: per level, the ratios r > 1 giving the boxes ``min * sqrt(r) x min / sqrt(r)``
            and its transpose.
        clip: clamp the priors to [0, 1].
    """

    image_size: int
    feature_maps: tuple[int, ...]
    shrinkage: tuple[float, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    clip: bool = True

    def __post_init__(self) -> None:
        # Accept lists (e.g. from a checkpoint's plain dict) and store tuples, so the spec is hashable.
        set_ = object.__setattr__
        set_(self, "image_size", int(self.image_size))
        set_(self, "feature_maps", _tuple(self.feature_maps, int))
        set_(self, "shrinkage", _tuple(self.shrinkage, _number))
        set_(self, "min_sizes", _tuple(self.min_sizes, _number))
        set_(self, "max_sizes", _tuple(self.max_sizes, _number))
        set_(self, "aspect_ratios", tuple(_tuple(r, _number) for r in self.aspect_ratios))
        set_(self, "clip", bool(self.clip))
        n = len(self.feature_maps)
        if self.image_size <= 0:
            raise ValueError(f"image_size should be positive, got {self.image_size}")
        for name in ("shrinkage", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} should have one entry per feature map ({n}), got {len(getattr(self, name))}"
                )
        if any(f <= 0 for f in self.feature_maps):
            raise ValueError(f"feature_maps should be positive, got {self.feature_maps}")
        for name in ("shrinkage", "min_sizes", "max_sizes"):
            if not all(math.isfinite(v) and v > 0 for v in getattr(self, name)):
                raise ValueError(f"{name} should be positive numbers, got {getattr(self, name)}")
        if not all(math.isfinite(r) and r > 0 for level in self.aspect_ratios for r in level):
            raise ValueError(f"aspect_ratios should be positive numbers, got {self.aspect_ratios}")

    @property
    def num_levels(self) -> int:
        return len(self.feature_maps)

    @property
    def anchors_per_location(self) -> tuple[int, ...]:
        """Boxes per feature-map cell, per level: ``2 + 2 * len(aspect_ratios)``."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(f * f * a for f, a in zip(self.feature_maps, self.anchors_per_location))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (ints, floats, bools, lists): safe for JSON and ``weights_only`` loads."""
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PriorSpec:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PriorSpec fields {sorted(unknown)}")
        return cls(**dict(d))


def _number(v: Any) -> float | int:
    """Ints stay ints (so the default specs round-trip exactly), anything else becomes a float."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return v if isinstance(v, int) else float(v)


def generate_priors(spec: PriorSpec) -> Tensor:
    """Priors of ``spec`` as ``Tensor[P, 4]`` float32, ``cxcywh`` normalized (see the module doc).

    Computed in float64 and rounded once, as pytorch-ssd's ``generate_ssd_priors`` (so the values
    agree bit for bit).
    """
    levels = []
    size = float(spec.image_size)
    for fm, shrink, min_s, max_s, ratios in zip(
        spec.feature_maps, spec.shrinkage, spec.min_sizes, spec.max_sizes, spec.aspect_ratios
    ):
        scale = size / shrink
        idx = torch.arange(fm, dtype=torch.float64)
        centers = (idx + 0.5) / scale
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")  # row-major: y slow, x fast
        cxcy = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=1)  # [fm*fm, 2]
        w_min = min_s / size
        w_big = math.sqrt(max_s * min_s) / size
        wh = [(w_min, w_min), (w_big, w_big)]
        for r in ratios:
            s = math.sqrt(r)
            wh += [(w_min * s, w_min / s), (w_min / s, w_min * s)]
        wh_t = torch.tensor(wh, dtype=torch.float64)  # [A, 2]
        a = wh_t.shape[0]
        level = torch.cat((cxcy[:, None, :].expand(-1, a, 2), wh_t[None].expand(cxcy.shape[0], a, 2)), dim=2)
        levels.append(level.reshape(-1, 4))
    priors = torch.cat(levels).to(torch.float32) if levels else torch.zeros(0, 4)
    if spec.clip:
        priors.clamp_(0.0, 1.0)
    return priors


def scale_prior_spec(spec: PriorSpec, image_size: int, feature_maps: Sequence[int]) -> PriorSpec:
    """``spec`` moved to another input size: box sizes scale with the image, centers follow the maps.

    At ``spec.image_size`` with the same feature maps this returns ``spec`` unchanged (pytorch-ssd's
    exact priors). Otherwise each level's shrinkage becomes ``image_size / feature_map`` (centers
    evenly spread over the image) and the box sizes are multiplied by ``image_size / spec.image_size``,
    so the priors cover the same fraction of the image as at the default size.
    """
    feature_maps = tuple(int(f) for f in feature_maps)
    if len(feature_maps) != spec.num_levels:
        raise ValueError(f"expected {spec.num_levels} feature maps, got {len(feature_maps)}: {feature_maps}")
    if image_size == spec.image_size and feature_maps == spec.feature_maps:
        return spec
    k = image_size / spec.image_size
    return PriorSpec(
        image_size=image_size,
        feature_maps=feature_maps,
        shrinkage=tuple(image_size / f for f in feature_maps),
        min_sizes=tuple(s * k for s in spec.min_sizes),
        max_sizes=tuple(s * k for s in spec.max_sizes),
        aspect_ratios=spec.aspect_ratios,
        clip=spec.clip,
    )


#: vgg16-ssd (SSD300), pytorch-ssd's vgg_ssd_config: 8732 priors.
VGG_SSD300_SPEC = PriorSpec(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    shrinkage=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
)

#: vgg16-ssd512, the original SSD512 (VOC) layout: 24564 priors.
VGG_SSD512_SPEC = PriorSpec(
    image_size=512,
    feature_maps=(64, 32, 16, 8, 4, 2, 1),
    shrinkage=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
)

#: The MobileNet SSD / SSD-Lite family, pytorch-ssd's mobilenetv1_ssd_config: 3000 priors.
MOBILENET_SSD300_SPEC = PriorSpec(
    image_size=300,
    feature_maps=(19, 10, 5, 3, 2, 1),
    shrinkage=(16, 32, 64, 100, 150, 300),
    min_sizes=(60, 105, 150, 195, 240, 285),
    max_sizes=(105, 150, 195, 240, 285, 330),
    aspect_ratios=((2, 3),) * 6,
    clip=True,
)
