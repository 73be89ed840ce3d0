"""Evaluation: VOC mAP (the devkit's rules) and COCO mAP (pycocotools), and :func:`evaluate`, which
runs a model over a dataset and scores it (used by ``ssdfast-eval`` and the trainer's validation).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .coco import COCO_STAT_NAMES, coco_gt_from_annotations, evaluate_coco, to_coco_results
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

log = logging.getLogger("ssdfast.evaluation")

METRICS = ("voc", "coco")


def _decode_image(path: str) -> Tensor:
    """An image file -> uint8 ``[3, H, W]`` RGB (grey, CMYK and alpha images converted)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(path), mode=ImageReadMode.RGB)


class _EvalImages(Dataset):
    """``dataset`` seen as model inputs: ``(image float [3, S, S], (h, w) of the original, index)``.

    With an ssdfast dataset (``image_path``), the file is decoded here and resized / normalized
    with the model's transform, whatever transform the dataset carries. Otherwise ``dataset[i]``
    must already give the model input and ``get_annotation(i)`` the original size. An unreadable
    image gives ``(None, None, index)``.
    """

    def __init__(self, dataset: Any, transform: Any):
        self.dataset = dataset
        self.transform = transform
        self._by_path = hasattr(dataset, "image_path")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor | None, tuple[int, int] | None, int]:
        if self._by_path:
            path = self.dataset.image_path(index)
            try:
                image = _decode_image(path)
            except Exception as exc:  # corrupt, truncated or missing: skip it, say which
                msg = str(exc).strip().splitlines()
                log.warning("skipping %s: unreadable image (%s)", path, msg[-1] if msg else type(exc).__name__)
                return None, None, index
            h, w = int(image.shape[-2]), int(image.shape[-1])
            empty = torch.zeros(0, 4)
            x, _, _ = self.transform(image, empty, torch.zeros(0, dtype=torch.int64))
            return x, (h, w), index
        sample = self.dataset[index]
        if sample is None:
            return None, None, index
        ann = self.dataset.get_annotation(index)
        return sample[0], (int(ann["height"]), int(ann["width"])), index


def _collate(batch: Sequence[tuple[Any, Any, int]]) -> tuple[Tensor, list[tuple[int, int]], list[int], list[int]]:
    good = [b for b in batch if b[0] is not None]
    bad = [b[2] for b in batch if b[0] is None]
    images = torch.stack([b[0] for b in good]) if good else torch.zeros(0)
    return images, [b[1] for b in good], [b[2] for b in good], bad


def _core(model: nn.Module) -> nn.Module:
    """The SSD inside DDP / torch.compile wrappers (for ``config`` and ``priors``)."""
    from ..checkpoint import unwrap_model

    core = unwrap_model(model)
    if not (hasattr(core, "config") and hasattr(core, "priors")):
        raise TypeError(f"evaluate needs an ssdfast SSD model (with .config and .priors), got {type(model).__name__}")
    return core


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def run_inference(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    score_threshold: float = 0.01,
    nms_iou_threshold: float = 0.45,
    top_k: int = 200,
    max_detections: int = 200,
    fast: bool = True,
) -> dict[str, Any]:
    """Detections of ``model`` on every image of ``dataset``, in the images' own pixels.

    ``fast``: run an inference copy of the network made for this run (BatchNorm folded, activations
    fused, channels_last; :func:`ssdfast.models.fuse.inference_model`, in chunks on CPU as the
    :class:`~ssdfast.detector.Detector` does), same detections up to float rounding; ``False`` runs
    ``model`` itself.

    Returns ``{"detections": [{"index", "image_id", "boxes": float32 [K, 4] xyxy pixels,
    "scores": float32 [K], "labels": int64 [K]}, ...] (readable images, in dataset order),
    "skipped": [indices of unreadable images], "seconds": float, "images_per_s": float}``.
    The model is put in eval mode for the run and given back in the mode it came in.
    """
    from ..data.transforms import EvalTransform
    from ..detector import postprocess, run_in_chunks
    from ..models.fuse import inference_model

    if batch_size < 1:
        raise ValueError(f"batch_size should be at least 1, got {batch_size}")
    core = _core(model)
    cfg = core.config
    dev = _model_device(model) if device is None else torch.device(device)
    if _model_device(model) != dev:
        model.to(dev)
    view = _EvalImages(dataset, EvalTransform(cfg.image_size, cfg.mean, cfg.std))
    loader = DataLoader(
        view, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate,
        pin_memory=dev.type == "cuda", persistent_workers=False,
    )
    ids = _image_ids(dataset)
    from .. import ops

    ops.backend()  # load the kernels now, not inside the timed first batch
    detections: list[dict[str, Any]] = []
    skipped: list[int] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(view), unit="img", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    if fast:
        network = inference_model(core)
        chunks: dict[tuple[int, ...], int] = {}

        def forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return run_in_chunks(network, images.contiguous(memory_format=torch.channels_last), None, chunks)
    else:
        forward = model
    try:
        with torch.inference_mode():
            for images, sizes, indices, bad in loader:
                skipped += bad
                if indices:
                    images = images.to(dev, non_blocking=True)
                    confidences, locations = forward(images)
                    results = postprocess(
                        confidences, locations, core.priors, sizes, cfg.variances,
                        score_threshold=score_threshold, iou_threshold=nms_iou_threshold,
                        top_k=top_k, max_detections=max_detections,
                    )
                    for index, (boxes, scores, labels) in zip(indices, results):
                        detections.append({
                            "index": index,
                            "image_id": ids(index),
                            "boxes": boxes.float().cpu().numpy(),
                            "scores": scores.float().cpu().numpy(),
                            "labels": labels.cpu().numpy().astype(np.int64),
                        })
                if bar is not None:
                    bar.update(len(indices) + len(bad))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if skipped:
        log.warning("%d unreadable images were left out of the evaluation", len(skipped))
    return {
        "detections": detections,
        "skipped": skipped,
        "seconds": seconds,
        "images_per_s": len(detections) / seconds if seconds > 0 else math.inf,
    }


def _image_ids(dataset: Any):
    if hasattr(dataset, "get_annotation"):
        return lambda i: dataset.get_annotation(i)["image_id"]
    return lambda i: i


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    metric: str = "voc",
    iou_threshold: float = 0.5,
    use_2007_metric: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    score_threshold: float = 0.01,
    nms_iou_threshold: float = 0.45,
    top_k: int = 200,
    max_detections: int = 200,
    coco_backend: str = "auto",
    fast: bool = True,
) -> dict[str, Any]:
    """Run ``model`` over ``dataset`` and score its detections.

    Args:
        model: an ssdfast SSD (``.config``, ``.priors``; DDP / compiled wrappers are fine), moved to
            ``device`` if it is elsewhere (default: where it is).
        dataset: an ssdfast dataset (``build_dataset``): images are read from ``image_path(i)`` and
            resized / normalized for the model (the dataset's own transform is not used), the ground
            truth comes from ``get_annotation(i)``.
        metric: ``"voc"`` (devkit AP at ``iou_threshold``, 11-point when ``use_2007_metric``) or
            ``"coco"`` (COCOeval, AP@[.5:.95]; ``iou_threshold`` does not apply).
        num_workers: DataLoader workers decoding images.
        progress: a tqdm bar on stderr; ``False`` prints nothing.
        score_threshold, nms_iou_threshold, top_k, max_detections: the post-processing
            (:func:`ssdfast.detector.postprocess`); the defaults are pytorch-ssd's evaluation ones.
        coco_backend: see :func:`ssdfast.evaluation.coco.evaluate_coco`.
        fast: see :func:`run_inference`.

    Returns a dict:
        ``"mAP"`` (VOC mAP, or COCO AP@[.5:.95]), ``"per_class_AP"`` ({class name: AP, nan without
        ground truth}), ``"metric"``, ``"images_per_s"``, ``"seconds"`` (inference, data loading
        included), ``"num_images"``, ``"skipped_images"`` (unreadable, left out of the score),
        ``"detections"`` (per image: ``index``, ``image_id``, ``boxes`` float32 [K, 4] xyxy pixels,
        ``scores``, ``labels``). VOC adds ``"num_gt"``, ``"iou_threshold"``, ``"use_2007_metric"``;
        COCO adds the 12 numbers (``"AP"``, ``"AP50"``, ``"AP75"``, ``"APs"``, ``"APm"``, ``"APl"``,
        ``"AR1"``, ``"AR10"``, ``"AR100"``, ``"ARs"``, ``"ARm"``, ``"ARl"``) and ``"coco_results"``
        (the detections in COCO results format, original category ids, the dataset's image ids).
    """
    if metric not in METRICS:
        raise ValueError(f"metric should be one of {METRICS}, got {metric!r}")
    class_names = list(getattr(dataset, "class_names", None) or [])
    num_classes = _core(model).config.num_classes
    if class_names and len(class_names) != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes (background included) but the dataset has "
            f"{len(class_names)}: {class_names[:6]}{' ...' if len(class_names) > 6 else ''}"
        )
    if not class_names:
        class_names = ["BACKGROUND"] + [str(i) for i in range(1, num_classes)]
    run = run_inference(
        model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
        score_threshold=score_threshold, nms_iou_threshold=nms_iou_threshold, top_k=top_k,
        max_detections=max_detections, fast=fast,
    )
    detections = run["detections"]
    indices = [d["index"] for d in detections]
    out: dict[str, Any] = {"metric": metric}
    if metric == "voc":
        annotations = [dataset.get_annotation(i) for i in indices]
        voc = evaluate_voc(detections, annotations, class_names, iou_threshold=iou_threshold,
                           use_2007_metric=use_2007_metric)
        out.update(mAP=voc["mAP"], per_class_AP=voc["per_class_AP"], num_gt=voc["num_gt"],
                   iou_threshold=float(iou_threshold), use_2007_metric=bool(use_2007_metric))
    else:
        coco = evaluate_coco(detections, dataset, getattr(dataset, "category_ids", None), indices=indices,
                             class_names=class_names, backend=coco_backend)
        out["mAP"] = coco["AP"]
        out.update({name: coco[name] for name in COCO_STAT_NAMES})
        out["per_class_AP"] = coco["per_class_AP"]
        results = coco["results"]
        dataset_ids = [d["image_id"] for d in detections]
        if coco["image_ids"] != dataset_ids:  # ground truth built from the annotations: ids were positions
            to_dataset = dict(zip(coco["image_ids"], dataset_ids))
            results = [dict(r, image_id=to_dataset[r["image_id"]]) for r in results]
        out["coco_results"] = results
    out.update(
        images_per_s=run["images_per_s"],
        seconds=run["seconds"],
        num_images=len(detections),
        skipped_images=len(run["skipped"]),
        detections=detections,
    )
    return out
