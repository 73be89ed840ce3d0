"""PASCAL VOC average precision, as the devkit computes it (py-faster-rcnn's ``voc_eval.py``).

The rules, kept exactly:

- The devkit's boxes are 1-based inclusive pixel indices (the numbers in the XML files): a box's
  width is ``xmax - xmin + 1`` and the same +1 enters every intersection. ssdfast's datasets and
  detectors give continuous pixel boxes instead (``x1 = xmin - 1``, ``x2 = xmax``, as detectron2
  reads VOC), so by default (``box_convention="continuous"``) boxes are first turned back into the
  devkit's (``x1 + 1, y1 + 1, x2, y2``, what detectron2 writes for the devkit), then scored with
  its formulas; ``box_convention="devkit"`` takes boxes already in the devkit's convention.
- Per class, detections are taken in order of decreasing score. Each detection looks at the
  ground-truth box of its class in its image with the highest IoU (first one on ties). If that IoU
  is greater than ``match_iou`` (0.5 in the devkit) the detection is a true positive, unless the
  box is *difficult* (then it is neither true nor false positive) or an earlier detection already
  took it (then it is a false positive, a duplicate). Anything else is a false positive.
- Recall is divided by the number of non-difficult ground-truth boxes. AP is the 11-point
  interpolated precision of VOC2007 (``use_2007_metric=True``) or the area under the
  monotone precision envelope (VOC2010+).
- A class without non-difficult ground truth has AP ``nan`` and is left out of the mAP.

Ties between equal scores are broken by the order of the detections (a stable sort), where the
devkit's ``np.argsort`` leaves it to the sorting algorithm.

The matching is vectorised: every (detection, same-image same-class ground truth) pair is formed at
once, so there is no Python loop over images or detections.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..ops.settings import check_fraction

__all__ = ["voc_ap", "evaluate_voc", "match_detections", "as_numpy_detections", "to_devkit_boxes",
           "write_voc_detections"]

_BOX_CONVENTIONS = ("continuous", "devkit")


def _to_numpy(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if x is None:
        return np.zeros((0, *shape_tail), dtype=dtype)
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if shape_tail:
        arr = arr.reshape(-1, *shape_tail)
    else:
        arr = arr.reshape(-1)
    return arr


def as_numpy_detections(det: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's detections -> ``(boxes float64[K, 4] xyxy pixels, scores float64[K], labels int64[K])``.

    Accepts a mapping with ``"boxes"``, ``"scores"``, ``"labels"``, an object with those attributes
    (such as :class:`ssdfast.detector.Detections`) or a ``(boxes, scores, labels)`` tuple; values may
    be tensors, arrays or lists.
    """
    if isinstance(det, Mapping):
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    elif isinstance(det, (tuple, list)):
        boxes, scores, labels = det[:3]
    else:
        boxes, scores, labels = det.boxes, det.scores, det.labels
    boxes = _to_numpy(boxes, np.float64, (4,))
    scores = _to_numpy(scores, np.float64)
    labels = _to_numpy(labels, np.int64)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(
            f"detections should have as many boxes, scores and labels, got {len(boxes)}, {len(scores)}, {len(labels)}"
        )
    return boxes, scores, labels


def _annotation_arrays(ann: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _to_numpy(ann["boxes"], np.float64, (4,))
    labels = _to_numpy(ann["labels"], np.int64)
    difficult = ann.get("difficult")
    difficult = np.zeros(len(labels), dtype=bool) if difficult is None else _to_numpy(difficult, bool)
    if not (len(boxes) == len(labels) == len(difficult)):
        raise ValueError(
            "annotation should have as many boxes, labels and difficult flags, "
            f"got {len(boxes)}, {len(labels)}, {len(difficult)}"
        )
    return boxes, labels, difficult


def to_devkit_boxes(boxes: np.ndarray) -> np.ndarray:
    """Continuous pixel ``xyxy`` (``x1 = xmin - 1``, ``x2 = xmax``) -> the devkit's 1-based
    inclusive ``(xmin, ymin, xmax, ymax)``: ``(x1 + 1, y1 + 1, x2, y2)``. Returns a new array."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    out[:, :2] += 1.0
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_2007_metric: bool = True) -> float:
    """AP from a precision/recall curve (detections in decreasing score order).

    ``use_2007_metric=True``: mean of the interpolated precision at recall 0, 0.1, ..., 1 (VOC2007).
    Otherwise: area under the precision envelope (max precision at any higher recall), VOC2010+.
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_2007_metric:
        # interpolated precision p(t) = max(prec[rec >= t]) (0 where no recall reaches t);
        # rec is non-decreasing, so that is the suffix max from the first index with rec >= t.
        suffix_max = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        thresholds = np.arange(0.0, 1.1, 0.1)  # the devkit's exact values (0.30000000000000004, ...)
        first = np.searchsorted(rec, thresholds, side="left")
        padded = np.concatenate([suffix_max, [0.0]])
        return float(np.sum(padded[first] / 11.0))
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``a[K, 4]`` and ``b[K, 4]`` with the devkit's +1 pixel convention."""
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
             + (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0) - inter)
    return inter / union


def match_detections(
    det_boxes: np.ndarray,
    det_keys: np.ndarray,
    gt_boxes: np.ndarray,
    gt_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the best-overlapping ground truth with the same key (image and class).

    Args:
        det_boxes: float[D, 4] xyxy pixels.  det_keys: int64[D] (e.g. ``image * num_classes + label``).
        gt_boxes: float[G, 4] xyxy pixels.   gt_keys: int64[G].
    Returns:
        ``(ovmax float64[D], jmax int64[D])``: the highest IoU (+1 convention; ``-inf`` when the
        detection has no candidate) and the index into the ground truth of the box reaching it (first
        one, in ground-truth order, on ties; -1 when none).
    """
    num_det = len(det_keys)
    ovmax = np.full(num_det, -np.inf)
    jmax = np.full(num_det, -1, dtype=np.int64)
    if num_det == 0 or len(gt_keys) == 0:
        return ovmax, jmax
    gt_order = np.argsort(gt_keys, kind="stable")  # keeps annotation order within a key
    sorted_keys = gt_keys[gt_order]
    start = np.searchsorted(sorted_keys, det_keys, side="left")
    count = np.searchsorted(sorted_keys, det_keys, side="right") - start
    total = int(count.sum())
    if total == 0:
        return ovmax, jmax
    pair_det = np.repeat(np.arange(num_det), count)
    offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = gt_order[np.repeat(start, count) + offsets]
    iou = _pair_iou(det_boxes[pair_det], gt_boxes[pair_gt])
    np.maximum.at(ovmax, pair_det, iou)
    # pairs are grouped by detection, in ground-truth order: the first pair reaching the max wins
    best = np.nonzero(iou == ovmax[pair_det])[0]
    dets_with_best, first = np.unique(pair_det[best], return_index=True)
    jmax[dets_with_best] = pair_gt[best[first]]
    return ovmax, jmax


def evaluate_voc(
    detections: Sequence[Any],
    annotations: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    match_iou: float = 0.5,
    use_2007_metric: bool = True,
    box_convention: str = "continuous",
) -> dict[str, Any]:
    """VOC per-class AP and mAP.

    Args:
        detections: one entry per image, aligned with ``annotations``: boxes ``[K, 4]`` xyxy in
            pixels, scores ``[K]``, labels ``[K]`` (1..C-1) — as a dict, a ``(boxes, scores,
            labels)`` tuple or an object with those attributes (see :func:`as_numpy_detections`).
        annotations: one dict per image with ``"boxes"`` ``[G, 4]`` xyxy pixels in the same
            origin as the detections, ``"labels"`` ``[G]`` and optionally ``"difficult"`` bool ``[G]``
            (what ``dataset.get_annotation(i)`` returns).
        class_names: the label names, ``BACKGROUND`` first (label 0 is never evaluated).
        match_iou: a detection matches when IoU > this (strictly), 0.5 in the devkit; in [0, 1].
        use_2007_metric: 11-point AP (VOC2007) or the all-point area (VOC2010+).
        box_convention: ``"continuous"`` (ssdfast's pixel boxes, converted with
            :func:`to_devkit_boxes`) or ``"devkit"`` (1-based inclusive, used as they are); it applies
            to both detections and annotations.

    Returns:
        ``{"mAP": float, "per_class_AP": {name: AP or nan}, "num_gt": {name: non-difficult gts},
        "num_detections": {name: int}, "metric": "voc2007"|"voc2010", "match_iou": float}``.
        ``mAP`` is the mean AP over the classes with at least one non-difficult ground truth
        (``nan`` when there are none).
    """
    if len(detections) != len(annotations):
        raise ValueError(f"got detections for {len(detections)} images but {len(annotations)} annotations")
    match_iou = check_fraction("match_iou", match_iou)
    if box_convention not in _BOX_CONVENTIONS:
        raise ValueError(f"box_convention should be one of {_BOX_CONVENTIONS}, got {box_convention!r}")
    num_classes = len(class_names)

    det_boxes, det_scores, det_labels, det_img = [], [], [], []
    gt_boxes, gt_labels, gt_difficult, gt_img = [], [], [], []
    for i, (det, ann) in enumerate(zip(detections, annotations)):
        db, ds, dl = as_numpy_detections(det)
        det_boxes.append(db), det_scores.append(ds), det_labels.append(dl)
        det_img.append(np.full(len(dl), i, dtype=np.int64))
        gb, gl, gd = _annotation_arrays(ann)
        gt_boxes.append(gb), gt_labels.append(gl), gt_difficult.append(gd)
        gt_img.append(np.full(len(gl), i, dtype=np.int64))

    def cat(parts: list[np.ndarray], dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, *tail), dtype=dtype)

    d_boxes, d_scores = cat(det_boxes, np.float64, (4,)), cat(det_scores, np.float64)
    d_labels, d_img = cat(det_labels, np.int64), cat(det_img, np.int64)
    g_boxes, g_labels = cat(gt_boxes, np.float64, (4,)), cat(gt_labels, np.int64)
    g_difficult, g_img = cat(gt_difficult, bool), cat(gt_img, np.int64)

    if box_convention == "continuous":
        d_boxes, g_boxes = to_devkit_boxes(d_boxes), to_devkit_boxes(g_boxes)

    for name, labels in (("detection", d_labels), ("annotation", g_labels)):
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{name} label {int(labels[bad][0])} is outside 0..{num_classes - 1} "
                             f"({num_classes} class names)")

    ovmax, jmax = match_detections(d_boxes, d_img * num_classes + d_labels, g_boxes, g_img * num_classes + g_labels)

    per_class: dict[str, float] = {}
    num_gt: dict[str, int] = {}
    num_det: dict[str, int] = {}
    for c in range(1, num_classes):
        name = class_names[c]
        npos = int(np.count_nonzero((g_labels == c) & ~g_difficult))
        sel = np.nonzero(d_labels == c)[0]
        sel = sel[np.argsort(-d_scores[sel], kind="stable")]
        hit = ovmax[sel] > match_iou
        gt_hit = jmax[sel]
        difficult_hit = hit & g_difficult[np.where(hit, gt_hit, 0)] if len(g_difficult) else np.zeros_like(hit)
        counted = hit & ~difficult_hit
        tp = np.zeros(len(sel))
        # the first detection (in score order) to reach a ground truth takes it; later ones are duplicates
        counted_idx = np.nonzero(counted)[0]
        _, first = np.unique(gt_hit[counted_idx], return_index=True)
        tp[counted_idx[first]] = 1.0
        fp = (~difficult_hit).astype(np.float64) - tp
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        num_gt[name] = npos
        num_det[name] = len(sel)
        if npos == 0:
            per_class[name] = math.nan
            continue
        recall = tp / float(npos)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = voc_ap(recall, precision, use_2007_metric)

    valid = [ap for ap in per_class.values() if not math.isnan(ap)]
    return {
        "mAP": float(np.mean(valid)) if valid else math.nan,
        "per_class_AP": per_class,
        "num_gt": num_gt,
        "num_detections": num_det,
        "metric": "voc2007" if use_2007_metric else "voc2010",
        "match_iou": match_iou,
    }


def _shortest(x: float) -> str:
    """The shortest text that reads back as the same score (float32 scores stay short: 0.9, not 0.899999976)."""
    x32 = np.float32(x)
    if float(x32) == x:
        return np.format_float_positional(x32, unique=True, trim="0")
    return repr(float(x))


def write_voc_detections(
    out_dir: str,
    detections: Sequence[Any],
    image_ids: Sequence[Any],
    class_names: Sequence[str],
    box_convention: str = "continuous",
    prefix: str = "det_test_",
) -> list[str]:
    """Write the devkit's per-class result files ``<out_dir>/det_test_<class>.txt``.

    One line per detection: ``image_id score xmin ymin xmax ymax``, boxes in the devkit's 1-based
    convention (converted from continuous pixel boxes unless ``box_convention="devkit"``) to 0.01
    pixel, scores exact (the shortest text that reads back as the same number, so the ranking of
    near-tied detections survives). A file is written for every class, empty when it has no
    detection. Returns the paths written.
    """
    import os

    if box_convention not in _BOX_CONVENTIONS:
        raise ValueError(f"box_convention should be one of {_BOX_CONVENTIONS}, got {box_convention!r}")
    if len(detections) != len(image_ids):
        raise ValueError(f"got detections for {len(detections)} images but {len(image_ids)} image ids")
    lines: list[list[str]] = [[] for _ in class_names]
    for det, image_id in zip(detections, image_ids):
        boxes, scores, labels = as_numpy_detections(det)
        if box_convention == "continuous":
            boxes = to_devkit_boxes(boxes)
        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            if not 0 < label < len(class_names):
                raise ValueError(f"detection label {label} is outside 1..{len(class_names) - 1}")
            lines[label].append(f"{image_id} {_shortest(score)} {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f}\n")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for label in range(1, len(class_names)):
        path = os.path.join(out_dir, f"{prefix}{class_names[label]}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(lines[label])
        paths.append(path)
    return paths
