"""SSD's MultiBox loss: smooth-L1 on matched priors plus cross-entropy with 3:1 hard negative mining."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops

__all__ = ["MultiBoxLoss"]


class MultiBoxLoss(nn.Module):
    """SSD loss (Liu et al. 2016; pytorch-ssd's ``MultiboxLoss``) on top of the ssdfast ops.

    Per batch:

    1. targets: ``ops.ssd_targets`` matches every prior to a ground truth (IoU >= ``iou_threshold``,
       plus each gt's best prior) and encodes the matched boxes (no gradient);
    2. mining: the background loss ``-log_softmax(conf)[..., 0]`` of each prior ranks the negatives,
       ``ops.hard_negative_mask`` keeps all positives and the ``neg_pos_ratio * num_pos`` hardest
       negatives of each image;
    3. ``classification_loss`` = cross-entropy summed over the kept priors, ``regression_loss`` =
       smooth-L1 (beta 1) summed over the positives' 4 offsets, both divided by
       ``max(num_pos, 1)`` (positives in the whole batch), so a batch without objects gives a finite
       loss (zero regression, zero classification since no negative is kept).

    Arithmetic is float32 whatever the dtype of the predictions (safe under autocast).

    Args:
        priors: ``[P, 4]`` cxcywh normalized (the model's ``.priors``); kept as a buffer, so
            ``loss.to(device)`` moves it.
        iou_threshold: matching threshold.
        neg_pos_ratio: negatives kept per positive.
        variances: box-coding variances, as the model's config.
    """

    priors: Tensor

    def __init__(
        self,
        priors: Tensor,
        iou_threshold: float = 0.5,
        neg_pos_ratio: int = 3,
        variances: Sequence[float] = (0.1, 0.2),
    ):
        super().__init__()
        if priors.dim() != 2 or priors.shape[-1] != 4:
            raise ValueError(f"priors should have shape [P, 4], got {tuple(priors.shape)}")
        self.register_buffer("priors", priors.detach().float().clone(), persistent=False)
        self.iou_threshold = float(iou_threshold)
        self.neg_pos_ratio = int(neg_pos_ratio)
        self.variances = tuple(float(v) for v in variances)

    def forward(
        self, confidences: Tensor, locations: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Loss of a batch.

        Args:
            confidences: ``[B, P, C]`` class logits (class 0 = background).
            locations: ``[B, P, 4]`` predicted offsets.
            gt_boxes: ``[B, G, 4]`` normalized xyxy, padded.
            gt_labels: ``[B, G]`` int, 1..C-1, ``-1`` for padding.

        Returns:
            ``(regression_loss, classification_loss)``, float32 scalars, already divided by the
            number of positives.
        """
        num_classes = confidences.shape[-1]
        if confidences.dim() != 3 or locations.shape != (*confidences.shape[:2], 4):
            raise ValueError(
                f"confidences should be [B, P, C] and locations [B, P, 4], got {tuple(confidences.shape)} "
                f"and {tuple(locations.shape)}"
            )
        if confidences.shape[1] != self.priors.shape[0]:
            raise ValueError(f"the predictions have {confidences.shape[1]} priors, the loss {self.priors.shape[0]}")
        conf = confidences.float()
        loc = locations.float()
        with torch.no_grad():
            labels, loc_targets = ops.ssd_targets(
                self.priors, gt_boxes.float(), gt_labels, self.iou_threshold, self.variances
            )
            background_loss = -F.log_softmax(conf, dim=2)[..., 0]
            mask = ops.hard_negative_mask(background_loss, labels, self.neg_pos_ratio)
        positive = labels > 0
        # Masked sums instead of boolean indexing: no data-dependent shapes (torch.compile, ONNX).
        ce = F.cross_entropy(conf.reshape(-1, num_classes), labels.reshape(-1), reduction="none")
        classification = torch.where(mask.reshape(-1), ce, torch.zeros_like(ce)).sum()
        smooth_l1 = F.smooth_l1_loss(loc, loc_targets.float(), reduction="none").sum(dim=2)
        regression = torch.where(positive, smooth_l1, torch.zeros_like(smooth_l1)).sum()
        num_pos = positive.sum().clamp(min=1).to(torch.float32)
        return regression / num_pos, classification / num_pos

    def extra_repr(self) -> str:
        return (
            f"priors={self.priors.shape[0]}, iou_threshold={self.iou_threshold}, "
            f"neg_pos_ratio={self.neg_pos_ratio}, variances={self.variances}"
        )
