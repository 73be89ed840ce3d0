"""Fake (meta) kernels of the ssdfast ops, so torch.compile and FakeTensor tracing see their shapes.

Imported by ``ssdfast.ops`` right after the native library is loaded.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


@torch.library.register_fake("ssdfast::box_iou")
def _box_iou(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.promote_types(a.dtype, b.dtype))


@torch.library.register_fake("ssdfast::encode_boxes")
def _encode_boxes(boxes: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    return torch.empty_like(boxes, memory_format=torch.contiguous_format)


@torch.library.register_fake("ssdfast::decode_boxes")
def _decode_boxes(loc: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    return torch.empty_like(loc, memory_format=torch.contiguous_format)


def _match_shapes(priors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    B, P = gt_boxes.shape[0], priors.shape[0]
    return gt_boxes.new_empty((B, P), dtype=torch.int64), gt_boxes.new_empty((B, P, 4))


@torch.library.register_fake("ssdfast::match_priors")
def _match_priors(priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float):
    return _match_shapes(priors, gt_boxes)


@torch.library.register_fake("ssdfast::ssd_targets")
def _ssd_targets(priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float, variances):
    return _match_shapes(priors, gt_boxes)


@torch.library.register_fake("ssdfast::hard_negative_mask")
def _hard_negative_mask(neg_loss: Tensor, labels: Tensor, neg_pos_ratio: int) -> Tensor:
    return neg_loss.new_empty(neg_loss.shape, dtype=torch.bool)


@torch.library.register_fake("ssdfast::batched_nms")
def _batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    ctx = torch.library.get_ctx()
    kept = ctx.new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("ssdfast::ssd_postprocess")
def _ssd_postprocess(loc, scores, priors, variances, score_threshold, iou_threshold, top_k, max_detections):
    B, K = loc.shape[0], max_detections
    return (
        loc.new_empty((B, K, 4)),
        scores.new_empty((B, K)),
        scores.new_empty((B, K), dtype=torch.int64),
        scores.new_empty((B,), dtype=torch.int64),
    )
