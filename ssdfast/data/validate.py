"""Check a VOC, COCO or Open Images root before training: unreadable images and bad annotations.

Images are decoded fully with :func:`ssdfast.io.load_image`, the reader training, evaluation and
detection use, so a file is judged as they will read it: one that cannot be decoded, or whose pixels
are mostly missing, is a problem; a truncated file that decodes (a JPEG short by a few bytes, which
OpenCV, PIL with truncated loading, browsers and pytorch-ssd all read, and training uses) is a
warning (``strict=True``: a problem). Annotation files are read by the data sets' own parsers
(:func:`~ssdfast.data.voc.parse_voc_xml`, :func:`~ssdfast.data.coco.load_coco`,
:func:`~ssdfast.data.open_images.read_annotation_csv`), so a file training would skip or refuse is
reported with the reason it gives; their boxes are checked for lying outside the image (by more than
one pixel), zero area and unknown classes, and the images for being missing and for sizes that disagree
with the annotation. Work is spread over processes (:mod:`concurrent.futures`). Every problem and
warning is a :class:`Problem` naming the file.
"""
from __future__ import annotations

import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..errors import DataError
from ..io import load_image
from ..threads import available_cores
from ._base import BACKGROUND, read_label_file
from .coco import annotations_of_image_folder, coco_box, coco_image_path, load_coco
from .open_images import read_annotation_csv, row_box
from .voc import parse_voc_xml, voc_image_path

__all__ = ["Problem", "ValidationReport", "validate_dataset", "check_image", "inspect_image"]

_TOLERANCE = 1.0  # pixels a box may stick out of the image before it is reported

#: what a check job returns: (problems, warnings, images checked, boxes)
_Result = tuple[list["Problem"], list["Problem"], int, int]


@dataclass(frozen=True)
class Problem:
    """One problem (or warning): the file and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` checked and found: ``problems`` (the data set should be fixed:
    exit status 1) and ``warnings`` (files that are used as they are, e.g. truncated images that
    decode; problems with ``strict``)."""

    root: str
    dataset_type: str
    images: int = 0
    annotation_files: int = 0
    boxes: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'s' if n != 1 else ''}"

        state = "OK" if self.ok else count(len(self.problems), "problem")
        if self.warnings:
            state += f", {count(len(self.warnings), 'warning')}"
        return (
            f"{self.root} ({self.dataset_type}): checked {self.images} images, {self.annotation_files} "
            f"annotation files, {self.boxes} boxes: {state}"
        )


# --------------------------------------------------------------------------------- image checks
def inspect_image(path: str, expected_size: tuple[int, int] | None = None) -> tuple[list[str], list[str]]:
    """Decode ``path`` fully -> ``(problems, warnings)``, messages without the path (both empty when
    fine). ``expected_size``: (width, height) the annotation claims (0 or None: not checked)."""
    if not os.path.isfile(path):
        return ["image file is missing"], []
    try:
        loaded = load_image(path)
    except DataError as exc:
        return [_without_path(str(exc), path)], []
    warnings = [] if loaded.warning is None else [_without_path(loaded.warning, path)]
    size = (int(loaded.pixels.shape[-1]), int(loaded.pixels.shape[-2]))
    if expected_size and all(expected_size) and tuple(expected_size) != size:
        rotated = " (after its EXIF rotation)" if tuple(expected_size) == size[::-1] else ""
        return [f"image is {size[0]}x{size[1]}{rotated} but the annotation says "
                f"{expected_size[0]}x{expected_size[1]}"], warnings
    return [], warnings


def check_image(path: str, expected_size: tuple[int, int] | None = None, strict: bool = False) -> list[str]:
    """:func:`inspect_image`'s problems (with ``strict``, its warnings too): empty when ``path`` is usable."""
    problems, warnings = inspect_image(path, expected_size)
    return problems + (warnings if strict else [])


def _without_path(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def _box_problems(box: Sequence[float], width: int, height: int, what: str) -> list[str]:
    x1, y1, x2, y2 = box
    out = []
    if not all(v == v and abs(v) != float("inf") for v in box):
        return [f"{what}: non-finite box {list(box)}"]
    if x2 <= x1 or y2 <= y1:
        out.append(f"{what}: zero-area box {_fmt(box)}")
    if width > 0 and height > 0 and (
        x1 < -_TOLERANCE or y1 < -_TOLERANCE or x2 > width + _TOLERANCE or y2 > height + _TOLERANCE
    ):
        out.append(f"{what}: box {_fmt(box)} outside the {width}x{height} image")
    return out


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


# --------------------------------------------------------------------------------- VOC
def _check_voc_item(job: tuple[str, str, frozenset | None]) -> _Result:
    """One VOC id: its XML and its image -> (problems, images checked, boxes)."""
    root, image_id, classes = job
    xml_path = os.path.join(root, "Annotations", image_id + ".xml")
    image_path = voc_image_path(root, image_id)
    problems: list[Problem] = []
    boxes = 0
    size: tuple[int, int] | None = None
    try:
        annotation = parse_voc_xml(xml_path)
    except DataError as exc:  # missing, not XML, an object without a name or a box: training skips it
        problems.append(Problem(xml_path, _without_path(str(exc), xml_path)))
    else:
        image_path = voc_image_path(root, image_id, annotation["filename"])
        w, h = size = annotation["width"], annotation["height"]
        if w <= 0 or h <= 0:
            problems.append(Problem(xml_path, f"missing or invalid <size> ({w}x{h})"))
        for k, (name, _difficult, *box) in enumerate(annotation["objects"]):
            what = f"object {k} ({name})"
            boxes += 1
            if classes is not None and name not in classes:
                problems.append(Problem(xml_path, f"{what}: unknown class {name!r}"))
            problems += [Problem(xml_path, m) for m in _box_problems(box, w, h, what)]
    bad, warnings = inspect_image(image_path, size)
    problems += [Problem(image_path, m) for m in bad]
    return problems, [Problem(image_path, m) for m in warnings], 1, boxes


def _voc_jobs(root: str, label_file: str | None, report: ValidationReport) -> list[tuple]:
    ids: set[str] = set()
    main = os.path.join(root, "ImageSets", "Main")
    if os.path.isdir(main):
        for name in sorted(os.listdir(main)):
            if not name.endswith(".txt"):
                continue
            path = os.path.join(main, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                ids.update(line.split()[0] for line in f if line.strip())
    ann_dir = os.path.join(root, "Annotations")
    if os.path.isdir(ann_dir):
        ids.update(n[: -len(".xml")] for n in os.listdir(ann_dir) if n.endswith(".xml"))
    if label_file is None and os.path.isfile(os.path.join(root, "labels.txt")):
        label_file = os.path.join(root, "labels.txt")
    classes = None
    if label_file is not None:
        try:
            classes = frozenset(n.lower() for n in read_label_file(label_file) if n != BACKGROUND)
        except DataError as exc:  # the label file's own problem (ssdfast.io)
            report.problems.append(Problem(label_file, str(exc).split(": ", 1)[-1]))
    else:
        report.notes.append("no labels.txt: class names not checked")
    report.annotation_files = len(ids)
    return [(root, i, classes) for i in sorted(ids)]


# --------------------------------------------------------------------------------- COCO
def _check_image_job(job: tuple[str, tuple[int, int] | None]) -> _Result:
    path, size = job
    problems, warnings = inspect_image(path, size)
    return [Problem(path, m) for m in problems], [Problem(path, m) for m in warnings], 1, 0


def _coco_files(root: str) -> list[tuple[str, str]]:
    """(annotation json, image folder) pairs of a COCO root, or of an image folder of the official
    layout (``coco/val2017``: its ``../annotations/instances_val2017.json`` only)."""
    ann_dir = os.path.join(root, "annotations")
    if not os.path.isdir(ann_dir):
        ann = annotations_of_image_folder(root)
        if ann is None:
            raise DataError(f"{ann_dir}: no COCO annotations folder (nor ../annotations/instances_"
                            f"{os.path.basename(os.path.normpath(root))}.json beside this image folder)")
        return [(ann, root)]
    names = sorted(n for n in os.listdir(ann_dir) if n.endswith(".json"))
    instances = [n for n in names if n.startswith("instances_")]
    # the official download also holds captions_*, person_keypoints_* and image_info_test* files
    names = instances or [n for n in names if not n.startswith(("captions", "person_keypoints", "image_info"))]
    pairs = []
    for name in names:
        split = name[len("instances_"):] if name.startswith("instances_") else name
        split = split[: -len(".json")]
        image_dir = next(
            (os.path.join(root, d)
             for d in (split, os.path.join("images", split), os.path.join("images", split.replace("2017", "")))
             if os.path.isdir(os.path.join(root, d))),
            os.path.join(root, split),
        )
        pairs.append((os.path.join(ann_dir, name), image_dir))
    return pairs


def _coco_jobs(root: str, label_file: str | None, report: ValidationReport) -> list[tuple]:
    jobs: list[tuple] = []
    for path, image_dir in _coco_files(root):
        report.annotation_files += 1
        try:
            coco = load_coco(path)
        except DataError as exc:  # not JSON, an image or annotation without an id: training refuses it
            report.problems.append(Problem(path, _without_path(str(exc), path)))
            continue
        if not isinstance(coco.dataset.get("images"), list):
            report.problems.append(Problem(path, "unparsable COCO annotation file (no 'images' list)"))
            continue
        for ann in coco.anns.values():
            report.boxes += 1
            img = coco.imgs.get(ann.get("image_id"))
            what = f"annotation {ann['id']} (image {img.get('file_name', img['id']) if img else ann.get('image_id')})"
            if img is None:
                report.problems.append(Problem(path, f"{what}: unknown image_id {ann.get('image_id')!r}"))
                continue
            if ann.get("category_id") not in coco.cats:
                report.problems.append(Problem(path, f"{what}: unknown category_id {ann.get('category_id')!r}"))
            box = coco_box(ann.get("bbox"))
            if box is None:
                report.problems.append(Problem(path, f"{what}: malformed bbox {ann.get('bbox')!r}"))
                continue
            report.problems += [Problem(path, m) for m in _box_problems(box, *_coco_size(img), what)]
        jobs += [(coco_image_path(image_dir, img), _coco_size(img)) for img in coco.imgs.values()]
    if label_file is not None:
        report.notes.append("--label-file is not used for COCO (names come from the categories)")
    return jobs


def _coco_size(img: dict[str, Any]) -> tuple[int, int]:
    return int(img.get("width", 0) or 0), int(img.get("height", 0) or 0)


# --------------------------------------------------------------------------------- Open Images
def _oi_jobs(root: str, label_file: str | None, report: ValidationReport) -> list[tuple]:
    classes = None
    if label_file is not None:
        classes = set(read_label_file(label_file)[1:])
    jobs: list[tuple] = []
    for name in sorted(os.listdir(root)):
        if not (name.startswith("sub-") and name.endswith("-annotations-bbox.csv")):
            continue
        split = name[len("sub-"): -len("-annotations-bbox.csv")]
        path = os.path.join(root, name)
        report.annotation_files += 1
        try:
            rows = read_annotation_csv(path)
        except DataError as exc:  # unreadable, not CSV, missing columns: training refuses it
            report.problems.append(Problem(path, _without_path(str(exc), path)))
            continue
        image_ids: dict[str, None] = {}  # in order, once each
        for line, row in enumerate(rows, start=2):
            report.boxes += 1
            what = f"line {line} (image {row['ImageID']})"
            image_ids[row["ImageID"]] = None
            if classes is not None and row["ClassName"] not in classes:
                report.problems.append(Problem(path, f"{what}: unknown class {row['ClassName']!r}"))
            box = row_box(row)
            if box is None:
                report.problems.append(Problem(path, f"{what}: non-numeric box"))
                continue
            eps = 1e-3
            if box[2] <= box[0] or box[3] <= box[1]:
                report.problems.append(Problem(path, f"{what}: zero-area box {_fmt(box)}"))
            if min(box) < -eps or max(box) > 1 + eps:
                report.problems.append(Problem(path, f"{what}: box {_fmt(box)} outside the image (normalized "
                                                     "coordinates)"))
        jobs += [(os.path.join(root, split, i + ".jpg"), None) for i in image_ids]
    return jobs


# --------------------------------------------------------------------------------- driver
def _detect(root: str) -> str | None:
    from . import detect_layout

    return detect_layout(root)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the worker processes are the parallelism


def _run(fn: Callable, jobs: list[tuple], workers: int, progress: bool, desc: str) -> Iterable[_Result]:
    import torchvision.io  # noqa: F401  (imported once here, not in every forked worker)
    from PIL import Image  # noqa: F401
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(jobs) < 8:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        pool: Executor
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
            chunk = max(1, min(64, len(jobs) // (workers * 8)))
            for result in pool.map(fn, jobs, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()


def validate_dataset(
    root: str,
    dataset_type: str | None = None,
    label_file: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = False,
) -> ValidationReport:
    """Check every image and annotation under ``root`` -> :class:`ValidationReport`.

    ``root``: a VOC, COCO or Open Images root, or an image folder of COCO's official layout
    (``coco/val2017``, its annotations in ``coco/annotations/``). ``dataset_type``: ``voc``, ``coco``
    or ``open_images``; detected from the layout when None. ``workers``: processes (default: the
    cores this process may use). ``strict``: warnings (truncated images that decode) are problems.
    Raises :class:`DataError` when ``root`` is not a dataset folder.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a directory")
    kind = dataset_type or _detect(root)
    if kind is None:
        raise DataError(f"{root}: not a VOC (Annotations/, ImageSets/), COCO (annotations/*.json) "
                        "or Open Images layout")
    if kind == "synthetic":
        kind = _detect(root) or "voc"
    report = ValidationReport(root=root, dataset_type=kind)
    if kind == "voc":
        jobs, fn = _voc_jobs(root, label_file, report), _check_voc_item
    elif kind == "coco":
        jobs, fn = _coco_jobs(root, label_file, report), _check_image_job
    elif kind == "open_images":
        jobs, fn = _oi_jobs(root, label_file, report), _check_image_job
    else:
        raise ValueError(f"dataset_type should be voc, coco or open_images, got {kind!r}")
    workers = workers if workers is not None else available_cores()
    for problems, warnings, images, boxes in _run(fn, jobs, workers, progress,
                                                  f"validating {os.path.basename(root) or root}"):
        report.problems += problems
        report.warnings += warnings
        report.images += images
        report.boxes += boxes
    if strict and report.warnings:
        report.problems += [Problem(w.path, f"{w.message} (strict: a problem)") for w in report.warnings]
        report.warnings = []
    report.problems.sort(key=lambda p: (p.path, p.message))
    report.warnings.sort(key=lambda p: (p.path, p.message))
    return report
