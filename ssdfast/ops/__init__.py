"""The SSD hot path as ops: matching, box coding, hard negative mining and NMS, and the
post-processing settings (:class:`PostprocessSettings`, its presets ``EVALUATION`` and ``DISPLAY``).

Boxes are ``xyxy`` unless named ``cxcywh``. Priors are ``cxcywh`` normalized to [0, 1]; ground-truth
boxes given with priors, and boxes the ops decode, are in the same normalized coordinates. Box inputs
may be float32, float16 or bfloat16; arithmetic is float32 and results come back in the input dtype.

The ops live in :mod:`ssdfast.ops.wrappers` (argument checks, then the native kernel or its
pure-PyTorch twin in :mod:`ssdfast.ops.reference`; :func:`backend` says which) and are imported when
first used, so that the settings (:mod:`ssdfast.ops.settings`) come without torch: a command line
shows its defaults in ``--help`` before loading anything.
"""
from __future__ import annotations

import importlib

from .settings import DISPLAY, EVALUATION, PostprocessSettings

#: The op wrappers' names (ssdfast.ops.wrappers.__all__), provided here when first used.
_OPS = (
    "backend",
    "box_iou",
    "encode_boxes",
    "decode_boxes",
    "match_priors",
    "ssd_targets",
    "hard_negative_mask",
    "batched_nms",
    "ssd_postprocess",
)

__all__ = [*_OPS, "reference", "PostprocessSettings", "EVALUATION", "DISPLAY"]


def __getattr__(name: str):
    if name in _OPS:
        value = getattr(importlib.import_module(f"{__name__}.wrappers"), name)
    elif name == "reference":
        value = importlib.import_module(f"{__name__}.reference")
    else:
        raise AttributeError(f"module 'ssdfast.ops' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
