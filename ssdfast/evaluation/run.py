"""Running a model over a dataset for evaluation: the :class:`~ssdfast.detector.Detector` (the one
inference path) on batches prepared in DataLoader workers.

Each worker reads an image with :func:`ssdfast.io.load_image` (the one reader: EXIF orientation
applied, odd formats converted, a truncated file used with a warning) and turns it into the
network's input with :func:`ssdfast.detector.prepare_image`, the Detector's own preprocessing; the
main process runs :meth:`Detector.detect_batch`. So an image is evaluated exactly as
``ssdfast-detect`` would see it. The model may be a Detector already (e.g. an exported file in
ONNX Runtime, :func:`ssdfast.load_detector`): its network and preprocessing are used.

What a worker finds wrong travels back with the batch (a worker's log records and warnings would
not reach the main process): an unreadable image comes back as such, its detections are empty
(so its objects count as missed, as the devkit counts an image without detections), and the
warning of a truncated image used comes back with it; the main process logs each once, names
the file, and lists them in the result. ``strict=True`` makes either an error instead.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..detector import Detections, Detector, Preprocessing, prepare_image
from ..errors import DataError
from ..io import class_count, load_image
from ..io.images import strict_refusal
from ..model_files import unwrap_model
from ..ops.settings import EVALUATION, PostprocessSettings

__all__ = ["run_inference"]

log = logging.getLogger("ssdfast.evaluation")


class _Item(NamedTuple):
    """One dataset image as a loader worker prepared it."""

    index: int
    path: str
    image: Tensor | None  # the network's input float32 [3, S, S]; None when not usable
    size: tuple[int, int] | None  # (height, width) of the decoded image
    error: str | None  # why it cannot be read (one line naming the file)
    warning: str | None  # what is wrong with it although it was read (e.g. truncated)


class _Batch(NamedTuple):
    images: Tensor  # [B, 3, S, S] of the usable images (an empty tensor when none)
    sizes: list[tuple[int, int]]
    indices: list[int]
    problems: list[_Item]  # items with an error or a warning


class _Prepared(Dataset):
    """``dataset`` as network inputs: ``_Item`` per image (see the module docstring). With
    ``strict``, a truncated image is not prepared (the main process refuses it)."""

    def __init__(self, dataset: Any, preprocessing: Preprocessing, strict: bool):
        self.dataset = dataset
        self.preprocessing = preprocessing
        self.strict = strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> _Item:
        path = str(self.dataset.image_path(index))
        try:
            loaded = load_image(path)
        except DataError as exc:  # one line naming the file
            return _Item(index, path, None, None, str(exc), None)
        if loaded.warning is not None and self.strict:
            return _Item(index, path, None, None, None, loaded.warning)
        pixels = loaded.pixels
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        return _Item(index, path, prepare_image(pixels, self.preprocessing), size, None, loaded.warning)


def _collate(items: Sequence[_Item]) -> _Batch:
    good = [it for it in items if it.image is not None]
    images = torch.stack([it.image for it in good]) if good else torch.zeros(0)
    problems = [it for it in items if it.error is not None or it.warning is not None]
    return _Batch(images, [it.size for it in good], [it.index for it in good], problems)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _class_names(num_classes: int, dataset: Any) -> list[str]:
    """The dataset's class names, checked against the model's class count (or placeholders)."""
    names = list(getattr(dataset, "class_names", None) or [])
    if names and len(names) != num_classes:
        raise ValueError(
            f"the model predicts {class_count(num_classes)} but the dataset has "
            f"{class_count(len(names))}: {names[:6]}{' ...' if len(names) > 6 else ''}"
        )
    return names or ["BACKGROUND"] + [str(i) for i in range(1, num_classes)]


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def run_inference(
    model: nn.Module | Detector,
    dataset: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    settings: PostprocessSettings = EVALUATION,
    fused: bool = True,
    strict: bool = False,
) -> dict[str, Any]:
    """Detections of ``model`` on every image of ``dataset``, in the images' own pixels.

    The model runs inside a :class:`~ssdfast.detector.Detector` (post-processing: ``settings``;
    ``fused``: its inference copy, see the Detector), on batches its preprocessing made in
    ``num_workers`` DataLoader workers.

    Args:
        model: an ssdfast SSD (``.config``, ``.priors``; DDP / compiled wrappers are fine), moved to
            ``device`` if it is elsewhere (default: where it is); put in eval mode for the run and
            given back in the mode it came in. Or a :class:`~ssdfast.detector.Detector` (any runtime,
            :func:`ssdfast.load_detector`), run as it is (its device, network and preprocessing;
            ``device`` and ``fused`` do not apply, ``settings`` does).
        dataset: an ssdfast dataset (``image_path(i)``, ``get_annotation(i)``, ``class_names``).
        progress: a tqdm bar on stderr when stderr is a terminal (never ``\\r`` lines in a log file).
        strict: an unreadable or truncated image raises :class:`ssdfast.errors.DataError` (naming it)
            instead of being reported.

    Returns:
        ``{"detections": [Detections per image of the dataset, in its order; empty for an
        unreadable one], "image_ids": [...], "class_names": [...], "unreadable_images": [paths],
        "skipped": [their indices], "notes": [one line per file with a problem, each naming it],
        "num_images": images read and run, "seconds": float, "images_per_s": float}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size should be at least 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers should be >= 0, got {num_workers}")
    if not (hasattr(dataset, "image_path") and hasattr(dataset, "get_annotation")):
        raise TypeError("evaluation needs an ssdfast dataset (with image_path(i) and get_annotation(i)), "
                        f"got {type(dataset).__name__}")
    given = model if isinstance(model, Detector) else None
    core = None if given is not None else unwrap_model(model)
    if core is not None and not (hasattr(core, "config") and hasattr(core, "priors")):
        raise TypeError(f"evaluation needs an ssdfast SSD model (with .config and .priors) or a Detector, "
                        f"got {type(model).__name__}")
    num_classes = given.network.num_classes if given is not None else core.config.num_classes
    class_names = _class_names(num_classes, dataset)
    if given is not None:
        dev = given.device
    else:
        dev = _model_device(core) if device is None else torch.device(device)
    from .. import ops

    ops.backend()  # load the kernels now, not inside the timed first batch
    was_training = None if given is not None else model.training
    n = len(dataset)
    preprocessing = given.preprocessing if given is not None else Preprocessing.of(core.config)
    loader = DataLoader(
        _Prepared(dataset, preprocessing, strict), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_collate, pin_memory=dev.type == "cuda",
    )
    bar = None
    if progress and _is_terminal(sys.stderr):
        from tqdm import tqdm

        bar = tqdm(total=n, unit="img", desc="evaluating", file=sys.stderr, dynamic_ncols=True)
    detections: list[Detections | None] = [None] * n
    unreadable: list[tuple[int, str]] = []
    notes: list[str] = []
    noted: set[str] = set()
    refused: str | None = None
    start = time.perf_counter()
    try:
        detector = given or Detector(core, class_names, dev, settings, fused=fused)
        for batch in loader:
            for item in batch.problems:
                if strict:
                    refused = (f"{item.error} (strict: not scored as missed)" if item.error is not None
                               else strict_refusal(str(item.warning)))
                    break
                if item.error is not None:
                    unreadable.append((item.index, item.path))
                    message = f"{item.error}; its objects are scored as missed"
                else:
                    message = str(item.warning)
                if item.path not in noted:  # each file once, however often it is met
                    noted.add(item.path)
                    notes.append(message)
                    log.warning("%s", message)
            if refused is not None:
                break  # leaving the loop stops its workers
            if batch.indices:
                for index, det in zip(batch.indices, detector.detect_batch(batch.images, batch.sizes, settings)):
                    detections[index] = det
            if bar is not None:
                bar.update(len(batch.indices) + sum(1 for p in batch.problems if p.image is None))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    finally:
        if was_training is not None:
            model.train(was_training)
        if bar is not None:
            bar.close()
    if refused is not None:
        raise DataError(refused)
    seconds = time.perf_counter() - start
    num_read = sum(d is not None for d in detections)
    if unreadable:
        log.warning("%d of %d images could not be read; their objects count as missed", len(unreadable), n)
    return {
        "detections": [Detections.empty() if d is None else d for d in detections],
        "image_ids": [dataset.get_annotation(i)["image_id"] for i in range(n)],
        "class_names": class_names,
        "unreadable_images": [path for _, path in unreadable],
        "skipped": [index for index, _ in unreadable],
        "notes": notes,
        "num_images": num_read,
        "seconds": seconds,
        "images_per_s": num_read / seconds if seconds > 0 else math.inf,
    }
