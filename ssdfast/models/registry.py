"""The networks by name: :data:`MODEL_BUILDERS` (a plain dict of builders), their variants
(:data:`MODEL_OPTIONS`), :func:`create_model` and :func:`model_from_config` (a checkpoint's config)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ..priors import PriorSpec
from .mobilenet import mb1_ssd, mb1_ssd_lite, mb2_ssd_lite, mb3_large_ssd_lite, mb3_small_ssd_lite
from .ssd import BACKBONES, CONV4_3_NORMS, SSD, WIDTH_MULT_NETS, SSDConfig
from .vgg import vgg16_ssd, vgg16_ssd512

__all__ = [
    "MODEL_BUILDERS",
    "MODEL_OPTIONS",
    "DEFAULT_IMAGE_SIZES",
    "list_models",
    "model_options",
    "canonical_name",
    "create_model",
    "model_from_config",
]

#: name -> builder(num_classes, image_size=..., width_mult=..., prior_spec=..., **options) -> SSD
MODEL_BUILDERS: dict[str, Callable[..., SSD]] = {
    "vgg16-ssd": vgg16_ssd,
    "vgg16-ssd512": vgg16_ssd512,
    "mb1-ssd": mb1_ssd,
    "mb1-ssd-lite": mb1_ssd_lite,
    "mb2-ssd-lite": mb2_ssd_lite,
    "mb3-large-ssd-lite": mb3_large_ssd_lite,
    "mb3-small-ssd-lite": mb3_small_ssd_lite,
}

#: name -> {option: its values, the default first}: the variants ``create_model(name, n, **options)`` builds.
MODEL_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "vgg16-ssd": {"conv4_3_norm": CONV4_3_NORMS},
    "vgg16-ssd512": {"conv4_3_norm": CONV4_3_NORMS},
    "mb1-ssd": {},
    "mb1-ssd-lite": {},
    "mb2-ssd-lite": {"backbone": BACKBONES},
    "mb3-large-ssd-lite": {"backbone": BACKBONES},
    "mb3-small-ssd-lite": {"backbone": BACKBONES},
}

DEFAULT_IMAGE_SIZES: dict[str, int] = {name: 300 for name in MODEL_BUILDERS} | {"vgg16-ssd512": 512}


def list_models() -> list[str]:
    """The network names ``create_model`` accepts."""
    return list(MODEL_BUILDERS)


def model_options(name: str) -> dict[str, tuple[str, ...]]:
    """The options network ``name`` takes besides ``width_mult`` / ``image_size``: ``{option: values}``,
    the default value first (e.g. ``{"conv4_3_norm": ("batchnorm", "l2norm")}`` for vgg16-ssd)."""
    key = canonical_name(name)
    if key not in MODEL_OPTIONS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(MODEL_OPTIONS)}")
    return dict(MODEL_OPTIONS[key])


def _resolve_options(key: str, options: Mapping[str, Any]) -> dict[str, str]:
    """``options`` checked against network ``key``'s, lower-cased, defaults filled in. An option
    given as None means the default (so a command line can pass all of them for any network)."""
    allowed = MODEL_OPTIONS[key]
    known = {o for table in MODEL_OPTIONS.values() for o in table}
    out = {option: values[0] for option, values in allowed.items()}
    for option, value in options.items():
        if option not in known:
            raise TypeError(f"create_model() got an unexpected keyword argument {option!r}")
        if value is None:
            continue
        if option not in allowed:
            has = [n for n, table in MODEL_OPTIONS.items() if option in table]
            raise ValueError(f"{key} has no option {option} (only {', '.join(has)} do), got {option}={value!r}")
        v = str(value).strip().lower()
        if v not in allowed[option]:
            raise ValueError(f"{key}: {option} should be one of {', '.join(allowed[option])}, got {value!r}")
        out[option] = v
    return out


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
    **options: str | None,
) -> SSD:
    """Build network ``name`` for ``num_classes`` classes (background included), randomly initialised.

    Args:
        name: one of :func:`list_models`.
        num_classes: classes including the background (class 0), >= 2.
        width_mult: MobileNet width multiplier (mb2-ssd-lite, mb3-*-ssd-lite only; None = 1.0).
        image_size: side of the square input; default 300 (512 for vgg16-ssd512).
        prior_spec: use these priors instead of the default ones (e.g. a checkpoint's); their
            feature maps must match the network's at ``image_size``.
        options: the network's variant (:func:`model_options`): ``conv4_3_norm="batchnorm" |
            "l2norm"`` (vgg16-ssd, vgg16-ssd512), ``backbone="pytorch-ssd" | "torchvision"``
            (mb2-ssd-lite, mb3-*-ssd-lite). Default (or None): pytorch-ssd's network.

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
    if width_mult != 1.0 and key not in WIDTH_MULT_NETS:
        raise ValueError(f"{key} has no width multiplier (only {', '.join(WIDTH_MULT_NETS)}), got {width_mult}")
    resolved = _resolve_options(key, options)
    if image_size is None:
        image_size = prior_spec.image_size if prior_spec is not None else DEFAULT_IMAGE_SIZES[key]
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 32:
        raise ValueError(f"image_size should be an integer >= 32, got {image_size!r}")
    return MODEL_BUILDERS[key](int(num_classes), image_size=int(image_size), width_mult=width_mult,
                               prior_spec=prior_spec, **resolved)


def model_from_config(config: SSDConfig | Mapping[str, Any]) -> SSD:
    """Rebuild the network a config describes (e.g. a checkpoint's), priors from its ``prior_spec``.

    A config dict written before ``conv4_3_norm`` / ``backbone`` existed rebuilds the variant ssdfast
    built then (see :meth:`SSDConfig.from_dict`).
    """
    cfg = config if isinstance(config, SSDConfig) else SSDConfig.from_dict(config)
    model = create_model(cfg.name, cfg.num_classes, cfg.width_mult, cfg.image_size, prior_spec=cfg.prior_spec,
                         **cfg.options)
    # keeps the stored mean / std / variances; the options as built (a None in cfg meant the default)
    model.config = dataclasses.replace(cfg, conv4_3_norm=model.config.conv4_3_norm, backbone=model.config.backbone)
    return model
