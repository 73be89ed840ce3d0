"""Priors: pytorch-ssd's layout and values, counts, specs that round-trip through plain dicts."""
from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from ssdfast.priors import (
    MOBILENET_SSD300_SPEC,
    VGG_SSD300_SPEC,
    VGG_SSD512_SPEC,
    PriorSpec,
    generate_priors,
    scale_prior_spec,
)


def _pytorch_ssd_priors(spec: PriorSpec) -> torch.Tensor:
    """pytorch-ssd's ``generate_ssd_priors`` (vision/utils/box_utils.py), written out as its loops."""
    priors = []
    for fm, shrinkage, min_s, max_s, ratios in zip(
        spec.feature_maps, spec.shrinkage, spec.min_sizes, spec.max_sizes, spec.aspect_ratios
    ):
        scale = spec.image_size / shrinkage
        for j, i in itertools.product(range(fm), repeat=2):
            x_center = (i + 0.5) / scale
            y_center = (j + 0.5) / scale
            w = h = min_s / spec.image_size
            priors.append([x_center, y_center, w, h])
            w = h = math.sqrt(max_s * min_s) / spec.image_size
            priors.append([x_center, y_center, w, h])
            w = h = min_s / spec.image_size
            for ratio in ratios:
                r = math.sqrt(ratio)
                priors.append([x_center, y_center, w * r, h / r])
                priors.append([x_center, y_center, w / r, h * r])
    out = torch.tensor(priors)
    torch.clamp(out, 0.0, 1.0, out=out)
    return out


@pytest.mark.parametrize(
    "spec, count",
    [(VGG_SSD300_SPEC, 8732), (VGG_SSD512_SPEC, 24564), (MOBILENET_SSD300_SPEC, 3000)],
    ids=["vgg300", "vgg512", "mobilenet300"],
)
def test_priors_match_pytorch_ssd_exactly(spec, count):
    priors = generate_priors(spec)
    assert priors.shape == (count, 4) and priors.dtype == torch.float32
    assert spec.num_priors == count
    assert torch.equal(priors, _pytorch_ssd_priors(spec))


def test_prior_layout_first_cell_and_order():
    priors = generate_priors(MOBILENET_SSD300_SPEC)
    c = 0.5 * 16 / 300
    s2, s3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([
        [c, c, 0.2, 0.2],
        [c, c, math.sqrt(60 * 105) / 300, math.sqrt(60 * 105) / 300],
        [c, c, 0.2 * s2, 0.2 / s2],
        [c, c, 0.2 / s2, 0.2 * s2],
        [c, c, 0.2 * s3, 0.2 / s3],
        [c, c, 0.2 / s3, 0.2 * s3],
    ])
    torch.testing.assert_close(priors[:6], expected)
    # the next cell is one step right (x fast), then a new row starts after 19 cells
    assert priors[6, 0] == pytest.approx(1.5 * 16 / 300) and priors[6, 1] == pytest.approx(c)
    assert priors[19 * 6, 0] == pytest.approx(c) and priors[19 * 6, 1] == pytest.approx(1.5 * 16 / 300)
    # the last level is a single cell covering the image
    assert priors[-1, :2].tolist() == pytest.approx([0.5, 0.5])
    assert priors.min() >= 0 and priors.max() <= 1


def test_spec_round_trips_through_plain_dicts():
    for spec in (VGG_SSD300_SPEC, VGG_SSD512_SPEC, MOBILENET_SSD300_SPEC):
        plain = spec.to_dict()
        assert all(isinstance(v, (int, float, bool, list)) for v in plain.values())
        assert PriorSpec.from_dict(plain) == spec
        assert PriorSpec(**dataclasses.asdict(spec)) == spec
    with pytest.raises(ValueError, match="unknown PriorSpec fields"):
        PriorSpec.from_dict({**VGG_SSD300_SPEC.to_dict(), "steps": [1]})


def test_spec_validation():
    with pytest.raises(ValueError, match="one entry per feature map"):
        PriorSpec(300, (19, 10), (16,), (60, 105), (105, 150), ((2,), (2,)))
    with pytest.raises(ValueError, match="positive"):
        PriorSpec(300, (19,), (16,), (-60,), (105,), ((2,),))


def test_scale_prior_spec():
    assert scale_prior_spec(MOBILENET_SSD300_SPEC, 300, (19, 10, 5, 3, 2, 1)) is MOBILENET_SSD300_SPEC
    spec = scale_prior_spec(MOBILENET_SSD300_SPEC, 320, (20, 10, 5, 3, 2, 1))
    assert spec.image_size == 320 and spec.feature_maps == (20, 10, 5, 3, 2, 1)
    assert spec.shrinkage[0] == 16 and spec.min_sizes[0] == pytest.approx(64)
    priors = generate_priors(spec)
    assert priors.shape[0] == (400 + 100 + 25 + 9 + 4 + 1) * 6
    # centers evenly spread: the first level's last center is symmetric to its first
    first = generate_priors(dataclasses.replace(spec, clip=False))[: 400 * 6]
    assert first[:, 0].min() + first[:, 0].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected 6 feature maps"):
        scale_prior_spec(MOBILENET_SSD300_SPEC, 320, (20, 10))
