"""Inputs and contenders for the op benchmarks, at SSD300 sizes.

Shared by ``test_bench_ops.py`` (pytest-benchmark) and ``run.py`` (the comparison table). Each case
maps a contender name to a zero-argument callable on the given device:

- ``native``: the compiled ssdfast kernel (``torch.ops.ssdfast``)
- ``reference``: the pure-PyTorch twin (``ssdfast.ops.reference``)
- ``loop``: the code SSD users run today (``baselines.py``)
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ssdfast import ops
from ssdfast.ops import reference

from . import baselines  # noqa: F401

V = [0.1, 0.2]


def ssd300_priors(device="cpu") -> torch.Tensor:
    """SSD300's 8732 priors (cxcywh, normalized)."""
    fmaps = (38, 19, 10, 5, 3, 1)
    sizes = (0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05)
    ratios = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    out = []
    for i, (f, rs) in enumerate(zip(fmaps, ratios)):
        c = (torch.arange(f, dtype=torch.float32) + 0.5) / f
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        cx, cy = cx.flatten(), cy.flatten()
        smin, smax = sizes[i], sizes[i + 1]
        shapes = [(smin, smin), (math.sqrt(smin * smax),) * 2]
        for r in rs:
            shapes += [(smin * math.sqrt(r), smin / math.sqrt(r)), (smin / math.sqrt(r), smin * math.sqrt(r))]
        per = [torch.stack((cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)), -1) for w, h in shapes]
        out.append(torch.stack(per, 1).reshape(-1, 4))
    return torch.cat(out).clamp(0, 1).to(device)


def _random_boxes(*shape, max_size=0.5, generator=None, device="cpu"):
    xy = torch.rand(*shape, 2, generator=generator) * (1 - max_size)
    wh = torch.rand(*shape, 2, generator=generator) * max_size + 0.02
    return torch.cat((xy, xy + wh), -1).to(device)


def targets_case(batch=32, max_gt=8, device="cpu") -> dict[str, Callable]:
    g = torch.Generator().manual_seed(0)
    priors = ssd300_priors(device)
    gt = _random_boxes(batch, max_gt, generator=g, device=device)
    counts = torch.randint(1, max_gt + 1, (batch,), generator=g)
    labels = torch.randint(1, 21, (batch, max_gt), generator=g)
    labels[torch.arange(max_gt)[None, :] >= counts[:, None]] = -1
    labels = labels.to(device)
    return {
        "native": lambda: torch.ops.ssdfast.ssd_targets(priors, gt, labels, 0.5, V),
        "reference": lambda: reference.ssd_targets(priors, gt, labels, 0.5, V),
        "loop": lambda: baselines.per_image_matching(priors, gt, labels, 0.5, V),
    }


def mining_case(batch=32, device="cpu") -> dict[str, Callable]:
    g = torch.Generator().manual_seed(1)
    loss = torch.rand(batch, 8732, generator=g).to(device)
    labels = ((torch.rand(batch, 8732, generator=g) < 0.005).long() * 5).to(device)
    return {
        "native": lambda: torch.ops.ssdfast.hard_negative_mask(loss, labels, 3),
        "reference": lambda: reference.hard_negative_mask(loss, labels, 3),
        "loop": lambda: baselines.double_argsort_mining(loss, labels, 3),
    }


def postprocess_case(batch=8, classes=21, device="cpu", dense=False) -> dict[str, Callable]:
    """Post-processing inputs.

    ``dense=False`` looks like a trained detector: most priors are confidently background and about
    2,000 (prior, class) pairs per image score above 0.01, a few hundred of them high, clustered on
    a handful of objects. ``dense=True`` is the worst case: untrained-looking scores where about
    3,000 priors per class pass 0.01, so every class fills its top_k.
    """
    g = torch.Generator().manual_seed(2)
    priors = ssd300_priors(device)
    P = priors.shape[0]
    loc = (torch.randn(batch, P, 4, generator=g) * 0.2).to(device)
    logits = torch.randn(batch, P, classes, generator=g) * 2
    if dense:
        logits[..., 0] += 4
    else:
        logits[..., 0] += 11
        # ~10 objects per image: the priors near each one are confident in its class
        for b in range(batch):
            centers = torch.rand(10, 2, generator=g)
            cls = torch.randint(1, classes, (10,), generator=g)
            d = torch.cdist(priors[:, :2].cpu(), centers)  # [P, 10]
            near, which = d.min(1)
            hit = near < 0.08
            logits[b, hit, cls[which[hit]]] += 12 * (1 - near[hit] / 0.08)
    scores = torch.softmax(logits, -1).to(device)
    args = (V, 0.01, 0.45, 200, 200)
    return {
        "native": lambda: torch.ops.ssdfast.ssd_postprocess(loc, scores, priors, *args),
        "reference": lambda: reference.ssd_postprocess(loc, scores, priors, *args),
        "loop": lambda: baselines.torchvision_postprocess(loc, scores, priors, *args),
    }


def nms_case(n=5000, classes=21, device="cpu") -> dict[str, Callable]:
    import torchvision

    g = torch.Generator().manual_seed(3)
    boxes = _random_boxes(n, max_size=0.2, generator=g, device=device)
    scores = torch.rand(n, generator=g).to(device)
    idxs = torch.randint(0, classes, (n,), generator=g).to(device)
    return {
        "native": lambda: torch.ops.ssdfast.batched_nms(boxes, scores, idxs, 0.5),
        "reference": lambda: reference.batched_nms(boxes, scores, idxs, 0.5),
        "torchvision": lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5),
    }


def all_cases(device="cpu") -> dict[str, dict[str, Callable]]:
    """Name (with its size) -> contenders."""
    if ops.backend() != "native":  # loads ssdfast._C, which registers torch.ops.ssdfast
        raise RuntimeError("the ssdfast._C extension is not built: pip install --no-build-isolation -e .")
    return {
        "ssd_targets (B=32, P=8732, G<=8)": targets_case(device=device),
        "hard_negative_mask (B=32, P=8732)": mining_case(device=device),
        "ssd_postprocess (B=8, P=8732, C=21, trained-like scores)": postprocess_case(device=device),
        "ssd_postprocess (B=8, P=8732, C=21, dense scores, worst case)": postprocess_case(device=device, dense=True),
        "batched_nms (N=5000, 21 classes)": nms_case(device=device),
    }
