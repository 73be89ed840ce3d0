"""Shared inputs for the op tests: random and adversarial boxes, priors and ground truth."""
from __future__ import annotations

import pytest
import torch

from ssdfast import ops
from ssdfast.ops import sample_cases
from ssdfast.ops.sample_cases import make_generator as gen  # noqa: F401  (the op tests' seeded generator)
from ssdfast.ops.sample_cases import make_small_priors as grid_priors  # noqa: F401  (252 small priors)

#: SSD's default box-coding variances.
V = list(sample_cases.V)


def random_boxes(*shape: int, max_size: float = 0.4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Valid xyxy boxes inside [0, 1]: ``[*shape, 4]`` (``sample_cases.make_boxes``)."""
    return sample_cases.make_boxes(*shape, g=generator, max_size=max_size)


def sample_calls(seed: int, device: str = "cpu") -> list[tuple[str, tuple]]:
    """One small valid call of every op, ``(op name, arguments)``, with tensors on ``device``."""
    g = gen(seed)
    priors = grid_priors()
    P = priors.shape[0]
    gt = random_boxes(2, 3, generator=g)
    gl = torch.tensor([[1, 2, -1], [3, -1, -1]])
    boxes = random_boxes(50, generator=g)
    calls = [
        ("box_iou", (random_boxes(5, generator=g), random_boxes(7, generator=g))),
        ("encode_boxes", (random_boxes(2, P, generator=g), priors, V)),
        ("decode_boxes", (torch.randn(2, P, 4, generator=g) * 0.1, priors, V)),
        ("match_priors", (priors, gt, gl, 0.5)),
        ("ssd_targets", (priors, gt, gl, 0.5, V)),
        ("hard_negative_mask", (torch.rand(2, P, generator=g), torch.randint(0, 3, (2, P), generator=g), 3)),
        ("batched_nms", (boxes, torch.rand(50, generator=g), torch.randint(0, 3, (50,), generator=g), 0.5)),
        (
            "ssd_postprocess",
            (torch.randn(2, P, 4, generator=g) * 0.1, torch.softmax(torch.randn(2, P, 4, generator=g), -1), priors, V,
             0.01, 0.45, 50, 20),
        ),
    ]
    return [(name, tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)) for name, args in calls]


def ssd300_like_priors() -> torch.Tensor:
    """8732 priors with SSD300's layout (feature maps 38..1), cxcywh."""
    fmaps = (38, 19, 10, 5, 3, 1)
    min_sizes = (0.1, 0.2, 0.37, 0.54, 0.71, 0.88)
    max_sizes = (0.2, 0.37, 0.54, 0.71, 0.88, 1.05)
    ratios = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    out = []
    for f, smin, smax, rs in zip(fmaps, min_sizes, max_sizes, ratios):
        c = (torch.arange(f, dtype=torch.float32) + 0.5) / f
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        cx, cy = cx.flatten(), cy.flatten()
        shapes = [(smin, smin), ((smin * smax) ** 0.5, (smin * smax) ** 0.5)]
        for r in rs:
            shapes += [(smin * r**0.5, smin / r**0.5), (smin / r**0.5, smin * r**0.5)]
        per = [torch.stack((cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)), -1) for w, h in shapes]
        out.append(torch.stack(per, 1).reshape(-1, 4))
    return torch.cat(out).clamp(0, 1)


@pytest.fixture(scope="session")
def native():
    """The compiled ops (torch.ops.ssdfast); the test fails if the extension is not built."""
    assert ops.backend() == "native", "ssdfast._C is not built: pip install --no-build-isolation -e ."
    return torch.ops.ssdfast


@pytest.fixture(scope="session")
def priors_8732() -> torch.Tensor:
    return ssd300_like_priors()
