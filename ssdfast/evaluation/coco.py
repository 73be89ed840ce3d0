"""COCO box AP with pycocotools' ``COCOeval`` (or ``faster-coco-eval`` when installed: same numbers).

Detections come in per image as pixel ``xyxy`` boxes with contiguous labels ``1..C-1``; they are
turned into the COCO results format (``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``)
with each label mapped back to the dataset's original category id, then scored against the ground
truth. The summary is the usual 12 numbers, under the names detectron2 and torchvision use.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .voc import as_numpy_detections

__all__ = ["COCO_STAT_NAMES", "to_coco_results", "coco_gt_from_annotations", "evaluate_coco"]

#: The 12 numbers of ``COCOeval.summarize()``, in its order.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """pycocotools prints progress on stdout; keep it only when asked."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _category_of(label: int, category_ids: Sequence[int] | None) -> int:
    return int(label) if category_ids is None else int(category_ids[int(label)])


def to_coco_results(
    detections: Sequence[Any],
    image_ids: Sequence[Any],
    category_ids: Sequence[int] | None,
) -> list[dict[str, Any]]:
    """Per-image detections -> COCO results list.

    Args:
        detections: one entry per image: boxes ``[K, 4]`` xyxy pixels, scores ``[K]``, labels ``[K]``
            (a dict, a tuple or an object; see :func:`ssdfast.evaluation.voc.as_numpy_detections`).
        image_ids: the COCO image id of each entry.
        category_ids: ``category_ids[label]`` is the original category id of a label (index 0, the
            background, is unused); ``None`` keeps the labels as category ids.
    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h] (w = x2 - x1), "score"}, ...]``, plain
        Python types (ready for ``json.dump``).
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"got detections for {len(detections)} images but {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for det, image_id in zip(detections, image_ids):
        boxes, scores, labels = as_numpy_detections(det)
        if len(labels) == 0:
            continue
        if category_ids is not None and (labels.min() < 0 or labels.max() >= len(category_ids)):
            raise ValueError(f"label {int(labels.max())} has no category id ({len(category_ids)} category ids)")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        image_id = image_id.item() if hasattr(image_id, "item") else image_id
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            results.append(
                {"image_id": image_id, "category_id": _category_of(label, category_ids), "bbox": box, "score": score}
            )
    return results


def coco_gt_from_annotations(
    annotations: Sequence[Mapping[str, Any]],
    category_ids: Sequence[int] | None,
    class_names: Sequence[str] | None = None,
    image_ids: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """A COCO ground-truth dict from ``dataset.get_annotation(i)``-style dicts.

    Boxes are pixel xyxy. A box's ``area`` is its ``w * h`` unless the annotation gives ``"area"``;
    ``"iscrowd"`` is taken when given; *difficult* boxes become crowd regions (a detection on them
    is ignored rather than counted, the closest COCO has to VOC's rule). Image ids are
    ``image_ids[i]`` (default: the position ``i``).
    """
    num_labels = len(class_names) if class_names is not None else None
    if num_labels is None and category_ids is not None:
        num_labels = len(category_ids)
    images, anns = [], []
    seen_labels: set[int] = set()
    for i, ann in enumerate(annotations):
        image_id = i if image_ids is None else image_ids[i]
        images.append({"id": image_id, "width": int(ann.get("width", 0)), "height": int(ann.get("height", 0))})
        boxes = np.asarray(_plain(ann["boxes"]), dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(_plain(ann["labels"]), dtype=np.int64).reshape(-1)
        difficult = ann.get("difficult")
        difficult = (np.zeros(len(labels), bool) if difficult is None
                     else np.asarray(_plain(difficult), bool).reshape(-1))
        iscrowd = ann.get("iscrowd")
        iscrowd = difficult if iscrowd is None else (np.asarray(_plain(iscrowd), bool).reshape(-1) | difficult)
        area = ann.get("area")
        wh = boxes[:, 2:] - boxes[:, :2]
        area = wh[:, 0] * wh[:, 1] if area is None else np.asarray(_plain(area), np.float64).reshape(-1)
        for box, w_h, label, crowd, a in zip(boxes.tolist(), wh.tolist(), labels.tolist(), iscrowd.tolist(),
                                             area.tolist()):
            seen_labels.add(label)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": _category_of(label, category_ids),
                    "bbox": [box[0], box[1], w_h[0], w_h[1]],
                    "area": a,
                    "iscrowd": int(crowd),
                }
            )
    labels_all = range(1, num_labels) if num_labels is not None else sorted(seen_labels)
    categories = [
        {"id": _category_of(label, category_ids), "name": class_names[label] if class_names is not None else str(label)}
        for label in labels_all
    ]
    return {"images": images, "annotations": anns, "categories": categories}


def _plain(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _coco_classes(backend: str):
    """(COCO, COCOeval) classes of the chosen implementation."""
    if backend in ("auto", "faster-coco-eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster, "faster-coco-eval"
        except ImportError:
            if backend == "faster-coco-eval":
                raise ImportError(
                    "backend='faster-coco-eval' needs the faster-coco-eval package: pip install faster-coco-eval"
                ) from None
    elif backend != "pycocotools":
        raise ValueError(f"backend should be 'auto', 'pycocotools' or 'faster-coco-eval', got {backend!r}")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval, "pycocotools"


def _make_coco(coco_cls: Any, dataset: dict[str, Any]) -> Any:
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _gt_dict(source: Any, category_ids: Sequence[int] | None, class_names: Sequence[str] | None,
             indices: Sequence[int]) -> tuple[dict[str, Any], list[Any] | None]:
    """The ground truth as a COCO dict, and the image ids of the dataset items ``indices`` when it is a dataset."""
    if isinstance(source, (str, os.PathLike)):
        with open(source) as f:
            return json.load(f), None
    if isinstance(source, Mapping):
        return dict(source), None
    if hasattr(source, "dataset") and hasattr(source, "getImgIds"):  # a COCO api object
        return source.dataset, None
    if hasattr(source, "get_annotation"):  # an ssdfast dataset
        annotations = [source.get_annotation(i) for i in indices]
        coco = getattr(source, "coco", None)
        ids = [a["image_id"] for a in annotations]
        if coco is not None and hasattr(coco, "dataset"):  # the original COCO annotations
            known = {img["id"] for img in coco.dataset.get("images", [])}
            if len(set(ids)) == len(ids) and all(i in known for i in ids):
                return coco.dataset, ids
            # several roots concatenated: their ids may collide, and .coco holds the first root only
        if class_names is None:
            class_names = getattr(source, "class_names", None)
        return coco_gt_from_annotations(annotations, category_ids, class_names), list(range(len(annotations)))
    raise TypeError(
        "evaluate_coco: the ground truth should be a dataset with get_annotation(), a COCO object, "
        f"a COCO dict or a json path, got {type(source).__name__}"
    )


def evaluate_coco(
    detections: Sequence[Any],
    dataset_or_coco_gt: Any,
    category_ids: Sequence[int] | None = None,
    *,
    image_ids: Sequence[Any] | None = None,
    indices: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    backend: str = "auto",
    verbose: bool = False,
) -> dict[str, Any]:
    """COCO box evaluation of per-image detections.

    Args:
        detections: one entry per image: boxes ``[K, 4]`` xyxy pixels, scores ``[K]``, labels ``[K]``.
        dataset_or_coco_gt: the ground truth: an ssdfast dataset (``get_annotation``; its ``.coco``
            object is used when it has one, so crowd regions and mask areas count as in the
            official evaluation), a pycocotools ``COCO``, a COCO-format dict, or a json path.
        category_ids: label -> original category id; default: the dataset's ``category_ids``, else
            the labels themselves.
        image_ids: the COCO image id of each entry of ``detections``. Default: the ``"image_id"`` of
            the dataset's annotations, or ``det["image_id"]`` when the detections carry it. Only
            these images are evaluated, and only the categories of ``category_ids``.
        indices: with a dataset, the dataset index of each entry of ``detections`` (default
            ``0, 1, ...``): evaluate a subset, such as the images that could be read.
        class_names: label names, for ``per_class_AP`` (default: the categories' names).
        backend: ``"auto"`` (faster-coco-eval when importable, else pycocotools), ``"pycocotools"``
            or ``"faster-coco-eval"``.
        verbose: let the library print its progress and summary table.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"``
        (floats; -1 where the ground truth has no box in that area range, as COCOeval gives),
        ``"per_class_AP": {name: AP@[.5:.95] or nan}, "num_detections": int, "backend": str,
        "results": [...]`` (the COCO results list), ``"image_ids"`` (the id used for each entry of
        ``detections``: positions ``0, 1, ...`` when the ground truth was built from a dataset's
        annotations)``}``.
    """
    if category_ids is None and hasattr(dataset_or_coco_gt, "get_annotation"):
        category_ids = getattr(dataset_or_coco_gt, "category_ids", None)
    if indices is None:
        indices = range(len(detections))
    elif len(indices) != len(detections):
        raise ValueError(f"got detections for {len(detections)} images but {len(indices)} indices")
    gt_dict, dataset_ids = _gt_dict(dataset_or_coco_gt, category_ids, class_names, indices)
    if image_ids is None:
        if dataset_ids is not None:
            image_ids = dataset_ids
        elif all(isinstance(d, Mapping) and "image_id" in d for d in detections):
            image_ids = [d["image_id"] for d in detections]
        else:
            raise ValueError("evaluate_coco: give image_ids (or detections with an 'image_id') for a COCO ground truth")
    results = to_coco_results(detections, image_ids, category_ids)
    known = {img["id"] for img in gt_dict.get("images", [])}
    missing = [i for i in image_ids if i not in known]
    if missing:
        raise ValueError(f"evaluate_coco: image id {missing[0]!r} is not in the ground truth ({len(missing)} missing)")

    # only the categories the labels stand for (a label file may have picked some of the dataset's)
    gt_cats = {c["id"] for c in gt_dict.get("categories", [])}
    cat_ids = None if category_ids is None else sorted({int(c) for c in category_ids[1:]} & gt_cats)
    coco_cls, eval_cls, used = _coco_classes(backend)
    try:
        stats, per_class = _run(coco_cls, eval_cls, gt_dict, results, image_ids, cat_ids, verbose)
    except Exception as exc:  # a broken optional accelerator must not cost the user the numbers
        if used != "faster-coco-eval" or backend == "faster-coco-eval":
            raise
        warnings.warn(f"faster-coco-eval failed ({exc}); using pycocotools", RuntimeWarning, stacklevel=2)
        coco_cls, eval_cls, used = _coco_classes("pycocotools")
        stats, per_class = _run(coco_cls, eval_cls, gt_dict, results, image_ids, cat_ids, verbose)

    cat_names = {c["id"]: c.get("name", str(c["id"])) for c in gt_dict.get("categories", [])}
    if class_names is not None:
        labels = range(1, len(class_names))
        cat_names.update({_category_of(label, category_ids): class_names[label] for label in labels
                          if category_ids is None or label < len(category_ids)})
    out: dict[str, Any] = dict(zip(COCO_STAT_NAMES, (float(s) for s in stats)))
    out["per_class_AP"] = {cat_names.get(cat, str(cat)): ap for cat, ap in per_class.items()}
    out["num_detections"] = len(results)
    out["backend"] = used
    out["results"] = results
    out["image_ids"] = list(image_ids)
    return out


def _run(coco_cls: Any, eval_cls: Any, gt_dict: dict[str, Any], results: list[dict[str, Any]],
         image_ids: Sequence[Any], cat_ids: list[int] | None, verbose: bool) -> tuple[np.ndarray, dict[int, float]]:
    with _quiet(verbose):
        # COCOeval and loadRes add keys to the annotation dicts: give them copies (shallow is enough)
        gt_copy = dict(gt_dict, annotations=[dict(a) for a in gt_dict.get("annotations", [])])
        coco_gt = _make_coco(coco_cls, gt_copy)
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            coco_dt = _make_coco(coco_cls, {"images": gt_dict.get("images", []), "annotations": [],
                                            "categories": gt_dict.get("categories", [])})
        evaluator = eval_cls(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = list(dict.fromkeys(image_ids))
        if cat_ids:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(COCO_STAT_NAMES)]
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    per_class: dict[int, float] = {}
    for k, cat in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]  # area "all", maxDets 100
        p = p[p > -1]
        per_class[int(cat)] = float(p.mean()) if p.size else math.nan
    return stats, per_class
