"""Pure-PyTorch twins of the ssdfast ops: the spec the native kernels are held to.

Every function here has the contract given in ``ssdfast.ops`` (and README.md's "The ops"): boxes are ``xyxy``
unless named ``cxcywh``, priors are ``cxcywh`` normalized to [0, 1], arithmetic is float32 whatever
the input dtype, and results come back in the dtype of the main input. The order of the float
operations matches the C++/CUDA kernels so that IoUs agree bit for bit (transcendentals, ``exp`` and
``log``, may differ in the last bit).

These functions do no argument checking: ``ssdfast.ops`` checks, then dispatches here or to the
native kernels. They are also what the ONNX exporter traces.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .settings import EVALUATION

__all__ = [
    "box_iou",
    "encode_boxes",
    "decode_boxes",
    "match_priors",
    "ssd_targets",
    "hard_negative_mask",
    "batched_nms",
    "ssd_postprocess",
]

#: Smallest width/height used by ``encode_boxes`` (keeps ``log`` finite on degenerate boxes).
ENCODE_EPS = 1e-6
#: Largest argument of ``exp`` in ``decode_boxes`` (torchvision's bbox_xform_clip).
DECODE_CLAMP = math.log(1000.0 / 16)


def _cxcywh_to_xyxy(b: Tensor) -> Tensor:
    half_w = b[..., 2] / 2
    half_h = b[..., 3] / 2
    return torch.stack((b[..., 0] - half_w, b[..., 1] - half_h, b[..., 0] + half_w, b[..., 1] + half_h), -1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box in ``a[..., N, 4]`` with every box in ``b[..., M, 4]`` -> ``[..., N, M]``.

    A degenerate box (x2 <= x1 or y2 <= y1) has IoU 0 with everything.
    """
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    a = a.float()
    b = b.float()
    ax1, ay1, ax2, ay2 = (a[..., :, None, i] for i in range(4))
    bx1, by1, bx2, by2 = (b[..., None, :, i] for i in range(4))
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = (area_a + area_b) - inter
    valid = (ax2 > ax1) & (ay2 > ay1) & (bx2 > bx1) & (by2 > by1)
    iou = torch.where(valid, inter / torch.where(valid, union, torch.ones_like(union)), torch.zeros_like(inter))
    return iou.to(out_dtype)


def encode_boxes(boxes: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD regression targets of ``boxes[..., P, 4]`` (xyxy) against ``priors[P, 4]`` (cxcywh)."""
    out_dtype = boxes.dtype
    b = boxes.float()
    p = priors.float()
    v0, v1 = float(variances[0]), float(variances[1])
    pw = p[:, 2].clamp(min=ENCODE_EPS)
    ph = p[:, 3].clamp(min=ENCODE_EPS)
    cx = (b[..., 0] + b[..., 2]) / 2
    cy = (b[..., 1] + b[..., 3]) / 2
    w = (b[..., 2] - b[..., 0]).clamp(min=ENCODE_EPS)
    h = (b[..., 3] - b[..., 1]).clamp(min=ENCODE_EPS)
    out = torch.stack(
        (
            (cx - p[:, 0]) / (pw * v0),
            (cy - p[:, 1]) / (ph * v0),
            torch.log(w / pw) / v1,
            torch.log(h / ph) / v1,
        ),
        -1,
    )
    return out.to(out_dtype)


def decode_boxes(loc: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Inverse of ``encode_boxes``: ``loc[..., P, 4]`` offsets -> xyxy boxes ``[..., P, 4]``."""
    out_dtype = loc.dtype
    d = loc.float()
    p = priors.float()
    v0, v1 = float(variances[0]), float(variances[1])
    cx = d[..., 0] * v0 * p[:, 2] + p[:, 0]
    cy = d[..., 1] * v0 * p[:, 3] + p[:, 1]
    w = torch.exp((d[..., 2] * v1).clamp(max=DECODE_CLAMP)) * p[:, 2]
    h = torch.exp((d[..., 3] * v1).clamp(max=DECODE_CLAMP)) * p[:, 3]
    half_w = w / 2
    half_h = h / 2
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), -1).to(out_dtype)


def match_priors(
    priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Assign every prior a ground truth (see ``ssdfast.ops.match_priors``)."""
    B, G = gt_labels.shape
    P = priors.shape[0]
    out_dtype = gt_boxes.dtype
    device = priors.device
    if B == 0 or P == 0 or G == 0:
        return (
            torch.zeros(B, P, dtype=torch.int64, device=device),
            torch.zeros(B, P, 4, dtype=out_dtype, device=device),
        )
    prior_xyxy = _cxcywh_to_xyxy(priors.float())
    gt = gt_boxes.float()
    valid = gt_labels >= 0  # [B, G]
    iou = box_iou(gt, prior_xyxy.expand(B, P, 4))  # [B, G, P]
    iou = torch.where(valid[:, :, None], iou, torch.full_like(iou, -1.0))
    # Each prior's best gt; torch.max returns the first maximal index on ties.
    best_iou, best_gt = iou.max(dim=1)  # [B, P]
    # Each gt's best prior (first maximal index); a gt overlapping no prior forces nothing.
    gt_best_iou, gt_best_prior = iou.max(dim=2)  # [B, G]
    forcing = valid & (gt_best_iou > 0)
    # Later gts win: scatter in gt order, keeping the largest gt index per prior.
    gt_index = torch.arange(G, device=device).expand(B, G)
    forced_gt = torch.full((B, P), -1, dtype=torch.int64, device=device)
    forced_gt.scatter_reduce_(
        1, gt_best_prior, torch.where(forcing, gt_index, torch.full_like(gt_index, -1)), reduce="amax"
    )
    is_forced = forced_gt >= 0
    assigned = torch.where(is_forced, forced_gt, best_gt)
    labels = torch.gather(gt_labels.long(), 1, assigned)
    labels = torch.where(is_forced | (best_iou >= iou_threshold), labels, torch.zeros_like(labels))
    has_gt = valid.any(dim=1, keepdim=True)
    labels = torch.where(has_gt, labels, torch.zeros_like(labels))
    boxes = torch.gather(gt, 1, assigned[:, :, None].expand(B, P, 4))
    boxes = torch.where(has_gt[:, :, None], boxes, torch.zeros_like(boxes))
    return labels, boxes.to(out_dtype)


def ssd_targets(
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[Tensor, Tensor]:
    """``match_priors`` followed by ``encode_boxes``: (labels[B, P], loc[B, P, 4])."""
    labels, boxes = match_priors(priors, gt_boxes, gt_labels, iou_threshold)
    return labels, encode_boxes(boxes, priors, variances)


def hard_negative_mask(neg_loss: Tensor, labels: Tensor, neg_pos_ratio: int = 3) -> Tensor:
    """All positives plus, per image, the ``ratio * num_pos`` hardest negatives (tie: lower index)."""
    pos = labels > 0
    neg = labels == 0
    if labels.numel() == 0:
        return pos
    num_pos = pos.sum(dim=1, keepdim=True)
    k = torch.minimum(num_pos * int(neg_pos_ratio), neg.sum(dim=1, keepdim=True))
    key = torch.where(neg, neg_loss.float(), torch.full_like(neg_loss, float("-inf"), dtype=torch.float32))
    # Stable descending sort keeps the lower index first among equal losses.
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    neg_sorted = torch.gather(neg, 1, order)
    rank_sorted = torch.cumsum(neg_sorted.long(), dim=1) - 1
    chosen_sorted = neg_sorted & (rank_sorted < k)
    chosen = torch.zeros_like(neg).scatter(1, order, chosen_sorted)
    return pos | chosen


def _greedy_keep(suppress: Tensor) -> Tensor:
    """Greedy NMS from ``suppress[..., n, n]`` (True where an earlier box i would suppress a later j).

    The greedy result is the unique fixed point of keep[j] = not any_i(keep[i] and suppress[i, j]) over
    an upper-triangular relation; iterating from all-True reaches it in at most n + 1 rounds.
    """
    n = suppress.shape[-1]
    keep = torch.ones(suppress.shape[:-1], dtype=torch.bool, device=suppress.device)
    s = suppress.float()
    for _ in range(n + 1):
        new_keep = (keep.float()[..., None, :] @ s).squeeze(-2) == 0
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


_NMS_BLOCK = 1024


def _nms_sorted(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of boxes already in score order -> bool keep mask.

    Works in blocks so memory stays O(n * block): each block is first suppressed by the boxes kept
    before it, then resolved within itself by ``_greedy_keep``.
    """
    n = boxes.shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    kept_boxes = boxes[:0]
    for start in range(0, n, _NMS_BLOCK):
        block = boxes[start : start + _NMS_BLOCK]
        alive = ~(box_iou(kept_boxes, block) > iou_threshold).any(dim=0)
        suppress = torch.triu(box_iou(block, block) > iou_threshold, diagonal=1)
        suppress &= alive[:, None] & alive[None, :]
        block_keep = _greedy_keep(suppress) & alive
        keep[start : start + block.shape[0]] = block_keep
        kept_boxes = torch.cat((kept_boxes, block[block_keep]))
    return keep


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS with torchvision.ops.batched_nms semantics; keep sorted by score (tie: index)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    sorted_idxs = idxs[order]
    keep_sorted = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    # One class at a time; order within a class stays score order.
    for c in torch.unique(sorted_idxs).tolist():
        in_class = (sorted_idxs == c).nonzero().squeeze(1)
        keep_sorted[in_class] = _nms_sorted(boxes[order[in_class]].float(), iou_threshold)
    return order[keep_sorted]


def ssd_postprocess(
    loc: Tensor,
    scores: Tensor,
    priors: Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    score_threshold: float = EVALUATION.score_threshold,
    iou_threshold: float = EVALUATION.iou_threshold,
    top_k: int = EVALUATION.top_k,
    max_detections: int = EVALUATION.max_detections,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Decode, per-class top-k + NMS, merge; outputs padded to ``max_detections`` with zeros.

    Merge order: descending score, ties broken by lower class, then lower prior index.
    """
    B, P, C = scores.shape
    K = int(max_detections)
    device = loc.device
    out_boxes = torch.zeros(B, K, 4, dtype=loc.dtype, device=device)
    out_scores = torch.zeros(B, K, dtype=scores.dtype, device=device)
    out_labels = torch.zeros(B, K, dtype=torch.int64, device=device)
    out_num = torch.zeros(B, dtype=torch.int64, device=device)
    if B == 0 or P == 0 or C <= 1:
        return out_boxes, out_scores, out_labels, out_num
    decoded = decode_boxes(loc.float(), priors, variances)  # [B, P, 4] float32
    k = min(int(top_k), P)
    for i in range(B):
        s = scores[i, :, 1:].float().t()  # [C-1, P]
        s = torch.where(torch.isnan(s), torch.full_like(s, float("-inf")), s)  # NaN is never a candidate
        top = torch.sort(s, dim=1, descending=True, stable=True)
        cand_scores = top.values[:, :k]  # [C-1, k]
        cand_prior = top.indices[:, :k]
        valid = cand_scores > score_threshold
        b = decoded[i][cand_prior]  # [C-1, k, 4]
        iou = box_iou(b, b)  # [C-1, k, k]
        suppress = torch.triu(iou > iou_threshold, diagonal=1) & valid[:, :, None] & valid[:, None, :]
        keep = _greedy_keep(suppress) & valid  # [C-1, k]
        cls = torch.arange(1, C, device=device)[:, None].expand_as(cand_prior)
        flat_scores = cand_scores[keep]  # (class, rank) order
        order = torch.sort(flat_scores, descending=True, stable=True).indices[:K]
        n = order.numel()
        out_boxes[i, :n] = b[keep][order].to(loc.dtype)
        out_scores[i, :n] = flat_scores[order].to(scores.dtype)
        out_labels[i, :n] = cls[keep][order]
        out_num[i] = n
    return out_boxes, out_scores, out_labels, out_num
