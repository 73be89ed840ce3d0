"""SSD and SSD-Lite networks with pytorch-ssd's names, layouts and priors.

>>> from ssdfast.models import create_model, list_models
>>> model = create_model("mb2-ssd-lite", num_classes=21)             # 300 x 300, 3000 priors
>>> confidences, locations = model(images)                            # [B, 3000, 21], [B, 3000, 4]

``create_model(name, num_classes, width_mult=1.0, image_size=None)`` builds any network of
:func:`list_models` at its default size or another one: the feature-map sizes are read off the
network at that size and the priors follow (:func:`ssdfast.priors.scale_prior_spec`).
Weights: :func:`load_base_net` (ImageNet backbones, torchvision or pytorch-ssd files) and
:func:`load_pretrained_ssd` (a whole pytorch-ssd or ssdfast detector, any class count).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ..priors import PriorSpec
from .mobilenet import mb1_ssd, mb1_ssd_lite, mb2_ssd_lite, mb3_large_ssd_lite, mb3_small_ssd_lite
from .pytorch_ssd import model_from_pytorch_ssd
from .ssd import SSD, SSDConfig
from .vgg import vgg16_ssd, vgg16_ssd512
from .weights import LoadReport, load_base_net, load_pretrained_ssd

__all__ = [
    "SSD",
    "SSDConfig",
    "MODEL_BUILDERS",
    "DEFAULT_IMAGE_SIZES",
    "list_models",
    "canonical_name",
    "create_model",
    "model_from_config",
    "load_base_net",
    "load_pretrained_ssd",
    "LoadReport",
    "model_from_pytorch_ssd",
]

#: name -> builder(num_classes, image_size=..., width_mult=..., prior_spec=...) -> SSD
MODEL_BUILDERS: dict[str, Callable[..., SSD]] = {
    "vgg16-ssd": vgg16_ssd,
    "vgg16-ssd512": vgg16_ssd512,
    "mb1-ssd": mb1_ssd,
    "mb1-ssd-lite": mb1_ssd_lite,
    "mb2-ssd-lite": mb2_ssd_lite,
    "mb3-large-ssd-lite": mb3_large_ssd_lite,
    "mb3-small-ssd-lite": mb3_small_ssd_lite,
}

DEFAULT_IMAGE_SIZES: dict[str, int] = {name: 300 for name in MODEL_BUILDERS} | {"vgg16-ssd512": 512}

_WIDTH_MULT_NETS = ("mb2-ssd-lite", "mb3-large-ssd-lite", "mb3-small-ssd-lite")


def list_models() -> list[str]:
    """The network names ``create_model`` accepts."""
    return list(MODEL_BUILDERS)


def canonical_name(name: str) -> str:
    """A network name as :func:`list_models` spells it: ``MB2_SSD_Lite`` -> ``mb2-ssd-lite``."""
    return str(name).strip().lower().replace("_", "-")


def create_model(
    name: str,
    num_classes: int,
    width_mult: float | None = 1.0,
    image_size: int | None = None,
    *,
    prior_spec: PriorSpec | None = None,
) -> SSD:
    """Build network ``name`` for ``num_classes`` classes (background included), randomly initialised.

    Args:
        name: one of :func:`list_models`.
        num_classes: classes including the background (class 0), >= 2.
        width_mult: MobileNet width multiplier (mb2-ssd-lite, mb3-*-ssd-lite only; None = 1.0).
        image_size: side of the square input; default 300 (512 for vgg16-ssd512).
        prior_spec: use these priors instead of the default ones (e.g. a checkpoint's); their
            feature maps must match the network's at ``image_size``.

    Returns:
        an :class:`SSD` whose ``forward(images[B, 3, S, S])`` gives
        ``(confidences[B, P, num_classes], locations[B, P, 4])``, with ``.priors`` and ``.config``.
    """
    key = canonical_name(name)
    if key not in MODEL_BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(MODEL_BUILDERS)}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes should be an integer >= 2 (background included), got {num_classes!r}")
    width_mult = 1.0 if width_mult is None else float(width_mult)
    if not width_mult > 0:
        raise ValueError(f"width_mult should be positive, got {width_mult}")
    if width_mult != 1.0 and key not in _WIDTH_MULT_NETS:
        raise ValueError(f"{key} has no width multiplier (only {', '.join(_WIDTH_MULT_NETS)}), got {width_mult}")
    if image_size is None:
        image_size = prior_spec.image_size if prior_spec is not None else DEFAULT_IMAGE_SIZES[key]
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 32:
        raise ValueError(f"image_size should be an integer >= 32, got {image_size!r}")
    return MODEL_BUILDERS[key](int(num_classes), image_size=int(image_size), width_mult=width_mult, prior_spec=prior_spec)


def model_from_config(config: SSDConfig | Mapping[str, Any]) -> SSD:
    """Rebuild the network a config describes (e.g. a checkpoint's), priors from its ``prior_spec``."""
    cfg = config if isinstance(config, SSDConfig) else SSDConfig.from_dict(config)
    model = create_model(cfg.name, cfg.num_classes, cfg.width_mult, cfg.image_size, prior_spec=cfg.prior_spec)
    model.config = dataclasses.replace(cfg)  # keeps the stored mean / std / variances
    return model
