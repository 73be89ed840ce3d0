"""PostprocessSettings: one value for the SSD inference tail, its checks, its presets, and the op
that takes it apart (``ops.ssd_postprocess`` checks its arguments with the same functions)."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

import ssdfast
from ssdfast import ops
from ssdfast.ops import DISPLAY, EVALUATION, PostprocessSettings

from .conftest import V, gen, grid_priors

FIELDS = ("score_threshold", "iou_threshold", "top_k", "max_detections")


@pytest.mark.parametrize("field, value, message", [
    ("score_threshold", -0.1, r"score_threshold should be in \[0, 1\], got -0.1"),
    ("score_threshold", 1.5, r"score_threshold should be in \[0, 1\], got 1.5"),
    ("score_threshold", math.nan, r"score_threshold should be in \[0, 1\], got nan"),
    ("score_threshold", "high", r"score_threshold should be a number in \[0, 1\], got 'high'"),
    ("score_threshold", True, r"score_threshold should be a number in \[0, 1\], got True"),
    ("iou_threshold", 1.0001, r"iou_threshold should be in \[0, 1\], got 1.0001"),
    ("iou_threshold", -1, r"iou_threshold should be in \[0, 1\], got -1"),
    ("iou_threshold", None, r"iou_threshold should be a number in \[0, 1\], got None"),
    ("top_k", 0, "top_k should be a positive integer, got 0"),
    ("top_k", 2.5, "top_k should be a positive integer, got 2.5"),
    ("top_k", True, "top_k should be a positive integer, got True"),
    ("top_k", "10", "top_k should be a positive integer, got '10'"),
    ("max_detections", -3, "max_detections should be a positive integer, got -3"),
    ("max_detections", math.inf, "max_detections should be a positive integer, got inf"),
    ("max_detections", None, "max_detections should be a positive integer, got None"),
])
def test_each_field_is_checked_and_named(field, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        PostprocessSettings(**{field: value})
    with pytest.raises(ValueError, match=f"^{message}$"):  # replace() checks too
        dataclasses.replace(DISPLAY, **{field: value})


def test_values_at_the_edges_are_kept_as_float_and_int():
    s = PostprocessSettings(score_threshold=0, iou_threshold=1, top_k=5.0, max_detections=torch.tensor(3).item())
    assert (s.score_threshold, s.iou_threshold, s.top_k, s.max_detections) == (0.0, 1.0, 5, 3)
    assert type(s.score_threshold) is float and type(s.iou_threshold) is float and type(s.top_k) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.top_k = 7  # one value: changed with dataclasses.replace, never in place


def test_presets():
    # EVALUATION: pytorch-ssd's evaluation settings (eval_ssd.py); the dataclass defaults are these.
    assert EVALUATION == PostprocessSettings() == PostprocessSettings(0.01, 0.45, 200, 200)
    # DISPLAY: EVALUATION but for a higher score threshold and fewer detections per image.
    assert DISPLAY == dataclasses.replace(EVALUATION, score_threshold=0.4, max_detections=100)
    assert [f.name for f in dataclasses.fields(PostprocessSettings)] == list(FIELDS)
    assert ssdfast.PostprocessSettings is ops.PostprocessSettings is PostprocessSettings


def test_the_op_takes_the_fields_by_name_with_evaluation_defaults():
    """The fields are ssd_postprocess's parameters (same names), its defaults EVALUATION's, and its
    range checks the settings' own (same messages)."""
    import inspect

    params = inspect.signature(ops.ssd_postprocess).parameters
    for name in FIELDS:
        assert params[name].default == getattr(EVALUATION, name), name
        assert inspect.signature(ops.reference.ssd_postprocess).parameters[name].default == getattr(EVALUATION, name)
    g = gen(3)
    priors = grid_priors()
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.1
    scores = torch.softmax(torch.randn(2, priors.shape[0], 4, generator=g) * 3, -1)
    settings = PostprocessSettings(score_threshold=0.05, iou_threshold=0.3, top_k=3, max_detections=5)
    by_name = ops.ssd_postprocess(loc, scores, priors, V, **dataclasses.asdict(settings))
    by_position = ops.reference.ssd_postprocess(loc, scores, priors, V, 0.05, 0.3, 3, 5)
    for a, b in zip(by_name, by_position):
        torch.testing.assert_close(a, b)
    for field, bad in (("iou_threshold", 1.5), ("score_threshold", -1.0), ("top_k", 0), ("max_detections", 2.5)):
        with pytest.raises(ValueError) as from_settings:
            PostprocessSettings(**{field: bad})
        with pytest.raises(ValueError) as from_op:
            ops.ssd_postprocess(loc, scores, priors, V, **{field: bad})
        assert str(from_op.value) == str(from_settings.value)


def test_the_ops_package_lists_every_op_and_loads_torch_only_for_them():
    from ssdfast.ops import wrappers

    assert set(wrappers.__all__) <= set(ops.__all__)
    assert sorted(ops._OPS) == sorted(wrappers.__all__)  # the lazy names are exactly the wrappers
    assert all(callable(getattr(ops, name)) for name in wrappers.__all__)
    code = ("import sys; from ssdfast.ops import DISPLAY, PostprocessSettings; import ssdfast.ops.settings; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
