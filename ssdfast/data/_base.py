"""What every detection dataset shares: packed annotations, safe image decoding, box clean-up.

A dataset subclass parses its annotation files at construction into a list of :class:`_Record`
(one per image: path, size, boxes in pixels ``xyxy``, labels, difficult flags) and hands it to
:meth:`DetectionDataset._set_records`, which clips the boxes to the image, drops zero-area boxes
(counting both in :attr:`DetectionDataset.stats`) and packs everything into flat numpy arrays, so
DataLoader workers forked from the main process do not touch (and copy) millions of Python objects.
What parsing found wrong is summed up in :attr:`DetectionDataset.notes`: one line per kind of
problem (boxes clipped, zero-area boxes dropped, unknown classes, unreadable annotation entries)
with its count and the first few files.

``__getitem__`` decodes the image with :func:`ssdfast.io.load_image` (the one image reader), applies
the transform and returns ``(image, target)``. What the console should hear about travels with the
sample, so it reaches the main process from DataLoader workers: a truncated image that decodes is
used and its warning put in ``target["notes"]``; an unreadable image gives a :class:`SkippedSample`
(``strict=False``; :func:`ssdfast.data.collate_detection` drops it, counts it and keeps its note) or
raises :class:`~ssdfast.errors.DataError` naming the path (``strict=True``, which also refuses truncated
images).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError, one_line
from ..io import BACKGROUND, class_count, load_image, read_label_file
from ..io.images import strict_refusal

__all__ = ["DetectionDataset", "SkippedSample", "read_label_file", "BACKGROUND"]

log = logging.getLogger("ssdfast.data")

Transform = Callable[[Tensor, Tensor, Tensor], "tuple[Tensor, Tensor, Tensor]"]


@dataclass
class _Record:
    """One image as parsed from its annotation: boxes in pixels ``xyxy`` (normalized when the format
    does not know the image size, see ``DetectionDataset._normalized_boxes``)."""

    image_id: Any
    path: str
    width: int  # 0 when unknown before decoding
    height: int
    boxes: np.ndarray  # float32 [G, 4]
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]
    source: str | None = None  # the annotation file named in notes (default: the image path)


@dataclass
class _Issue:
    """One kind of problem found while parsing: how many, in which files (the first few), details."""

    count: int = 0
    files: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    details: dict[str, None] = field(default_factory=dict)
    more_details: bool = False


#: kind -> the note's wording (``{n}``: the count); the order notes are listed in
#: kind of parse note -> (the ``stats`` count it adds to, its line in :attr:`DetectionDataset.notes`)
_NOTE_KINDS = {
    "bad_annotation": ("bad_annotations", "{n} unreadable annotation entries skipped"),
    "unknown_class": ("unknown_class_boxes", "{n} boxes of classes not in the class list ignored"),
    "clipped": ("clipped_boxes", "{n} boxes sticking out of their image clipped to it"),
    "zero_area": ("zero_area_boxes", "{n} boxes of zero area (after clipping) dropped"),
}
_NOTE_FILES = 3  # files named per note
_NOTE_DETAILS = 8


@dataclass
class SkippedSample:
    """What ``dataset[i]`` gives for an image that cannot be used (``strict=False``): its index, file
    and why (one line, naming the file)."""

    index: int
    path: str
    reason: str

    @property
    def note(self) -> str:
        return f"skipped {self.reason}"


def _empty_record(image_id: Any, path: str, width: int = 0, height: int = 0) -> _Record:
    return _Record(image_id, path, width, height, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                   np.zeros(0, bool))


def clean_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Clip ``xyxy`` boxes to ``[0, width] x [0, height]``; -> (clipped boxes, keep mask, number clipped).

    ``keep`` is False for boxes of zero (or negative, or non-finite) area after clipping.
    """
    if boxes.shape[0] == 0:
        return boxes, np.zeros(0, bool), 0
    finite = np.isfinite(boxes).all(axis=1)
    boxes = np.nan_to_num(boxes, nan=0.0, posinf=0.0, neginf=0.0)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0.0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0.0, height, out=clipped[:, 1::2])
    changed = int((np.abs(clipped - boxes) > 1e-6).any(axis=1).sum())
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, keep, changed


class DetectionDataset(Dataset):
    """Base of the VOC / COCO / Open Images datasets (see the module docstring).

    ``dataset[i]`` -> ``(image, {"boxes": float32 [G, 4] normalized xyxy, "labels": int64 [G],
    "index": i})`` or ``None``. With a transform, ``image`` is what the transform returns
    (``float [3, S, S]`` normalized for :class:`~ssdfast.data.transforms.TrainTransform`); without
    one it is the decoded ``uint8 [3, H, W]`` image.

    Attributes: ``class_names`` (``BACKGROUND`` first), ``category_ids`` (COCO only, else None),
    ``stats`` (counts of what was clipped, dropped or skipped while parsing; the ``unreadable_images``
    count is per process, so use the ``skipped`` count of :func:`collate_detection` with workers),
    ``notes`` (what parsing found wrong, one line per kind of problem; empty when clean).
    """

    class_names: list[str]
    category_ids: list[int] | None = None
    #: True when stored boxes are normalized (image size unknown until decoding: Open Images).
    _normalized_boxes: bool = False

    def __init__(self, transform: Transform | None = None, keep_difficult: bool = False, strict: bool = False):
        self.transform = transform
        self.keep_difficult = keep_difficult
        self.strict = strict
        self.category_ids = None
        self.stats: dict[str, int] = {
            "images": 0,
            "boxes": 0,
            "clipped_boxes": 0,
            "zero_area_boxes": 0,
            "difficult_boxes": 0,
            "unknown_class_boxes": 0,
            "skipped_images": 0,
            "bad_annotations": 0,
            "unreadable_images": 0,
        }
        self.bad_files: list[str] = []
        self._issues: dict[str, _Issue] = {}
        self._order: np.ndarray | None = None  # dataset index -> record index (balancing)

    # ----------------------------------------------------------------------------- construction
    def _set_roots(self, roots: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        """``self.roots``: one root or several, as strings; none at all is an error."""
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        if not roots:
            raise ValueError(f"{type(self).__name__} needs at least one root")
        self.roots = [os.fspath(r) for r in roots]

    def _bad_annotation(self, path: str, message: str) -> None:
        """A broken annotation file: raise when strict, else warn, record and go on."""
        if self.strict:
            raise DataError(f"{path}: {message}")
        log.warning("skipping %s: %s", path, message)
        self.bad_files.append(path)
        self._note("bad_annotation", path, details=[message])

    def _note(self, kind: str, file: str, count: int = 1, details: Iterable[str] = ()) -> None:
        """Count ``count`` problems of ``kind`` (a key of ``_NOTE_KINDS``) in ``file``, in :attr:`stats` and
        for :attr:`notes`, with ``details`` (class names, messages) of which the first few are shown."""
        if count <= 0:
            return
        self.stats[_NOTE_KINDS[kind][0]] += count
        issue = self._issues.setdefault(kind, _Issue())
        issue.count += count
        issue.files[file] = None
        for detail in details:
            if detail in issue.details:
                continue
            if len(issue.details) == _NOTE_DETAILS:
                issue.more_details = True
                break
            issue.details[detail] = None

    @property
    def notes(self) -> list[str]:
        """What parsing the annotations found wrong: one line per kind of problem, with its count
        and the first few files (e.g. ``"3 boxes sticking out of their image clipped to it, in 2
        files: a.xml, b.xml"``); empty when clean."""
        lines = []
        for kind, (_, text) in _NOTE_KINDS.items():
            issue = self._issues.get(kind)
            if issue is None:
                continue
            files = list(issue.files)
            named = ", ".join(files[:_NOTE_FILES]) + (" ..." if len(files) > _NOTE_FILES else "")
            line = f"{text.format(n=issue.count)}, in {len(files)} file{'s' if len(files) != 1 else ''}: {named}"
            if issue.details:
                line += f" ({'; '.join(issue.details)}{' ...' if issue.more_details else ''})"
            lines.append(line)
        return lines

    def _set_records(self, records: Sequence[_Record]) -> None:
        """Clip and filter the boxes of ``records`` and pack them into flat arrays."""
        n = len(records)
        self._paths: list[str] = [r.path for r in records]
        self._ids: list[Any] = [r.image_id for r in records]
        self._sizes = np.array([[r.width, r.height] for r in records], dtype=np.int64).reshape(n, 2)
        counts = np.zeros(n + 1, dtype=np.int64)
        all_boxes, all_labels, all_difficult = [], [], []
        for i, r in enumerate(records):
            boxes = np.asarray(r.boxes, dtype=np.float32).reshape(-1, 4)
            if self._normalized_boxes:
                limit_w, limit_h = 1.0, 1.0
            else:
                limit_w, limit_h = ((float(r.width), float(r.height)) if r.width > 0 and r.height > 0
                                    else (np.inf, np.inf))
            boxes, keep, changed = clean_boxes(boxes, limit_w, limit_h)
            self._note("clipped", r.source or r.path, changed)
            self._note("zero_area", r.source or r.path, int((~keep).sum()))
            all_boxes.append(boxes[keep])
            all_labels.append(np.asarray(r.labels, dtype=np.int64)[keep])
            all_difficult.append(np.asarray(r.difficult, dtype=bool)[keep])
            counts[i + 1] = int(keep.sum())
        self._offsets = np.cumsum(counts)
        self._boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
        self._labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
        self._difficult = np.concatenate(all_difficult) if all_difficult else np.zeros(0, bool)
        self.stats["images"] = n
        self.stats["boxes"] = int(self._boxes.shape[0])
        self.stats["difficult_boxes"] = int(self._difficult.sum())

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._paths) if self._order is None else len(self._order)

    def _record_index(self, index: int) -> int:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        return index if self._order is None else int(self._order[index])

    def image_path(self, index: int) -> str:
        """Path of the image of sample ``index``."""
        return self._paths[self._record_index(index)]

    def _image_size(self, r: int) -> tuple[int, int]:
        """(width, height) of record ``r`` without decoding (0, 0 when unknown)."""
        w, h = self._sizes[r]
        return int(w), int(h)

    def get_annotation(self, index: int) -> dict[str, Any]:
        """Ground truth of sample ``index`` for evaluation, without decoding the image.

        -> ``{"image_id", "path", "width", "height", "boxes": float32 [G, 4] pixels xyxy,
        "labels": int64 [G], "difficult": bool [G]}``; difficult (VOC) and crowd (COCO) objects
        are included and flagged.
        """
        r = self._record_index(index)
        lo, hi = self._offsets[r], self._offsets[r + 1]
        width, height = self._image_size(r)
        boxes = self._boxes[lo:hi].copy()
        if self._normalized_boxes:
            boxes *= np.array([width, height, width, height], dtype=np.float32)
        return {
            "image_id": self._ids[r],
            "path": self._paths[r],
            "width": width,
            "height": height,
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(self._labels[lo:hi].copy()),
            "difficult": torch.from_numpy(self._difficult[lo:hi].copy()),
        }

    def _unreadable(self, index: int, path: str, reason: str, exc_info: bool = False) -> SkippedSample:
        """``reason`` names the file; strict datasets raise it, the others skip the sample (logged once,
        with the traceback of the exception being handled when ``exc_info``)."""
        if self.strict:
            raise DataError(reason)
        self.stats["unreadable_images"] += 1
        log.warning("skipping %s", reason, exc_info=exc_info)
        return SkippedSample(index, path, reason)

    def __getitem__(self, index: int):
        r = self._record_index(index)
        path = self._paths[r]
        try:
            loaded = load_image(path)
        except DataError as exc:  # corrupt, truncated past use, missing: never crash a worker
            return self._unreadable(index, path, str(exc))
        if loaded.warning is not None and self.strict:
            raise DataError(strict_refusal(loaded.warning))
        image = loaded.pixels
        notes = [] if loaded.warning is None else [loaded.warning]
        height, width = int(image.shape[-2]), int(image.shape[-1])
        lo, hi = self._offsets[r], self._offsets[r + 1]
        boxes = self._boxes[lo:hi]
        labels = self._labels[lo:hi]
        if not self.keep_difficult:
            easy = ~self._difficult[lo:hi]
            boxes, labels = boxes[easy], labels[easy]
        if self._normalized_boxes:
            boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
        # the annotation's size may disagree with the file: clip to the decoded image
        boxes, keep, _ = clean_boxes(boxes, float(width), float(height))
        boxes_t = torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32))
        labels_t = torch.from_numpy(np.ascontiguousarray(labels[keep], dtype=np.int64))
        try:
            if self.transform is not None:
                image, boxes_t, labels_t = self.transform(image, boxes_t, labels_t)
            else:
                boxes_t = boxes_t / torch.tensor([width, height, width, height], dtype=torch.float32)
        except Exception as exc:
            if self.strict:
                raise DataError(f"{path}: transform failed ({one_line(exc)})") from exc
            return self._unreadable(index, path, f"{path}: transform failed ({one_line(exc)})", exc_info=True)
        target = {"boxes": boxes_t.to(torch.float32), "labels": labels_t.to(torch.int64), "index": index}
        if notes:
            target["notes"] = notes
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {class_count(len(self.class_names))}, "
            f"{self.stats['boxes']} boxes)"
        )


def discover_names(names: Sequence[str]) -> list[str]:
    """Class names discovered from annotations -> the 20 VOC classes when they all fit, else sorted."""
    found = sorted(set(names))
    if found and set(found) <= set(VOC_CLASSES[1:]):
        return list(VOC_CLASSES)
    return [BACKGROUND] + found


VOC_CLASSES = [
    BACKGROUND,
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]
