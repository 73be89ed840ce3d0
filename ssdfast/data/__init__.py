"""Detection data: VOC, COCO, Open Images and a synthetic set; SSD transforms; the batching loader.

``dataset[i]`` -> ``(image float32 [3, S, S] normalized, {"boxes": float32 [G, 4] normalized xyxy,
"labels": int64 [G], "index": i, "notes": [warnings, when any]})``, or a :class:`SkippedSample` when the
image is unreadable and the dataset is not strict; :func:`collate_detection` pads a batch into a
:class:`DetectionBatch`, counting the samples it dropped and keeping every note.
"""
from __future__ import annotations

import os
import random
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ._base import BACKGROUND, DetectionDataset, SkippedSample, log, read_label_file
from .coco import COCODataset, annotations_of_image_folder
from .open_images import OpenImagesDataset
from .voc import VOCDataset

__all__ = [
    "BACKGROUND",
    "DetectionDataset",
    "VOCDataset",
    "COCODataset",
    "OpenImagesDataset",
    "DATASET_TYPES",
    "build_dataset",
    "detect_layout",
    "find_test_split",
    "TestSplit",
    "collate_detection",
    "DetectionBatch",
    "SkippedSample",
    "make_loader",
    "read_label_file",
]

DATASET_TYPES = ("voc", "coco", "open_images", "synthetic")


def detect_layout(root: str) -> str | None:
    """Which on-disk layout ``root`` holds: ``"voc"``, ``"coco"`` (a COCO root, or an image folder of
    the official layout such as ``coco/val2017``), ``"open_images"`` or None."""
    if os.path.isdir(os.path.join(root, "Annotations")) and os.path.isdir(os.path.join(root, "ImageSets")):
        return "voc"
    ann = os.path.join(root, "annotations")
    if os.path.isdir(ann) and any(n.endswith(".json") for n in os.listdir(ann)):
        return "coco"
    if os.path.isdir(root) and annotations_of_image_folder(root) is not None:
        return "coco"
    if os.path.isdir(root) and any(n.startswith("sub-") and n.endswith("-annotations-bbox.csv")
                                   for n in os.listdir(root)):
        return "open_images"
    return None


class TestSplit(NamedTuple):
    """Where a training set's test split is: ``root`` (build it with ``split="test"``) and the file
    that lists it (VOC ``test.txt`` / ``val.txt``, COCO's val annotations, Open Images' test CSV)."""

    root: str
    listing: str


def find_test_split(dataset_type: str, root: str) -> TestSplit | None:
    """The test split of the training set at ``root``, or None when it has none. For an image folder of
    COCO's official layout (``coco/train2017``) that is its sibling val folder (``coco/val2017``, listed
    by ``coco/annotations/instances_val2017.json``)."""
    if dataset_type == "synthetic":
        dataset_type = detect_layout(root) or ""
    try:
        if dataset_type == "voc":
            from .voc import voc_split_file

            return TestSplit(root, voc_split_file(root, "test"))
        if dataset_type == "coco":
            from .coco import find_coco_split

            if os.path.isdir(os.path.join(root, "annotations")):
                return TestSplit(root, find_coco_split(root, "test")[0])
            ann, images = find_coco_split(os.path.dirname(os.path.normpath(root)), "test")  # an image folder
            same = os.path.normpath(images) == os.path.normpath(root)
            return None if same or not os.path.isdir(images) else TestSplit(images, ann)
    except DataError:
        return None
    if dataset_type == "open_images":
        path = os.path.join(root, "sub-test-annotations-bbox.csv")
        return TestSplit(root, path) if os.path.isfile(path) else None
    return None


def build_dataset(
    dataset_type: str,
    paths: str | Sequence[str],
    split: str = "train",
    transform: Any = None,
    label_file: str | None = None,
    balance: bool = False,
    keep_difficult: bool = False,
    strict: bool = False,
) -> DetectionDataset:
    """One dataset over ``paths`` (several roots are concatenated).

    Args:
        dataset_type: ``voc``, ``coco``, ``open_images``, or ``synthetic`` (a folder written by
            :func:`ssdfast.data.synthetic.generate` in any format, detected; a missing or empty
            folder is first filled with 1000 VOC images of 256 px, seed 0).
        split: ``train``, ``test`` or ``val``.
        transform: ``(uint8 [3,H,W], boxes px xyxy [G,4], labels [G]) -> (image, boxes normalized, labels)``,
            e.g. :class:`ssdfast.data.transforms.TrainTransform`; None returns the uint8 image.
        label_file: class names, one a line (``BACKGROUND`` first optional).
        balance: Open Images only: oversample rare classes (pytorch-ssd's ``--balance-data``).
        keep_difficult: keep VOC ``difficult`` / COCO crowd boxes in ``dataset[i]``.
        strict: raise :class:`~ssdfast.errors.DataError` (naming the file) on a broken image or annotation instead
            of warning and skipping it.

    Returns a :class:`DetectionDataset` with ``class_names`` (``BACKGROUND`` first),
    ``category_ids`` (COCO: label -> category id; else None), ``stats`` and ``get_annotation(i)``.
    """
    roots = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    if not roots:
        raise ValueError("build_dataset needs at least one dataset path")
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"dataset_type should be one of {DATASET_TYPES}, got {dataset_type!r}")
    if dataset_type == "synthetic":
        from .synthetic import generate_atomic

        kinds = set()
        for root in roots:
            if not os.path.isdir(root) or not os.listdir(root):
                log.warning("%s: no synthetic data there yet, generating 1000 VOC images", root)
                generate_atomic(root, format="voc")
            kind = detect_layout(root)
            if kind is None:
                raise DataError(f"{root}: not a VOC, COCO or Open Images layout")
            kinds.add(kind)
        if len(kinds) > 1:
            raise DataError(f"{roots}: synthetic roots in different formats {sorted(kinds)}")
        dataset_type = kinds.pop()
    if balance and dataset_type != "open_images":
        log.warning("balance=True only applies to Open Images; ignored for %s", dataset_type)
    common = dict(split=split, transform=transform, label_file=label_file, keep_difficult=keep_difficult, strict=strict)
    if dataset_type == "voc":
        return VOCDataset(roots, **common)
    if dataset_type == "coco":
        return COCODataset(roots, **common)
    return OpenImagesDataset(roots, balance=balance, **common)


class DetectionBatch(NamedTuple):
    """A batch from :func:`collate_detection`.

    Attributes:
        images: ``[B, 3, S, S]`` (an empty ``[0]`` tensor when every sample was dropped).
        gt_boxes: ``[B, Gmax, 4]`` normalized xyxy, zeros where padded (``Gmax = max(1, most boxes)``).
        gt_labels: int64 ``[B, Gmax]``, -1 where padded.
        indices: the dataset index of each image.
        skipped: how many samples were dropped (unreadable images).
        notes: one line per thing the user should hear about, each naming its file: the skipped
            images and the images used with a warning (e.g. truncated). The trainer logs them.
    """

    images: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor
    indices: list[int]
    skipped: int
    notes: list[str]


def collate_detection(batch: Sequence[Any]) -> DetectionBatch:
    """Stack a list of ``dataset[i]`` results into a :class:`DetectionBatch`, dropping unreadable
    samples (:class:`SkippedSample`, or ``None`` from other datasets) and keeping their notes."""
    notes = [b.note for b in batch if isinstance(b, SkippedSample)]
    items = [b for b in batch if b is not None and not isinstance(b, SkippedSample)]
    skipped = len(batch) - len(items)
    notes += [note for _, t in items for note in t.get("notes", ())]
    if not items:
        return DetectionBatch(torch.zeros(0), torch.zeros(0, 1, 4), torch.full((0, 1), -1, dtype=torch.int64), [],
                              skipped, notes)
    images = torch.stack([img for img, _ in items])
    gmax = max(1, max(int(t["boxes"].shape[0]) for _, t in items))
    gt_boxes = torch.zeros(len(items), gmax, 4, dtype=torch.float32)
    gt_labels = torch.full((len(items), gmax), -1, dtype=torch.int64)
    indices = []
    for k, (_, t) in enumerate(items):
        g = int(t["boxes"].shape[0])
        if g:
            gt_boxes[k, :g] = t["boxes"]
            gt_labels[k, :g] = t["labels"]
        indices.append(int(t["index"]))
    return DetectionBatch(images, gt_boxes, gt_labels, indices, skipped, notes)


def _worker_init(worker_id: int) -> None:
    """One thread per worker (the workers are the parallelism) and seeded python/numpy RNGs."""
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32  # base seed from the loader's generator + worker id
    random.seed(seed)
    np.random.seed(seed)


class _ShutdownOnError:
    """Iterator wrapper: when a batch raises (e.g. DataError from a strict dataset in a worker),
    stop the workers now. Left to the garbage collector, the iterator sits in a reference cycle with
    the traceback and its workers are only killed after a 5 s timeout each."""

    def __init__(self, loader: "_DetectionLoader", iterator: Any):
        self._loader = loader
        self._iterator = iterator

    def __iter__(self) -> "_ShutdownOnError":
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException:
            shutdown = getattr(self._iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                if getattr(self._loader, "_iterator", None) is self._iterator:
                    self._loader._iterator = None  # persistent workers: start fresh next time
            raise


class _DetectionLoader(DataLoader):
    """A DataLoader whose iterators stop their workers as soon as a batch raises."""

    def __iter__(self) -> Any:  # type: ignore[override]
        return _ShutdownOnError(self, super().__iter__())


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of :class:`DetectionBatch` batches (:func:`collate_detection`).

    Pinned memory when CUDA is available, persistent workers when ``num_workers > 0``, a generator
    seeded with ``seed`` (same shuffling, and with workers the same augmentation, for the same seed
    and worker count; with ``num_workers=0`` augmentation draws from the global torch RNG). With
    ``distributed=True`` a :class:`~torch.utils.data.distributed.DistributedSampler` (seeded, shuffling
    when ``shuffle``) splits the data between ranks: call ``loader.sampler.set_epoch(epoch)`` each epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size should be at least 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers should be >= 0, got {num_workers}")
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return _DetectionLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_detection,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=generator,
        prefetch_factor=4 if num_workers > 0 else None,
    )
