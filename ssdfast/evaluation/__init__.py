"""Evaluation: VOC mAP (the devkit's rules) and COCO mAP (pycocotools / faster-coco-eval), and
:func:`evaluate`, which runs a model over a dataset inside a :class:`~ssdfast.detector.Detector`
(the one inference path) and scores it (used by ``ssdfast-eval`` and the trainer's validation).

- :mod:`.run`: :func:`run_inference`, the run loop (loader workers, unreadable images, progress);
- :mod:`.score`: :func:`evaluate`, run + metric;
- :mod:`.voc`, :mod:`.coco`: the metrics, on per-image detections (``Detections``, dicts or tuples).
"""
from __future__ import annotations

from .coco import COCO_STAT_NAMES, coco_gt_from_annotations, evaluate_coco, to_coco_results
from .run import run_inference
from .score import METRICS, evaluate
from .voc import evaluate_voc, to_devkit_boxes, voc_ap, write_voc_detections

__all__ = [
    "evaluate",
    "run_inference",
    "evaluate_voc",
    "evaluate_coco",
    "voc_ap",
    "to_coco_results",
    "coco_gt_from_annotations",
    "to_devkit_boxes",
    "write_voc_detections",
    "COCO_STAT_NAMES",
    "METRICS",
]
