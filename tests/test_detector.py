"""Detector: preprocessing of every image kind, post-processing to pixels, a checkpoint round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ssdfast.detector import Detections, Detector, postprocess, preprocess
from ssdfast.checkpoint import save_checkpoint
from ssdfast.models import create_model

CLASSES = ["BACKGROUND", "cat", "dog"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=64).eval()


def test_preprocess_accepts_every_image_kind(model):
    cfg = model.config
    color = (200, 100, 50)
    pil = Image.new("RGB", (40, 30), color)  # w=40, h=30
    gray = Image.new("L", (20, 10), 100)
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = 7
    chw_uint8 = torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, 64, 64).clone()
    chw_float = chw_uint8.float() / 255
    batch, sizes = preprocess([pil, gray, rgba, chw_uint8, chw_float, np.full((5, 6, 3), color, np.uint8)], cfg)
    assert batch.shape == (6, 3, 64, 64) and batch.dtype == torch.float32
    assert sizes == [(30, 40), (10, 20), (16, 24), (64, 64), (64, 64), (5, 6)]
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    expected = (torch.tensor(color).float().view(3, 1, 1) / 255 - mean) / std
    for i in (0, 2, 3, 4, 5):  # uniform images stay uniform through the resize
        torch.testing.assert_close(batch[i], expected.expand(3, 64, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1], ((100 / 255 - mean) / std).expand(3, 64, 64), atol=1e-5, rtol=0)
    single, single_sizes = preprocess(pil, cfg)
    assert single.shape == (1, 3, 64, 64) and single_sizes == [(30, 40)]
    stacked, stacked_sizes = preprocess(torch.rand(2, 3, 20, 30), cfg)
    assert stacked.shape == (2, 3, 64, 64) and stacked_sizes == [(20, 30)] * 2
    with pytest.raises(ValueError, match="C in"):
        preprocess(np.zeros((5, 5, 2), np.uint8), cfg)
    with pytest.raises(TypeError, match="expected a PIL image"):
        preprocess("image.jpg", cfg)


def test_postprocess_scales_and_clips_to_pixels():
    priors = torch.tensor([[0.25, 0.5, 0.5, 0.4], [0.9, 0.9, 0.4, 0.4]])  # cxcywh normalized
    # prior 0: class 1 with probability 0.8; prior 1: class 2 with 0.6 (its box sticks out: clipped)
    probabilities = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    confidences = probabilities.log()
    locations = torch.zeros(1, 2, 4)
    (boxes, scores, labels), = postprocess(confidences, locations, priors, [(100, 200)], score_threshold=0.3)
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.6]))
    assert labels.tolist() == [1, 2]
    # prior 0 -> xyxy (0, 0.3, 0.5, 0.7) * (w=200, h=100); prior 1 -> (0.7, 0.7, 1.1, 1.1) clipped
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 30.0, 100.0, 70.0], [140.0, 70.0, 200.0, 100.0]]))
    # offsets move the box: dx = 1 -> center + 0.1 * w_prior
    locations[0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    (boxes, _, _), = postprocess(confidences, locations, priors, [(100, 200)], score_threshold=0.7)
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 30.0, 110.0, 70.0]]))
    results = postprocess(confidences.expand(2, 2, 3), torch.zeros(2, 2, 4), priors, [(10, 10), (20, 40)], score_threshold=0.99)
    assert [r[0].shape for r in results] == [(0, 4), (0, 4)]
    with pytest.raises(ValueError, match="1 image sizes for a batch of 2"):
        postprocess(confidences.expand(2, 2, 3), torch.zeros(2, 2, 4), priors, [(10, 10)])


def test_detector_round_trip_through_checkpoint(model, tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model, CLASSES)
    detector = Detector.from_checkpoint(path, device="cpu", score_threshold=0.2, max_detections=50)
    images = [
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)),
        np.random.default_rng(1).integers(0, 255, (120, 90, 3), dtype=np.uint8),
        torch.rand(3, 33, 44),
    ]
    results = detector(images, score_threshold=0.0)  # random weights: threshold 0 gives detections
    assert len(results) == 3 and all(isinstance(r, Detections) for r in results)
    for det, (h, w) in zip(results, [(48, 80), (120, 90), (33, 44)]):
        assert 0 < len(det) <= 50
        assert det.boxes.dtype == torch.float32 and det.boxes.shape == (len(det), 4)
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= w).all() and (det.boxes[:, 3] <= h).all()
        assert (det.scores[:-1] >= det.scores[1:]).all()
        assert set(det.labels.tolist()) <= {1, 2}
        assert det.label_names == [CLASSES[i] for i in det.labels.tolist()]
    # the same numbers as running the pieces by hand with the original model
    batch, sizes = preprocess(images, model.config)
    with torch.no_grad():
        confidences, locations = model(batch)
    manual = postprocess(confidences, locations, model.priors, sizes, model.config.variances,
                         score_threshold=0.0, max_detections=50)
    for det, (boxes, scores, labels) in zip(results, manual):
        torch.testing.assert_close(det.boxes, boxes)
        torch.testing.assert_close(det.scores, scores)
        assert torch.equal(det.labels, labels)
    # one image alone -> a list of one; the detector's own threshold applies by default
    alone = detector(images[0])
    assert len(alone) == 1 and all(s > 0.2 for s in alone[0].scores.tolist())
    assert math.isclose(detector.score_threshold, 0.2)
