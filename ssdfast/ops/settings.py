"""The SSD inference tail's settings as one value, :class:`PostprocessSettings`, its two presets and
the range checks the op wrappers share.

>>> from ssdfast.ops import DISPLAY, EVALUATION, PostprocessSettings
>>> PostprocessSettings(score_threshold=0.5)   # the other fields as EVALUATION's
>>> dataclasses.replace(DISPLAY, max_detections=20)

The fields have the names of :func:`ssdfast.ops.ssd_postprocess`'s parameters, and the value
travels whole from the command lines through :class:`ssdfast.Detector`, evaluation and export to
that op. This module imports nothing heavy (no torch), so command lines can show the defaults in
``--help`` before loading anything.
"""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PostprocessSettings", "EVALUATION", "DISPLAY", "check_fraction", "check_positive_int"]


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1]; else ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} should be a number in [0, 1], got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} should be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise ValueError(f"{name} should be in [0, 1], got {value}")
    return number


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (an integral float such as 5.0 is accepted; a bool is not); else
    ValueError naming ``name``."""
    try:
        integral = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        integral = False
    if not integral or value < 1:
        raise ValueError(f"{name} should be a positive integer, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class PostprocessSettings:
    """How :func:`ssdfast.ops.ssd_postprocess` turns an SSD's outputs into detections.

    Attributes:
        score_threshold: a candidate needs a class probability greater than this, in [0, 1].
        iou_threshold: NMS within a class drops a box whose IoU with a kept, higher-scoring box of
            its class is greater than this, in [0, 1].
        top_k: candidates kept per class before NMS (so also the most detections of one class).
        max_detections: detections kept per image after merging the classes.

    The defaults are :data:`EVALUATION`'s; :data:`DISPLAY` is the preset for showing detections.
    Values are checked (ValueError naming the field) and stored as float / int.
    """

    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    top_k: int = 200
    max_detections: int = 200

    def __post_init__(self) -> None:
        for name, check in (("score_threshold", check_fraction), ("iou_threshold", check_fraction),
                            ("top_k", check_positive_int), ("max_detections", check_positive_int)):
            object.__setattr__(self, name, check(name, getattr(self, name)))


#: pytorch-ssd's evaluation settings (eval_ssd.py, its predictor): what mAP is measured with.
EVALUATION = PostprocessSettings()
#: For showing detections: ssdfast-detect's, the Detector's and ssdfast-export's defaults.
DISPLAY = dataclasses.replace(EVALUATION, score_threshold=0.4, max_detections=100)
