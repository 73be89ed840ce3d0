"""COCO evaluation contenders on a generated result set (no images needed).

A synthetic COCO ground truth (``num_images`` images of 640x480, 1..15 boxes each over COCO's 80
non-contiguous category ids, a few crowd regions, COCO-like box sizes) and detections per image:
most are jittered copies of a ground-truth box (true positives at various IoUs), the rest random
boxes, some with a wrong class, scores uniform. Every contender starts from the same per-image
detections (xyxy pixels, scores, contiguous labels 1..80) and the ground-truth dict, and returns the
12 COCO numbers:

- ``ssdfast``: :func:`ssdfast.evaluation.coco.evaluate_coco` (pycocotools, or faster-coco-eval
  when it is installed);
- ``pycocotools``: ``COCO`` + ``loadRes`` (an ``[N, 7]`` array) + ``COCOeval`` called directly;
- ``faster-coco-eval``: the same with ``faster_coco_eval`` (only when it is installed).
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Callable

import numpy as np

__all__ = ["COCO_CATEGORY_IDS", "make_result_set", "coco_eval_case"]

#: COCO's 80 category ids (label i -> COCO_CATEGORY_IDS[i], index 0 = background).
COCO_CATEGORY_IDS = [0] + [i for i in range(1, 91) if i not in
                           (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def make_result_set(num_images: int = 5000, detections_per_image: int = 100, seed: int = 0, width: int = 640,
                    height: int = 480) -> tuple[dict[str, Any], list[dict[str, np.ndarray]], list[int]]:
    """``(gt COCO dict, per-image detections, image ids)``; detections are
    ``{"boxes": float64 [K, 4] xyxy px, "scores": [K], "labels": int64 [K] (1..80)}``."""
    rng = np.random.default_rng(seed)
    images, annotations, detections, image_ids = [], [], [], []
    num_labels = len(COCO_CATEGORY_IDS) - 1
    for i in range(num_images):
        image_id = 100_000 + i
        image_ids.append(image_id)
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"})
        g = int(rng.integers(1, 16))
        # COCO-like sizes: side lengths log-uniform between 8 and 400 px.
        wh = np.exp(rng.uniform(np.log(8), np.log(400), size=(g, 2)))
        wh = np.minimum(wh, [width - 1, height - 1])
        xy = rng.uniform(0, 1, size=(g, 2)) * ([width, height] - wh)
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        gt_labels = rng.integers(1, min(num_labels, 8) + 1, size=g) + int(rng.integers(0, num_labels - 8 + 1))
        crowd = rng.random(g) < 0.02
        for box, label, c in zip(gt_boxes, gt_labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": COCO_CATEGORY_IDS[int(label)],
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "area": float(w * h), "iscrowd": int(c)})
        k = detections_per_image
        k_tp = min(k, int(k * 0.3) + 1)
        src = rng.integers(0, g, size=k_tp)
        jitter = rng.normal(0, 0.15, size=(k_tp, 4)) * np.repeat(wh[src], 2, axis=0).reshape(k_tp, 4)
        tp_boxes = gt_boxes[src] + jitter
        tp_labels = np.where(rng.random(k_tp) < 0.85, gt_labels[src], rng.integers(1, num_labels + 1, size=k_tp))
        n_fp = k - k_tp
        fwh = np.exp(rng.uniform(np.log(8), np.log(400), size=(n_fp, 2)))
        fxy = rng.uniform(0, 1, size=(n_fp, 2)) * np.maximum([width, height] - fwh, 1)
        fp_boxes = np.concatenate([fxy, fxy + fwh], 1)
        fp_labels = np.where(rng.random(n_fp) < 0.5, gt_labels[rng.integers(0, g, size=n_fp)],
                             rng.integers(1, num_labels + 1, size=n_fp))
        boxes = np.concatenate([tp_boxes, fp_boxes]).clip(0, [width, height, width, height])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        detections.append({"boxes": boxes, "scores": rng.random(k),
                           "labels": np.concatenate([tp_labels, fp_labels]).astype(np.int64)})
    categories = [{"id": cid, "name": f"class{cid}"} for cid in COCO_CATEGORY_IDS[1:]]
    gt = {"images": images, "annotations": annotations, "categories": categories,
          "info": {"description": "ssdfast benchmark"}, "licenses": []}
    return gt, detections, image_ids


def _results_array(detections: list[dict[str, np.ndarray]], image_ids: list[int]) -> np.ndarray:
    """``[N, 7]`` rows ``(image_id, x, y, w, h, score, category_id)``, what ``COCO.loadRes`` takes."""
    cats = np.asarray(COCO_CATEGORY_IDS, dtype=np.float64)
    rows = []
    for det, image_id in zip(detections, image_ids):
        b = det["boxes"]
        rows.append(np.column_stack([np.full(len(b), image_id, np.float64), b[:, :2], b[:, 2:] - b[:, :2],
                                     det["scores"], cats[det["labels"]]]))
    return np.concatenate(rows)


def _direct(coco_cls: Any, eval_cls: Any, gt: dict[str, Any], detections: list, image_ids: list[int]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(_results_array(detections, image_ids))
        evaluator = eval_cls(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def coco_eval_case(num_images: int = 5000, detections_per_image: int = 100,
                   seed: int = 0) -> dict[str, Callable[[], Any]]:
    """Contenders evaluating one generated result set (see the module docstring)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ssdfast.evaluation.coco import evaluate_coco

    gt, detections, image_ids = make_result_set(num_images, detections_per_image, seed)
    out: dict[str, Callable[[], Any]] = {
        "ssdfast": lambda: evaluate_coco(detections, gt, COCO_CATEGORY_IDS, image_ids=image_ids),
        "pycocotools": lambda: _direct(COCO, COCOeval, gt, detections, image_ids),
    }
    if faster_coco_eval_available():
        from faster_coco_eval import COCO as FCOCO
        from faster_coco_eval import COCOeval_faster

        out["faster-coco-eval"] = lambda: _direct(FCOCO, COCOeval_faster, gt, detections, image_ids)
    return out
