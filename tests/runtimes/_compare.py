"""Holding two detectors' detections to each other: same classes, boxes and scores within stated tolerances."""
from __future__ import annotations

import torch

from ssdfast.detector import Detections

#: Boxes of two runtimes agree within this many pixels (measured: ~1e-4 px; float rounding of the
#: network's outputs, the same decode and NMS on both sides).
BOX_TOL = 0.01
#: Scores of two runtimes agree within this much (measured: ~2e-6).
SCORE_TOL = 1e-4


def assert_same_detections(a: Detections, b: Detections, score_threshold: float, max_detections: int) -> int:
    """``a`` and ``b`` pair one to one: same class, box within :data:`BOX_TOL` px, score within
    :data:`SCORE_TOL` (the order of equal scores aside). Only a detection at the edge of what is kept may
    be missing from one side: its score within SCORE_TOL of the score threshold, or of the lowest score
    kept when ``max_detections`` cut the list. Returns the number of pairs."""
    free = torch.ones(len(b), dtype=torch.bool)
    unpaired = []
    for box, score, label in zip(a.boxes, a.scores, a.labels):
        close = (b.labels == label) & free & ((b.boxes - box).abs().amax(1) <= BOX_TOL) \
            & ((b.scores - score).abs() <= SCORE_TOL)
        if bool(close.any()):
            j = int(torch.nonzero(close)[((b.boxes[close] - box).abs().amax(1)).argmin()])
            free[j] = False
        else:
            unpaired.append(float(score))
    unpaired += b.scores[free].tolist()
    edge = score_threshold
    if max(len(a), len(b)) >= max_detections:
        edge = max(edge, float(torch.cat([a.scores, b.scores]).min()))
    far = [s for s in unpaired if s > edge + SCORE_TOL]
    assert not far, f"detections of one side only, scores {far[:5]} (edge {edge:.5f}); {len(a)} vs {len(b)}"
    return len(a) - (len(unpaired) - int(free.sum()))
