"""MultiBoxLoss on a case small enough to compute by hand, plus its edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from ssdfast.loss import MultiBoxLoss

# Four priors tiling the unit square (cxcywh): top-left, bottom-right, top-right, bottom-left.
PRIORS = torch.tensor([
    [0.25, 0.25, 0.5, 0.5],
    [0.75, 0.75, 0.5, 0.5],
    [0.75, 0.25, 0.5, 0.5],
    [0.25, 0.75, 0.5, 0.5],
])
LN2, LN3 = math.log(2.0), math.log(3.0)


def _case():
    """Image 0: one gt (label 1) = prior 0 exactly. Image 1: one gt (label 2) = prior 1, plus padding.

    Logits over 3 classes (background, 1, 2), the same for both images:
      prior 0: [0, 0, 0]       softmax 1/3 each        background loss ln 3
      prior 1: [0, 0, ln 3]    softmax 1/5, 1/5, 3/5   background loss ln 5
      prior 2: [0, 0, 0]                               background loss ln 3
      prior 3: [ln 2, 0, 0]    softmax 1/2, 1/4, 1/4   background loss ln 2
    """
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, LN3], [0.0, 0.0, 0.0], [LN2, 0.0, 0.0]])
    confidences = logits.expand(2, 4, 3).clone()
    locations = torch.full((2, 4, 4), 9.0)  # only positives' offsets count
    locations[0, 0] = torch.tensor([0.5, -2.0, 0.0, 0.1])  # prior 0 of image 0 (target: zeros)
    locations[1, 1] = torch.zeros(4)  # prior 1 of image 1, exact
    gt_boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]],
                             [[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    gt_labels = torch.tensor([[1, -1], [2, -1]])
    return confidences, locations, gt_boxes, gt_labels


def test_hand_computed_case_ratio_1():
    regression, classification = MultiBoxLoss(PRIORS, neg_pos_ratio=1)(*_case())
    # smooth-L1 of image 0's prior 0: 0.5*0.5^2 + (2 - 0.5) + 0 + 0.5*0.1^2 = 1.63; image 1's: 0
    assert regression.item() == pytest.approx((0.125 + 1.5 + 0.0 + 0.005) / 2, rel=1e-6)
    # image 0: positive prior 0 (label 1): -ln(1/3); hardest negative prior 1: -ln(1/5)
    # image 1: positive prior 1 (label 2): -ln(3/5); hardest negatives tie at ln 3 (priors 0, 2): ln 3
    expected = (LN3 + math.log(5.0) + math.log(5.0 / 3.0) + LN3) / 2
    assert classification.item() == pytest.approx(expected, rel=1e-6)
    assert regression.dtype == classification.dtype == torch.float32


def test_hand_computed_case_ratio_3():
    _, classification = MultiBoxLoss(PRIORS, neg_pos_ratio=3)(*_case())
    # all three negatives of each image are kept
    image0 = LN3 + (math.log(5.0) + LN3 + LN2)
    image1 = math.log(5.0 / 3.0) + (LN3 + LN3 + LN2)
    assert classification.item() == pytest.approx((image0 + image1) / 2, rel=1e-6)


def test_gradients_only_where_selected():
    confidences, locations, gt_boxes, gt_labels = _case()
    confidences.requires_grad_(True)
    locations.requires_grad_(True)
    regression, classification = MultiBoxLoss(PRIORS, neg_pos_ratio=1)(confidences, locations, gt_boxes, gt_labels)
    (regression + classification).backward()
    used = confidences.grad.abs().sum(-1) > 0
    assert used.tolist() == [[True, True, False, False], [True, True, False, False]]
    assert (locations.grad.abs().sum(-1) > 0).tolist() == [[True, False, False, False], [False, False, False, False]]


def test_no_positives_is_finite_zero():
    confidences, locations, gt_boxes, _ = _case()
    confidences.requires_grad_(True)
    regression, classification = MultiBoxLoss(PRIORS)(confidences, locations, gt_boxes, torch.full((2, 2), -1))
    assert regression.item() == 0.0 and classification.item() == 0.0
    (regression + classification).backward()
    assert torch.isfinite(confidences.grad).all()
    empty = MultiBoxLoss(PRIORS)(confidences, locations, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.int64))
    assert all(torch.isfinite(t) and t.item() == 0.0 for t in empty)


def test_half_precision_inputs_give_float32_loss():
    confidences, locations, gt_boxes, gt_labels = _case()
    criterion = MultiBoxLoss(PRIORS, neg_pos_ratio=1)
    expected = criterion(confidences, locations, gt_boxes, gt_labels)
    for dtype in (torch.bfloat16, torch.float16):
        got = criterion(confidences.to(dtype), locations.to(dtype), gt_boxes.to(dtype), gt_labels)
        for e, g in zip(expected, got):
            assert g.dtype == torch.float32
            assert g.item() == pytest.approx(e.item(), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = criterion(confidences, locations, gt_boxes, gt_labels)
    for e, g in zip(expected, got):
        assert g.dtype == torch.float32 and g.item() == pytest.approx(e.item(), rel=1e-6)


def test_shape_errors():
    confidences, locations, gt_boxes, gt_labels = _case()
    criterion = MultiBoxLoss(PRIORS)
    with pytest.raises(ValueError, match="the predictions have 3 priors, the loss 4"):
        criterion(confidences[:, :3], locations[:, :3], gt_boxes, gt_labels)
    with pytest.raises(ValueError, match="locations"):
        criterion(confidences, locations[..., :2], gt_boxes, gt_labels)
    with pytest.raises(ValueError, match=r"priors should have shape \[P, 4\]"):
        MultiBoxLoss(torch.zeros(4, 3))
