"""COCO through pycocotools: the official 2017 layout and the ``images/<split>/`` layout.

Layouts found under a root (``split`` train -> ``train``, test / val -> ``val``)::

    annotations/instances_train2017.json   train2017/*.jpg         (official)
    annotations/instances_train.json       images/train/*.jpg      (images/<split>/)

A root may also be an image folder of the official layout, e.g. ``data/coco/train2017`` beside
``data/coco/annotations/instances_train2017.json`` (also ``images/<name>/`` with ``annotations/``
one level higher): its annotations are ``../annotations/instances_<folder>.json`` (or
``<folder>.json``), whatever the split, so ``--datasets data/coco/train2017 --validation-dataset
data/coco/val2017`` works as in the official download.

Labels are contiguous, ``1..N`` in the order of the sorted category ids (or the order of a label
file's names, which then selects a subset of the categories); ``category_ids[label]`` maps back
(``category_ids[0] == 0`` is the background). Crowd boxes and images without (non-crowd) boxes are
skipped for training; for evaluation (split test / val) every image is kept and crowd boxes are in
``get_annotation`` flagged ``difficult``.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ._base import BACKGROUND, DetectionDataset, Transform, _Record, log, read_label_file

__all__ = ["COCODataset", "find_coco_split", "annotations_of_image_folder", "load_coco", "coco_box", "coco_image_path"]


def _split_names(split: str) -> list[str]:
    if split == "train":
        return ["train"]
    if split in ("val", "test"):
        return ["val", "test"]  # COCO's test set has no public annotations: evaluate on val
    raise ValueError(f"split should be 'train', 'test' or 'val', got {split!r}")


def annotations_of_image_folder(folder: str) -> str | None:
    """The annotation file of an image folder of the official layout (``<coco>/train2017`` ->
    ``<coco>/annotations/instances_train2017.json``; ``<coco>/images/train`` ->
    ``<coco>/annotations/instances_train.json``), or None."""
    folder = os.path.normpath(folder)
    name = os.path.basename(folder)
    parent = os.path.dirname(folder)
    for base in dict.fromkeys((parent, os.path.dirname(parent))):  # paths as the user gave them
        for ann_name in (f"instances_{name}.json", f"{name}.json"):
            path = os.path.join(base, "annotations", ann_name)
            if os.path.isfile(path):
                return path
    return None


def find_coco_split(root: str, split: str) -> tuple[str, str]:
    """-> (annotation json, image folder) of ``split`` under ``root``, or of the image folder
    ``root`` (see the module docstring); DataError when none is found."""
    tried = []
    if not os.path.isdir(os.path.join(root, "annotations")):
        ann = annotations_of_image_folder(root)
        if ann is not None:
            return ann, root
        name = os.path.basename(os.path.normpath(root))
        tried.append(os.path.join(os.path.dirname(os.path.normpath(root)), "annotations", f"instances_{name}.json"))
    for name in _split_names(split):
        for ann_name, img_dirs in (
            (f"instances_{name}2017.json", [f"{name}2017", os.path.join("images", f"{name}2017"),
                                            os.path.join("images", name)]),
            (f"instances_{name}.json", [os.path.join("images", name), name, f"{name}2017"]),
            (f"{name}.json", [os.path.join("images", name), name]),
        ):
            ann = os.path.join(root, "annotations", ann_name)
            tried.append(ann)
            if not os.path.isfile(ann):
                continue
            for d in img_dirs:
                if os.path.isdir(os.path.join(root, d)):
                    return ann, os.path.join(root, d)
            return ann, os.path.join(root, img_dirs[0])  # missing images are reported per image
    raise DataError(f"{root}: no COCO annotation file for split {split!r} (looked for {', '.join(tried[:4])} ...)")


def load_coco(ann_path: str):
    """pycocotools.COCO of ``ann_path`` without its prints; DataError naming the file when it is broken
    (not JSON, not a dict, an image or annotation without its ``id``)."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(ann_path)
    except Exception as exc:  # json errors, missing keys
        raise DataError(f"{ann_path}: unparsable COCO annotation file ({type(exc).__name__}: {exc})") from None
    return coco


def coco_box(bbox: Any) -> tuple[float, float, float, float] | None:
    """A COCO ``bbox`` (``[x, y, width, height]``) as ``xyxy``; None when it is not 4 numbers."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    return x, y, x + w, y + h


def coco_image_path(image_dir: str, info: dict[str, Any]) -> str:
    """The file of a COCO ``images`` entry: its ``file_name`` in ``image_dir`` (``<id:012d>.jpg``, COCO's
    naming, when it has none)."""
    return os.path.join(image_dir, info.get("file_name", f"{info['id']:012d}.jpg"))


class COCODataset(DetectionDataset):
    """COCO roots (see the module docstring and :class:`DetectionDataset`).

    Attributes beyond the base: ``category_ids`` (label -> COCO category id, ``[0] == 0``),
    ``coco`` (the pycocotools ``COCO`` of the first root: the evaluator's ground truth),
    ``annotation_files``.
    """

    def __init__(
        self,
        roots: str | Sequence[str],
        split: str = "train",
        transform: Transform | None = None,
        label_file: str | None = None,
        keep_difficult: bool = False,
        strict: bool = False,
    ):
        super().__init__(transform=transform, keep_difficult=keep_difficult, strict=strict)
        self._set_roots(roots)
        self.split = split
        training = split == "train"

        cocos = []
        self.annotation_files: list[str] = []
        for root in self.roots:
            ann, images = find_coco_split(root, split)
            cocos.append((load_coco(ann), images, ann))
            self.annotation_files.append(ann)
        self.coco = cocos[0][0]

        # category id -> name, union over the roots (first name wins)
        categories: dict[int, str] = {}
        for coco, _, _ in cocos:
            for cat in coco.loadCats(coco.getCatIds()):
                categories.setdefault(int(cat["id"]), str(cat["name"]))
        if label_file is not None:
            names = read_label_file(label_file)
            by_name = {v: k for k, v in categories.items()}
            missing = [n for n in names[1:] if n not in by_name]
            if missing:
                raise DataError(f"{label_file}: classes not among the COCO categories: {missing}")
            ids = [by_name[n] for n in names[1:]]
        else:
            ids = sorted(categories)
        self.category_ids = [0] + ids
        self.class_names = [BACKGROUND] + [categories[i] for i in ids]
        label_of = {cat_id: label for label, cat_id in enumerate(self.category_ids) if label > 0}

        records: list[_Record] = []
        no_boxes = 0
        for coco, image_dir, ann_path in cocos:
            for image_id in sorted(coco.getImgIds()):
                info = coco.imgs[image_id]
                path = coco_image_path(image_dir, info)
                anns = coco.imgToAnns.get(image_id, [])
                boxes, labels, crowd = [], [], []
                bad = None
                for a in anns:
                    cat = a.get("category_id")
                    if cat not in label_of:  # a category left out by the label file, or none at all
                        if cat not in categories:
                            self._note("unknown_class", path, details=[f"category_id {cat!r}"])
                        continue
                    box = coco_box(a.get("bbox"))
                    if box is None:
                        bad = f"annotation {a.get('id')} has a malformed bbox {a.get('bbox')!r}"
                        break
                    is_crowd = bool(a.get("iscrowd", 0))
                    if is_crowd and training:
                        continue
                    boxes.append(box)
                    labels.append(label_of[cat])
                    crowd.append(is_crowd)
                if bad is not None:
                    self._bad_annotation(ann_path, f"image {image_id} ({path}): {bad}")
                    continue
                rec = _Record(
                    image_id, path, int(info.get("width", 0) or 0), int(info.get("height", 0) or 0),
                    np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
                    np.array(crowd, dtype=bool),
                )
                records.append(rec)
        self._set_records(records)
        if training:
            # images with no usable box teach nothing to SSD's matcher: skip them for training
            counts = np.diff(self._offsets)
            keep = np.nonzero(counts > 0)[0]
            no_boxes = len(records) - len(keep)
            if no_boxes:
                self._order = keep
                self.stats["skipped_images"] += no_boxes
                log.info("%s: %d images without boxes skipped for training", self.roots[0], no_boxes)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by spawn/forkserver get a copy: they never need the (large) COCO index
        state = self.__dict__.copy()
        state["coco"] = None
        return state

    def category_id(self, label: int) -> int:
        """The COCO category id of a contiguous label (1..N)."""
        return self.category_ids[label]
