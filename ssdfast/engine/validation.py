"""Validation during training: the loss on the validation set and its mAP (through
:func:`ssdfast.evaluation.evaluate`, the one inference path)."""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..ops.settings import EVALUATION
from .notes import RunNotes
from .settings import TrainConfig

__all__ = ["validation_loss", "validation_metrics"]


@torch.no_grad()
def validation_loss(model: nn.Module, dataset: Dataset, criterion: nn.Module, config: TrainConfig, device: torch.device,
                    *, num_workers: int, amp_dtype: torch.dtype | None, notes: RunNotes | None = None,
                    memory_format: torch.memory_format = torch.contiguous_format) -> dict:
    """Mean regression / classification loss of ``model`` (put in eval mode) over ``dataset``, its
    batches in ``memory_format`` (the model's); ``{}`` when no batch had a usable image. Batch notes
    (skipped images) go to ``notes``."""
    from .sampling import GuardedSamples, batches, collate_batch, worker_init

    loader = DataLoader(GuardedSamples(dataset), batch_size=config.batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_batch, worker_init_fn=worker_init if num_workers > 0 else None)
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    count = 0
    for batch in batches(loader):
        if notes is not None:
            notes.batch(batch.notes)
        if batch.images.shape[0] == 0:
            continue
        images = batch.images.to(device).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            confidences, locations = model(images)
        reg, cls = criterion(confidences.float(), locations.float(), batch.gt_boxes.to(device),
                             batch.gt_labels.to(device))
        sums += torch.stack([reg + cls, reg, cls]).double().cpu()
        count += 1
    if count == 0:
        return {}
    means = (sums / count).tolist()
    return {"val_loss": means[0], "val_regression_loss": means[1], "val_classification_loss": means[2]}


def validation_metrics(model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device,
                       *, num_workers: int, progress: bool, notes: RunNotes | None = None) -> dict:
    """mAP of ``model`` on ``dataset``: VOC's (``metric`` voc) or COCO's AP@[.5:.95] with its other
    numbers (``metric`` coco); ``auto`` picks COCO for ``--dataset-type coco``."""
    from ..evaluation import COCO_STAT_NAMES, evaluate

    metric = config.metric
    if metric == "auto":
        metric = "coco" if config.dataset_type == "coco" else "voc"
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        metrics = evaluate(model, dataset, batch_size=config.batch_size, device=device, metric=metric,
                           settings=EVALUATION, num_workers=num_workers,
                           progress=progress and sys.stderr.isatty(), strict=config.strict)
    result: dict[str, Any] = {"mAP": float(metrics["mAP"])}
    if metric == "coco":
        result.update({name: float(metrics[name]) for name in COCO_STAT_NAMES if name in metrics})
    result["per_class_AP"] = {str(k): float(v) for k, v in (metrics.get("per_class_AP") or {}).items()}
    result["val_skipped_images"] = int(metrics.get("skipped_images") or 0)
    for note in metrics.get("notes") or ():  # unreadable / truncated test images, each named: to the log
        if notes is not None:
            notes.warn(note, "validation")
    result["map_time_s"] = time.perf_counter() - t0
    return result
