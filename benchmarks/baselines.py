"""The code SSD users run today, re-implemented from its algorithm for side-by-side timing.

- ``torchvision_postprocess``: torchvision SSD's ``postprocess_detections`` — per image, per class a
  score filter and ``topk``, then ``torchvision.ops.batched_nms`` over the image's candidates.
- ``per_image_matching``: the per-image matching loop of pytorch-ssd's ``assign_priors`` (and
  torchvision's ``SSDMatcher``): an IoU matrix per image, best gt per prior, each gt's best prior
  forced in a Python loop, thresholding, then encoding.
- ``double_argsort_mining``: the hard negative mining of ssd.pytorch / pytorch-ssd: sort the losses,
  argsort the sort order to get ranks, keep ranks < 3 * num_pos.
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from ssdfast.ops import reference


def torchvision_postprocess(
    loc: Tensor,
    scores: Tensor,
    priors: Tensor,
    variances=(0.1, 0.2),
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    top_k: int = 200,
    max_detections: int = 200,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    boxes = reference.decode_boxes(loc, priors, variances).clamp(0, 1)
    results = []
    for b in range(scores.shape[0]):
        img_boxes, img_scores, img_labels = [], [], []
        for c in range(1, scores.shape[2]):
            s = scores[b, :, c]
            keep = s > score_threshold
            s, bx = s[keep], boxes[b][keep]
            s, idx = s.topk(min(top_k, s.numel()))
            img_boxes.append(bx[idx])
            img_scores.append(s)
            img_labels.append(torch.full_like(idx, c))
        bx, s, lab = torch.cat(img_boxes), torch.cat(img_scores), torch.cat(img_labels)
        keep = torchvision.ops.batched_nms(bx, s, lab, iou_threshold)[:max_detections]
        results.append((bx[keep], s[keep], lab[keep]))
    return results


def _corner(priors: Tensor) -> Tensor:
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def per_image_matching(
    priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = 0.5, variances=(0.1, 0.2)
) -> tuple[Tensor, Tensor]:
    corner = _corner(priors)
    all_labels, all_loc = [], []
    for b in range(gt_boxes.shape[0]):
        valid = gt_labels[b] >= 0
        gt, gl = gt_boxes[b][valid], gt_labels[b][valid]
        ious = torchvision.ops.box_iou(corner, gt)  # [P, G]
        best_gt_iou, best_gt = ious.max(1)
        best_prior_iou, best_prior = ious.max(0)
        for g, p in enumerate(best_prior.tolist()):
            best_gt[p] = g
        best_gt_iou.index_fill_(0, best_prior, 2.0)
        labels = gl[best_gt]
        labels[best_gt_iou < iou_threshold] = 0
        matched = gt[best_gt]
        cxcy = (matched[:, :2] + matched[:, 2:]) / 2
        wh = matched[:, 2:] - matched[:, :2]
        loc = torch.cat(
            ((cxcy - priors[:, :2]) / (variances[0] * priors[:, 2:]), torch.log(wh / priors[:, 2:]) / variances[1]), 1
        )
        all_labels.append(labels)
        all_loc.append(loc)
    return torch.stack(all_labels), torch.stack(all_loc)


def double_argsort_mining(neg_loss: Tensor, labels: Tensor, neg_pos_ratio: int = 3) -> Tensor:
    pos = labels > 0
    num_neg = pos.long().sum(dim=1, keepdim=True) * neg_pos_ratio
    loss = neg_loss.clone()
    loss[pos] = -float("inf")
    _, order = loss.sort(dim=1, descending=True)
    _, rank = order.sort(dim=1)
    return pos | (rank < num_neg)
