"""Inference: images in, boxes in each image's pixels out -- the one inference path (``ssdfast-eval``,
the trainer's validation and ``ssdfast-detect`` all run a :class:`Detector`).

>>> from ssdfast import Detector
>>> detector = Detector.from_file("models/mb2-ssd-lite.pth", device="cuda")   # ssdfast checkpoint
>>> detector = Detector.from_file("mb1-ssd.pth", net="mb1-ssd", label_file="voc-model-labels.txt")  # pytorch-ssd
>>> for det in detector([pil_image, numpy_image]):        # any sizes, batched
...     print(det.boxes, det.scores, det.label_names)       # xyxy pixels of that image
>>> detector.settings = PostprocessSettings(score_threshold=0.5)   # ssdfast.ops.PostprocessSettings

Post-processing is one value, :class:`~ssdfast.ops.PostprocessSettings` (score threshold, NMS IoU,
top-k, max detections): ``DISPLAY`` by default (for showing detections), ``EVALUATION`` for mAP.

The steps are also available alone, for code that batches its own images (the evaluator's loader
workers): :func:`prepare_image` (one image -> the network's input, resized as the model's
``config.antialias`` says and normalized), :func:`preprocess` (a batch of those),
:meth:`Detector.detect_batch` (a prepared batch -> :class:`Detections`) and :func:`postprocess`
(softmax + ``ops.ssd_postprocess`` + scaling to pixels + clipping to the image).

Fused path (the default, ``Detector(..., fused=True)``): the detector runs an inference copy of the
network made once at construction (:func:`ssdfast.models.fuse.inference_model`: BatchNorm folded
into the convs, activations fused, channels_last weights, oneDNN convolutions on CPU) on a
channels_last batch. Same detections as the plain model up to float rounding; ``detector.model``
stays the original (export it, compile it, train it).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from . import ops
from .model_files import load_model_file
from .data.transforms import resize_image
from .io.labels import class_count
from .models.fuse import inference_model
from .ops.settings import DISPLAY, PostprocessSettings

__all__ = ["Detections", "Detector", "prepare_image", "preprocess", "postprocess", "run_in_chunks", "to_image_tensor"]


@dataclass
class Detections:
    """Detections in one image, by descending score: what a :class:`Detector` returns and what
    evaluation scores (``ssdfast.evaluation`` turns them into numpy only inside its metrics).

    Attributes:
        boxes: ``[K, 4]`` float32, xyxy in pixels of the original image, clipped to it.
        scores: ``[K]`` float32 class probabilities.
        labels: ``[K]`` int64 class indices (1..C-1).
        label_names: the class name of each detection (None from :func:`postprocess` without ``class_names``).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    label_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: str | torch.device) -> Detections:
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device), self.label_names)

    @classmethod
    def empty(cls) -> Detections:
        """No detection (e.g. for an image that could not be read)."""
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), [])


def to_image_tensor(image: Any) -> Tensor:
    """One image as an RGB ``Tensor[3, H, W]`` (uint8, or float in [0, 1]).

    Accepts a PIL image (any mode), a numpy array ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` (RGB
    order; uint8, or float in [0, 1]) or a tensor ``CxHxW`` with C in 1, 3, 4 (uint8 or float in [0, 1]).
    Alpha channels are dropped, grayscale is repeated to 3 channels.
    """
    if isinstance(image, Tensor):
        t = image
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"an image tensor should be [C, H, W] with C in (1, 3, 4), got shape {tuple(t.shape)}")
    else:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            t = TF.pil_to_tensor(image)
        else:
            import numpy as np

            if not isinstance(image, np.ndarray):
                raise TypeError(f"expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")
            a = image
            if a.ndim == 2:
                a = a[:, :, None]
            if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
                raise ValueError(f"a numpy image should be HxW or HxWxC with C in (1, 3, 4), got shape {a.shape}")
            a = np.ascontiguousarray(a)
            if not a.flags.writeable:  # e.g. np.asarray(pil_image): torch wants writable memory
                a = a.copy()
            t = torch.from_numpy(a).permute(2, 0, 1)
    if t.shape[0] == 4:
        t = t[:3]
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise ValueError(f"image values should be uint8 or float in [0, 1], got {t.dtype}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    return t


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    return [images]


def prepare_image(image: Tensor, config: Any) -> Tensor:
    """One decoded image -> the network's input: ``[3, H, W]`` (uint8, or float in [0, 1]; any
    device) -> float32 ``[3, S, S]``, ``S = config.image_size``, aspect ratio not kept.

    Resized as the model was trained (:func:`ssdfast.data.transforms.resize_image`): antialiased
    bilinear (``config.antialias``, ssdfast's models) or OpenCV's ``INTER_LINEAR`` (models loaded from
    pytorch-ssd files, ``config.antialias`` False); then scaled to [0, 1] and normalized with
    ``config.mean`` / ``config.std``. The evaluator calls it in its loader workers, the
    :class:`Detector` in :func:`preprocess`: the same numbers either way.
    """
    t = resize_image(image, int(config.image_size), antialias=bool(getattr(config, "antialias", True)))
    t = TF.to_dtype(t, torch.float32, scale=True)
    return TF.normalize(t, list(config.mean), list(config.std))


def preprocess(
    images: Any,
    config: Any,
    device: str | torch.device | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Images of any sizes -> the network's input batch (each through :func:`prepare_image`).

    Args:
        images: one image or a list of them (see :func:`to_image_tensor`), or a ``[B, C, H, W]`` tensor.
        config: the model's :class:`~ssdfast.models.SSDConfig` (``image_size``, ``mean``, ``std``,
            ``antialias``).
        device: where to resize and return the batch (default: where the images are).
        memory_format: of the batch: ``torch.channels_last`` for a channels_last network (the
            Detector's fused path), same values either way.

    Returns:
        ``(batch[B, 3, S, S] float32, sizes)`` with ``sizes[i] = (height, width)`` of image i.
    """
    out = []
    sizes = []
    for image in _as_list(images):
        t = to_image_tensor(image)
        if device is not None:
            t = t.to(device, non_blocking=True)
        sizes.append((int(t.shape[1]), int(t.shape[2])))
        out.append(prepare_image(t, config))
    if not out:
        raise ValueError("no images given")
    batch = torch.stack(out)
    if memory_format is not torch.contiguous_format:
        batch = batch.contiguous(memory_format=memory_format)
    return batch, sizes


def postprocess(
    confidences: Tensor,
    locations: Tensor,
    priors: Tensor,
    sizes: Sequence[tuple[int, int]],
    variances: Sequence[float],
    settings: PostprocessSettings,
    *,
    class_names: Sequence[str] | None = None,
) -> list[Detections]:
    """Network outputs -> one :class:`Detections` per image (boxes in its pixels, xyxy).

    Softmax over ``confidences[B, P, C]``, then ``ops.ssd_postprocess`` with ``settings`` (decode,
    per-class score threshold + top-k + NMS at ``iou_threshold``, merge, keep ``max_detections``);
    boxes scaled from normalized to the pixels of each image (``sizes[i] = (height, width)``) and
    clipped to it. ``variances``: the model's (``config.variances``).
    Results stay on the device of the inputs; boxes and scores are float32. ``label_names`` are
    filled in when ``class_names`` are given (that costs a copy of the labels to the CPU).
    """
    if len(sizes) != confidences.shape[0]:
        raise ValueError(f"{len(sizes)} image sizes for a batch of {confidences.shape[0]}")
    _check_settings(settings)
    scores = F.softmax(confidences.float(), dim=2)
    boxes, det_scores, labels, num = ops.ssd_postprocess(
        locations.float(), scores, priors.to(locations.device).float(), variances, **asdict(settings))
    hw = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=torch.float32, device=boxes.device)
    boxes = torch.minimum((boxes.float() * hw[:, None, :]).clamp(min=0), hw[:, None, :])
    counts = num.tolist()  # the one device -> host copy: per-image counts to slice the padded outputs
    out = []
    for i, n in enumerate(counts):
        names = None if class_names is None else [class_names[c] for c in labels[i, :n].tolist()]
        out.append(Detections(boxes[i, :n], det_scores[i, :n].float(), labels[i, :n], names))
    return out


class Detector:
    """A network with its preprocessing and post-processing: ``detector(images) -> list[Detections]``.

    Args:
        model: an SSD (``create_model`` / ``load_model_file``); moved to ``device`` and put in
            eval mode. Kept as ``detector.model``, otherwise unchanged.
        class_names: one per class, ``BACKGROUND`` first.
        device: where to run.
        settings: the post-processing (:class:`~ssdfast.ops.PostprocessSettings`): its ``DISPLAY``
            preset suits showing detections, ``EVALUATION`` (a low score threshold) measuring mAP.
            Kept as ``detector.settings``, which may be assigned.
        fused: run an inference copy of the network (BatchNorm folded into the convs, activations
            fused, channels_last, oneDNN convolutions on CPU; :func:`ssdfast.models.fuse.inference_model`)
            made here, once, on channels_last batches. Same detections up to float rounding; on
            CPU, MobileNet networks run up to ~2x faster. ``False`` runs ``model`` itself. The copy
            is taken now: after changing ``model``'s weights, assign it again
            (``detector.model = model``).
        chunk_size: on CPU with ``fused``, the network runs on at most this many images at a time
            (same results). Default (None): as many as keep its largest feature map under 32 MiB,
            glibc's mmap threshold (bigger maps are fresh pages zeroed by the kernel on every call:
            mb3-large-ssd-lite at batch 32 ran 2.2x faster in chunks of 4). 0 turns chunking off.

    Images are resized as the model's ``config.antialias`` says (see :func:`prepare_image`), so a
    model loaded from a pytorch-ssd file sees OpenCV-resized images, as it did in training.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        device: str | torch.device = "cpu",
        settings: PostprocessSettings = DISPLAY,
        *,
        fused: bool = True,
        chunk_size: int | None = None,
    ):
        self.device = torch.device(device)
        self.fused = bool(fused)
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 0):
            raise ValueError(f"chunk_size should be None or an integer >= 0, got {chunk_size!r}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.model = model
        self.class_names = list(class_names)
        if len(self.class_names) != self.config.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model of {class_count(self.config.num_classes)}")
        self.settings = settings

    @property
    def model(self) -> nn.Module:
        """The network given (on ``device``, eval mode); assigning another one rebuilds the fused copy."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = model.to(self.device).eval()
        self.config = self._model.config
        # What detect_batch runs: the inference copy (fused) or the model itself.
        self.network = inference_model(self._model) if self.fused else self._model
        self._memory_format = torch.channels_last if self.fused else torch.contiguous_format
        self._chunks: dict[tuple[int, ...], int] = {}  # input shape of one image -> images per call

    @property
    def settings(self) -> PostprocessSettings:
        """The post-processing of every call (a :class:`~ssdfast.ops.PostprocessSettings`)."""
        return self._settings

    @settings.setter
    def settings(self, settings: PostprocessSettings) -> None:
        self._settings = _check_settings(settings)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        net: str | None = None,
        label_file: str | os.PathLike | None = None,
        width_mult: float | None = None,
        resolution: int | None = None,
        device: str | torch.device = "cpu",
        settings: PostprocessSettings = DISPLAY,
        fused: bool = True,
        chunk_size: int | None = None,
    ) -> Detector:
        """A detector from a model file, read by :func:`ssdfast.model_files.load_model_file` (its
        ``ModelFileError`` names the file): an ssdfast checkpoint, or a pytorch-ssd ``.pth`` (``net``
        identified from the file when not given; class names from ``label_file``, else ``labels.txt``
        beside it; ``width_mult``, ``resolution``: pytorch-ssd's ``--mb2-width-mult``, ``--resolution``)."""
        loaded = load_model_file(path, net=net, label_file=label_file, width_mult=width_mult,
                                 resolution=resolution, device=device)
        return cls(loaded.model, loaded.class_names, device, settings, fused=fused, chunk_size=chunk_size)

    #: Another name of :meth:`from_file`.
    from_checkpoint = from_file

    def preprocess(self, images: Any) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images -> ``(batch[B, 3, S, S], sizes)`` on the detector's device, in the layout its
        network runs fastest on (see :func:`preprocess`)."""
        return preprocess(images, self.config, self.device, self._memory_format)

    def postprocess(
        self, confidences: Tensor, locations: Tensor, sizes: Sequence[tuple[int, int]],
        settings: PostprocessSettings | None = None,
    ) -> list[Detections]:
        """Network outputs of a batch -> one :class:`Detections` per image, on the CPU (see
        :func:`postprocess`), with ``settings`` (None: ``detector.settings``)."""
        results = postprocess(confidences, locations, self.network.priors, sizes, self.config.variances,
                              self.settings if settings is None else settings)
        out = []
        for det in results:
            labels = det.labels.cpu()
            names = [self.class_names[i] for i in labels.tolist()]
            out.append(Detections(det.boxes.cpu(), det.scores.cpu(), labels, names))
        return out

    @torch.inference_mode()
    def __call__(self, images: Any, settings: PostprocessSettings | None = None) -> list[Detections]:
        """Detect objects in one image or a batch of images of any sizes.

        Args:
            images: a PIL image, a numpy ``HxWx3`` uint8 array (RGB), a ``CxHxW`` tensor (uint8 or
                float in [0, 1]), a list of those, or a ``[B, C, H, W]`` tensor.
            settings: the post-processing of this call (None: ``detector.settings``).

        Returns:
            one :class:`Detections` per image (a list, even for a single image), on the CPU.
        """
        batch, sizes = self.preprocess(images)
        return self.detect_batch(batch, sizes, settings)

    @torch.inference_mode()
    def detect_batch(self, batch: Tensor, sizes: Sequence[tuple[int, int]],
                     settings: PostprocessSettings | None = None) -> list[Detections]:
        """Detections in a batch that is already the network's input.

        ``batch``: ``[B, 3, S, S]`` float32 made with :func:`prepare_image` (e.g. in DataLoader
        workers) or :func:`preprocess`, any device and layout; ``sizes``: ``(height, width)`` of each
        original image; ``settings``: as in ``__call__``. Returns one :class:`Detections` per image
        (boxes in its pixels), on the CPU.
        """
        if batch.dim() != 4 or batch.shape[0] != len(sizes):
            raise ValueError(f"batch should be [B, 3, S, S] with one size per image, got {tuple(batch.shape)} "
                             f"and {len(sizes)} sizes")
        if batch.shape[0] == 0:
            return []
        batch = batch.to(self.device, non_blocking=True)
        if self._memory_format is not torch.contiguous_format:
            batch = batch.contiguous(memory_format=self._memory_format)
        confidences, locations = self.run_network(batch)
        return self.postprocess(confidences, locations, sizes, settings)

    def run_network(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """The network on a preprocessed ``batch``, in chunks on CPU (see ``chunk_size``):
        ``(confidences[B, P, C], locations[B, P, 4])``."""
        if not self.fused:
            return self.network(batch)
        return run_in_chunks(self.network, batch, self.chunk_size, self._chunks)


def _check_settings(settings: Any) -> PostprocessSettings:
    if not isinstance(settings, PostprocessSettings):
        raise TypeError(f"settings should be a PostprocessSettings, got {type(settings).__name__}")
    return settings


def run_in_chunks(network: nn.Module, batch: Tensor, chunk_size: int | None = None,
                  sizes: dict[tuple[int, ...], int] | None = None) -> tuple[Tensor, Tensor]:
    """``network(batch)`` for an SSD, on CPU in chunks of at most ``chunk_size`` images (None: as many
    as keep its largest feature map under 32 MiB, measured on the first image and remembered in
    ``sizes`` per input shape; 0: no chunks). Same outputs; see :class:`Detector`'s ``chunk_size``."""
    if batch.device.type != "cpu" or chunk_size == 0 or batch.shape[0] <= 1:
        return network(batch)
    key = tuple(batch.shape[1:])
    sizes = {} if sizes is None else sizes
    chunk = chunk_size or sizes.get(key)
    parts: list[tuple[Tensor, Tensor]] = []
    if chunk is None:  # first call at this size: one image alone, measuring its feature maps
        largest, first = _largest_output_bytes(network, batch[:1])
        chunk = max(1, _CHUNK_BYTES // max(largest, 1))
        sizes[key] = chunk
        parts.append(first)
        batch = batch[1:]
    if chunk >= batch.shape[0] and not parts:
        return network(batch)
    parts += [network(part) for part in batch.split(chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


#: Feature maps up to this size stay in glibc's heap (its largest mmap threshold, 64-bit).
_CHUNK_BYTES = 32 * 1024 * 1024


def _largest_output_bytes(network: nn.Module, one_image: Tensor) -> tuple[int, tuple[Tensor, Tensor]]:
    """``network(one_image)`` and the size in bytes of the largest tensor any of its modules returned."""
    largest = [0]

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in network.modules()]
    try:
        out = network(one_image)
    finally:
        for h in handles:
            h.remove()
    return largest[0], out
