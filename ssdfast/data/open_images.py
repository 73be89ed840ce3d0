"""Open Images in pytorch-ssd's downloader layout.

::

    <root>/sub-train-annotations-bbox.csv        ImageID,...,XMin,XMax,YMin,YMax,...,ClassName
    <root>/sub-validation-annotations-bbox.csv   (coordinates normalized to [0, 1])
    <root>/sub-test-annotations-bbox.csv
    <root>/{train,validation,test}/<ImageID>.jpg

``split``: train -> train, val -> validation, test -> test. Class names: ``label_file`` if given, else
``BACKGROUND`` + the sorted ``ClassName`` values of every ``sub-*-annotations-bbox.csv`` in the
root(s), so train and test agree on the labels. ``IsGroupOf`` boxes are flagged ``difficult``.

``balance=True`` (pytorch-ssd's ``--balance-data``) evens out the classes. pytorch-ssd keeps, per
class, a random ``min_count`` of the images that contain it (undersampling, which throws most of a
common class away); here every class is instead topped up to the most frequent class's image count
by drawing extra (repeated) images that contain it, seeded, so nothing is discarded and rare classes
are seen as often as common ones.
"""
from __future__ import annotations

import csv
import glob
import os
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..io import image_size
from ._base import BACKGROUND, DetectionDataset, Transform, _Record, log, read_label_file

__all__ = ["OpenImagesDataset", "balanced_order", "read_annotation_csv", "row_box"]

_SPLIT_DIRS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
#: Columns a ``sub-<split>-annotations-bbox.csv`` must have.
CSV_COLUMNS = frozenset({"ImageID", "XMin", "XMax", "YMin", "YMax", "ClassName"})


def read_annotation_csv(path: str) -> list[dict[str, str]]:
    """The rows of a ``sub-<split>-annotations-bbox.csv``; DataError naming the file when it cannot be
    read, is not CSV or lacks one of :data:`CSV_COLUMNS`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = CSV_COLUMNS - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: missing columns {sorted(missing)}")
            return list(reader)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unparsable CSV ({exc})") from None


def row_box(row: dict[str, str]) -> tuple[float, float, float, float] | None:
    """The normalized ``xyxy`` box of an annotation row; None when a coordinate is not a number."""
    try:
        return float(row["XMin"]), float(row["YMin"]), float(row["XMax"]), float(row["YMax"])
    except (TypeError, ValueError):
        return None


def balanced_order(image_labels: Sequence[np.ndarray], num_classes: int, seed: int = 0) -> np.ndarray:
    """Indices of images that oversample rare classes: every image once, plus extra draws (with
    replacement) of images containing class c until c appears in as many drawn images as the most
    common class. ``image_labels[i]``: labels of image i (1..num_classes-1)."""
    rng = np.random.default_rng(seed)
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, labels in enumerate(image_labels):
        for c in set(int(v) for v in labels):
            per_class[c].append(i)
    counts = [len(per_class[c]) for c in range(1, num_classes)]
    present = [c for c in counts if c > 0]
    if not present:
        return np.arange(len(image_labels))
    target = max(present)
    order = [np.arange(len(image_labels))]
    for c in range(1, num_classes):
        have = len(per_class[c])
        if 0 < have < target:
            order.append(rng.choice(np.asarray(per_class[c]), size=target - have, replace=True))
    out = np.concatenate(order)
    rng.shuffle(out)
    return out


class OpenImagesDataset(DetectionDataset):
    """Open Images subsets downloaded by pytorch-ssd (see the module docstring and :class:`DetectionDataset`)."""

    _normalized_boxes = True

    def __init__(
        self,
        roots: str | Sequence[str],
        split: str = "train",
        transform: Transform | None = None,
        label_file: str | None = None,
        balance: bool = False,
        keep_difficult: bool = False,
        strict: bool = False,
        seed: int = 0,
    ):
        super().__init__(transform=transform, keep_difficult=keep_difficult, strict=strict)
        self._set_roots(roots)
        if split not in _SPLIT_DIRS:
            raise ValueError(f"split should be 'train', 'val' or 'test', got {split!r}")
        self.split = split
        folder = _SPLIT_DIRS[split]

        rows_per_root = []
        for root in self.roots:
            path = os.path.join(root, f"sub-{folder}-annotations-bbox.csv")
            if not os.path.isfile(path):
                raise DataError(f"{path}: no Open Images annotation file for split {split!r}")
            rows_per_root.append((root, path, read_annotation_csv(path)))

        if label_file is not None:
            self.class_names = read_label_file(label_file)
        else:
            names: set[str] = set()
            for root in self.roots:
                for other in glob.glob(os.path.join(root, "sub-*-annotations-bbox.csv")):
                    rows = next((r for _, p, r in rows_per_root if os.path.samefile(p, other)), None)
                    if rows is None:
                        try:
                            rows = read_annotation_csv(other)
                        except DataError as exc:
                            log.warning("%s", exc)
                            continue
                    names.update(row["ClassName"] for row in rows)
            self.class_names = [BACKGROUND] + sorted(names)
        class_index = {name: i for i, name in enumerate(self.class_names)}

        records: list[_Record] = []
        for root, csv_path, rows in rows_per_root:
            per_image: dict[str, list[tuple]] = {}
            for line, row in enumerate(rows, start=2):
                image_id = row["ImageID"]
                name = row["ClassName"]
                box = row_box(row)
                if box is None:
                    self._bad_annotation(csv_path, f"line {line} (image {image_id}): non-numeric box")
                    per_image.setdefault(image_id, [])
                    continue
                if name not in class_index or class_index[name] == 0:
                    self._note("unknown_class", csv_path, details=[repr(name)])
                    per_image.setdefault(image_id, [])
                    continue
                group = str(row.get("IsGroupOf", "0")).strip() in ("1", "True", "true")
                per_image.setdefault(image_id, []).append((class_index[name], group) + box)
            for image_id, objs in per_image.items():
                path = os.path.join(root, folder, image_id + ".jpg")
                boxes = np.array([o[2:] for o in objs], dtype=np.float32).reshape(-1, 4)
                labels = np.array([o[0] for o in objs], dtype=np.int64)
                group = np.array([o[1] for o in objs], dtype=bool)
                records.append(_Record(image_id, path, 0, 0, boxes, labels, group))
        self._size_cache: dict[int, tuple[int, int]] = {}
        self._set_records(records)
        if balance:
            image_labels = [self._labels[self._offsets[r]: self._offsets[r + 1]] for r in range(len(records))]
            self._order = balanced_order(image_labels, len(self.class_names), seed=seed)
            log.info("balanced %d images to %d samples", len(records), len(self._order))

    def _image_size(self, r: int) -> tuple[int, int]:
        """Image size from the file header, EXIF orientation applied (Open Images' CSVs do not carry
        it), cached."""
        if r not in self._size_cache:
            try:
                self._size_cache[r] = image_size(self._paths[r])
            except DataError as exc:
                if self.strict:
                    raise
                log.warning("%s", exc)
                return 0, 0
        return self._size_cache[r]
