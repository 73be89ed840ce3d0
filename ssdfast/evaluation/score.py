""":func:`evaluate`: run a model over a dataset (:func:`~ssdfast.evaluation.run.run_inference`, a
Detector) and score its detections with the VOC devkit's rules or COCOeval.

Every image the dataset lists is scored, readable or not: an image that cannot be read has no
detections, so its objects count as missed, as the devkit would count them (leaving them out would
shrink the recall denominator and report a higher mAP than the devkit's).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..detector import Detector
from ..ops.settings import EVALUATION, PostprocessSettings, check_fraction
from .coco import COCO_STAT_NAMES, evaluate_coco
from .run import run_inference
from .voc import evaluate_voc

__all__ = ["evaluate", "METRICS"]

METRICS = ("voc", "coco")


def evaluate(
    model: nn.Module | Detector,
    dataset: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    metric: str = "voc",
    settings: PostprocessSettings = EVALUATION,
    match_iou: float = 0.5,
    use_2007_metric: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    coco_backend: str = "auto",
    fused: bool = True,
    strict: bool = False,
) -> dict[str, Any]:
    """Run ``model`` over ``dataset`` and score its detections.

    Args:
        model: an ssdfast SSD (``.config``, ``.priors``; DDP / compiled wrappers are fine), moved to
            ``device`` if it is elsewhere (default: where it is). It runs inside a
            :class:`~ssdfast.detector.Detector`, preprocessed as its ``config`` says (a model from a
            pytorch-ssd file gets OpenCV's resize). Or a Detector, run as it is (e.g. an exported
            file in ONNX Runtime from :func:`ssdfast.load_detector`; ``device`` and ``fused`` do not apply).
        dataset: an ssdfast dataset (``build_dataset``): images are read from ``image_path(i)`` with
            :func:`ssdfast.io.load_image` and prepared by the Detector's preprocessing (the dataset's
            own transform is not used); the ground truth comes from ``get_annotation(i)``.
        metric: ``"voc"`` (devkit AP, a detection matching a ground-truth box when their IoU is
            above ``match_iou``; 11-point when ``use_2007_metric``) or ``"coco"`` (COCOeval,
            AP@[.5:.95]; ``match_iou`` does not apply).
        settings: the Detector's post-processing (:class:`~ssdfast.ops.PostprocessSettings`);
            ``EVALUATION``, pytorch-ssd's evaluation settings, by default.
        num_workers: DataLoader workers reading and preparing images.
        progress: a tqdm bar on stderr when stderr is a terminal; ``False`` never.
        coco_backend: see :func:`ssdfast.evaluation.coco.evaluate_coco`.
        fused: the Detector's inference copy of the network (see :class:`~ssdfast.detector.Detector`).
        strict: an unreadable or truncated test image raises :class:`ssdfast.errors.DataError` instead
            of being scored as missed / used with a warning.

    Returns a dict:
        ``"mAP"`` (VOC mAP, or COCO AP@[.5:.95]), ``"per_class_AP"`` ({class name: AP, nan without
        ground truth}), ``"metric"``, ``"images_per_s"``, ``"seconds"`` (inference, data loading
        included), ``"num_images"`` (images read and run), ``"skipped_images"`` (how many could not
        be read; their objects are in the score as missed), ``"unreadable_images"`` (their paths),
        ``"notes"`` (one line per file with a problem: unreadable, or truncated and used),
        ``"detections"`` (a :class:`~ssdfast.detector.Detections` per image of the dataset, in its
        order, boxes xyxy in the image's pixels; empty for an unreadable image) and ``"image_ids"``
        (the dataset's id of each). VOC adds ``"num_gt"``, ``"match_iou"`` and
        ``"use_2007_metric"``; COCO adds the 12 numbers (``"AP"``, ``"AP50"``, ``"AP75"``, ``"APs"``,
        ``"APm"``, ``"APl"``, ``"AR1"``, ``"AR10"``, ``"AR100"``, ``"ARs"``, ``"ARm"``, ``"ARl"``) and
        ``"coco_results"`` (the detections in COCO results format, original category ids, the
        dataset's image ids).
    """
    if metric not in METRICS:
        raise ValueError(f"metric should be one of {METRICS}, got {metric!r}")
    check_fraction("match_iou", match_iou)  # before the run, not after it
    run = run_inference(
        model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
        settings=settings, fused=fused, strict=strict,
    )
    detections, class_names, image_ids = run["detections"], run["class_names"], run["image_ids"]
    indices = list(range(len(detections)))
    out: dict[str, Any] = {"metric": metric}
    if metric == "voc":
        annotations = [dataset.get_annotation(i) for i in indices]
        voc = evaluate_voc(detections, annotations, class_names, match_iou=match_iou,
                           use_2007_metric=use_2007_metric)
        out.update(mAP=voc["mAP"], per_class_AP=voc["per_class_AP"], num_gt=voc["num_gt"],
                   match_iou=voc["match_iou"], use_2007_metric=bool(use_2007_metric))
    else:
        coco = evaluate_coco(detections, dataset, getattr(dataset, "category_ids", None), indices=indices,
                             class_names=class_names, backend=coco_backend)
        out["mAP"] = coco["AP"]
        out.update({name: coco[name] for name in COCO_STAT_NAMES})
        out["per_class_AP"] = coco["per_class_AP"]
        results = coco["results"]
        if coco["image_ids"] != image_ids:  # ground truth built from the annotations: ids were positions
            to_dataset = dict(zip(coco["image_ids"], image_ids))
            results = [dict(r, image_id=to_dataset[r["image_id"]]) for r in results]
        out["coco_results"] = results
    out.update(
        images_per_s=run["images_per_s"],
        seconds=run["seconds"],
        num_images=run["num_images"],
        skipped_images=len(run["unreadable_images"]),
        unreadable_images=run["unreadable_images"],
        notes=run["notes"],
        detections=detections,
        image_ids=image_ids,
    )
    return out
