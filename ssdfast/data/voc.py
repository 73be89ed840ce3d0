"""Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/{trainval,test}.txt``.

Several roots (VOC2007 + VOC2012) make one dataset. Class names come from ``label_file``, else a
``labels.txt`` in the first root (one name a line, ``BACKGROUND`` first line optional), else the 20
VOC classes when every name in the annotations is one of them, else the sorted names found.

Coordinates: VOC's 1-based pixel indices become continuous pixel ``xyxy`` as detectron2 reads them
(``x1 = xmin - 1``, ``x2 = xmax``), so a box covering pixels 0..9 is ``[0, 10]``.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..threads import available_cores
from ._base import DetectionDataset, Transform, _Record, discover_names, log, read_label_file

__all__ = ["VOCDataset", "parse_voc_xml", "voc_split_file", "voc_image_path"]

#: parse the XML files with a process pool above this many files
_PARALLEL_PARSE_MIN = 4000
_PARALLEL_PARSE_MIN_CPUS = 4


def voc_split_file(root: str, split: str) -> str:
    """The image-set list for ``split``: train -> trainval.txt (or train.txt), test/val -> test.txt (or val.txt)."""
    main = os.path.join(root, "ImageSets", "Main")
    if split == "train":
        candidates = ["trainval.txt", "train.txt"]
    elif split in ("test", "val"):
        candidates = ["test.txt", "val.txt"]  # pytorch-ssd evaluates VOC on test.txt
    else:
        raise ValueError(f"split should be 'train', 'test' or 'val', got {split!r}")
    for name in candidates:
        path = os.path.join(main, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{os.path.join(main, candidates[0])}: no image list for split {split!r} (looked for {candidates})")


def voc_image_path(root: str, image_id: str, filename: str | None = None) -> str:
    """``JPEGImages/<id>.jpg``, or the annotation's ``<filename>`` when that file is not there
    (e.g. a set of PNG images)."""
    path = os.path.join(root, "JPEGImages", image_id + ".jpg")
    if filename and filename != image_id + ".jpg" and not os.path.isfile(path):
        path = os.path.join(root, "JPEGImages", os.path.basename(filename))
    return path


def parse_voc_xml(path: str) -> dict[str, Any]:
    """Parse one VOC annotation -> ``{"filename", "width", "height", "objects": [(name, difficult, x1, y1, x2, y2)]}``.

    Names are stripped and lower case; boxes are continuous pixel ``xyxy`` (see the module docstring).
    Raises :class:`~ssdfast.errors.DataError` naming the file when it is missing, is not XML or has an
    object without a name or a numeric box: a file :class:`VOCDataset` skips (``strict``: refuses).
    """
    parsed = _parse_or_problem(path)
    if isinstance(parsed, str):
        raise DataError(f"{path}: {parsed}")
    return parsed


def _parse(path: str) -> dict[str, Any]:
    """:func:`parse_voc_xml`'s work; ``ValueError`` / ``ET.ParseError`` / ``OSError`` on a broken file."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = height = 0
    if size is not None:
        width = int(float(size.findtext("width", "0") or 0))
        height = int(float(size.findtext("height", "0") or 0))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if not name:
            raise ValueError("an <object> without a <name>")
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"object {name!r} has no <bndbox>")
        try:
            x1 = float(box.findtext("xmin")) - 1.0
            y1 = float(box.findtext("ymin")) - 1.0
            x2 = float(box.findtext("xmax"))
            y2 = float(box.findtext("ymax"))
        except (TypeError, ValueError):
            raise ValueError(f"object {name!r} has a missing or non-numeric bndbox coordinate") from None
        objects.append((name, difficult, x1, y1, x2, y2))
    return {"filename": root.findtext("filename"), "width": width, "height": height, "objects": objects}


def _parse_or_problem(path: str) -> dict[str, Any] | str:
    """:func:`parse_voc_xml`'s result, or what stops it (one line, without the path): what the process
    pool returns."""
    try:
        return _parse(path)
    except FileNotFoundError:
        return "annotation file is missing"
    except ET.ParseError as exc:
        return f"unparsable XML ({exc})"
    except (OSError, ValueError) as exc:
        return f"bad annotation ({exc})"


def _parse_all(paths: Sequence[str]) -> list[dict[str, Any] | str]:
    # ~13k files/s on one core: a pool only pays off with several cores and many files
    workers = min(available_cores(), 8)
    if len(paths) >= _PARALLEL_PARSE_MIN and workers >= _PARALLEL_PARSE_MIN_CPUS:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_parse_or_problem, paths, chunksize=256))
    return [_parse_or_problem(p) for p in paths]


class VOCDataset(DetectionDataset):
    """Pascal VOC roots concatenated (see the module docstring and :class:`DetectionDataset`).

    Args:
        roots: one or more VOC roots (the folder holding ``Annotations/``).
        split: ``"train"`` (trainval.txt) or ``"test"`` / ``"val"`` (test.txt, else val.txt).
        transform: ``(uint8 image [3,H,W], boxes px xyxy [G,4], labels [G]) -> (image, boxes normalized, labels)``.
        label_file: class names file; default ``<root>/labels.txt`` when present.
        keep_difficult: keep ``difficult`` objects in ``dataset[i]`` (they are always in ``get_annotation``).
        strict: raise :class:`~ssdfast.errors.DataError` on a broken annotation or image instead of skipping it.
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

        entries: list[tuple[str, str, str]] = []  # (root, image id, xml path)
        for root in self.roots:
            if not os.path.isdir(root):
                raise DataError(f"{root}: not a directory")
            list_path = voc_split_file(root, split)
            with open(list_path, encoding="utf-8") as f:
                ids = [line.split()[0] for line in f if line.strip()]
            entries += [(root, i, os.path.join(root, "Annotations", i + ".xml")) for i in ids]

        parsed = _parse_all([e[2] for e in entries])

        if label_file is None:
            default = os.path.join(self.roots[0], "labels.txt")
            label_file = default if os.path.isfile(default) else None
        if label_file is not None:
            self.class_names = read_label_file(label_file)
        else:
            self.class_names = discover_names(n for p in parsed if isinstance(p, dict) for n, *_ in p["objects"])
        class_index = {name.lower(): i for i, name in enumerate(self.class_names)}

        records: list[_Record] = []
        unknown: set[str] = set()
        for (root, image_id, xml_path), ann in zip(entries, parsed):
            if isinstance(ann, str):
                self._bad_annotation(xml_path, ann)
                continue
            names = [o[0] for o in ann["objects"]]
            known = [n in class_index and class_index[n] > 0 for n in names]
            if not all(known):
                strangers = [n for n, k in zip(names, known) if not k]
                unknown.update(strangers)
                self._note("unknown_class", xml_path, len(strangers), details=[repr(n) for n in strangers])
            objs = [o for o, k in zip(ann["objects"], known) if k]
            boxes = np.array([o[2:] for o in objs], dtype=np.float32).reshape(-1, 4)
            labels = np.array([class_index[o[0]] for o in objs], dtype=np.int64)
            difficult = np.array([o[1] for o in objs], dtype=bool)
            path = voc_image_path(root, image_id, ann["filename"])
            records.append(_Record(image_id, path, ann["width"], ann["height"], boxes, labels, difficult, xml_path))
        if unknown:
            log.warning(
                "%s: ignored %d boxes of classes not in the class list: %s",
                self.roots[0], self.stats["unknown_class_boxes"], sorted(unknown)[:20],
            )
        self._set_records(records)
