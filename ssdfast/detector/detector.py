"""The :class:`Detector`: images in, boxes in each image's pixels out -- the one inference path
(``ssdfast-eval``, the trainer's validation and ``ssdfast-detect`` all run one).

>>> from ssdfast import Detector
>>> detector = Detector.from_file("models/mb2-ssd-lite.pth", device="cuda")   # ssdfast checkpoint
>>> detector = Detector.from_file("mb1-ssd.pth", net="mb1-ssd", label_file="voc-model-labels.txt")  # pytorch-ssd
>>> for det in detector([pil_image, numpy_image]):        # any sizes, batched
...     print(det.boxes, det.scores, det.label_names)       # xyxy pixels of that image
>>> detector.settings = PostprocessSettings(score_threshold=0.5)   # ssdfast.ops.PostprocessSettings

A detector is preprocessing (:mod:`~ssdfast.detector.images`), a network
(:mod:`~ssdfast.detector.network`: the PyTorch SSD's inference copy by default, or a network of
another runtime, :func:`ssdfast.load_detector`) and post-processing
(:func:`~ssdfast.detector.detections.postprocess`: ``ops.ssd_postprocess`` with one
:class:`~ssdfast.ops.PostprocessSettings`, ``DISPLAY`` by default, ``EVALUATION`` for mAP).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..io.labels import class_count
from ..model_files import load_model_file
from ..ops.settings import DISPLAY, PostprocessSettings
from .detections import Detections, check_settings, postprocess
from .images import Preprocessing, preprocess
from .network import TorchNetwork, check_network

__all__ = ["Detector"]


class Detector:
    """A network with its preprocessing and post-processing: ``detector(images) -> list[Detections]``.

    Args:
        model: an SSD (``create_model`` / ``load_model_file``); moved to ``device`` and put in
            eval mode, kept as ``detector.model``, otherwise unchanged. Or a network of another
            runtime (see :mod:`ssdfast.detector.network`; :func:`ssdfast.load_detector` makes them):
            ``detector.model`` is None then.
        class_names: one per class, ``BACKGROUND`` first.
        device: where to run (a PyTorch model); where batches are prepared.
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
        preprocessing: how images become the network's input (a
            :class:`~ssdfast.detector.images.Preprocessing`); default: the network's own (a model's:
            its size, mean/std, and antialiased or -- for a model from a pytorch-ssd file,
            ``config.antialias`` False -- OpenCV's resize, as it was trained).

    ``detector.source`` says where the network came from when :func:`ssdfast.load_detector` made the
    detector (a :class:`ssdfast.runtimes.ModelSource`: file, kind, runtime, one line describing it), else None.
    """

    source: Any = None

    def __init__(
        self,
        model: nn.Module | Any,
        class_names: Sequence[str],
        device: str | torch.device = "cpu",
        settings: PostprocessSettings = DISPLAY,
        *,
        fused: bool = True,
        chunk_size: int | None = None,
        preprocessing: Preprocessing | None = None,
    ):
        self.device = torch.device(device)
        self.fused = bool(fused)
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 0):
            raise ValueError(f"chunk_size should be None or an integer >= 0, got {chunk_size!r}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            raise TypeError(f"preprocessing should be a Preprocessing, got {type(preprocessing).__name__}")
        self._preprocessing = preprocessing
        self.model = model
        self.class_names = list(class_names)
        if len(self.class_names) != self.network.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model of "
                             f"{class_count(self.network.num_classes)}")
        self.settings = settings

    @property
    def model(self) -> nn.Module | None:
        """The PyTorch model given (on ``device``, eval mode), None for a network of another runtime;
        assigning a model rebuilds the fused copy."""
        return self._model

    @model.setter
    def model(self, model: nn.Module | Any) -> None:
        if isinstance(model, nn.Module):
            self._model = model.to(self.device).eval()
            #: What detect_batch runs (see :mod:`ssdfast.detector.network`).
            self.network = TorchNetwork(self._model, fused=self.fused, chunk_size=self.chunk_size)
        else:
            self._model = None
            self.network = check_network(model)

    @property
    def config(self) -> Any:
        """The PyTorch model's config (None for a network of another runtime)."""
        return None if self._model is None else self._model.config

    @property
    def preprocessing(self) -> Preprocessing:
        """How images become the network's input (see the ``preprocessing`` argument)."""
        return self._preprocessing or self.network.preprocessing

    @property
    def settings(self) -> PostprocessSettings:
        """The post-processing of every call (a :class:`~ssdfast.ops.PostprocessSettings`)."""
        return self._settings

    @settings.setter
    def settings(self, settings: PostprocessSettings) -> None:
        self._settings = check_settings(settings)

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
        preprocessing: Preprocessing | None = None,
    ) -> Detector:
        """A detector from a model file, read by :func:`ssdfast.model_files.load_model_file` (its
        ``ModelFileError`` names the file): an ssdfast checkpoint, or a pytorch-ssd ``.pth`` (``net``
        identified from the file when not given; class names from ``label_file``, else ``labels.txt``
        beside it; ``width_mult``, ``resolution``: pytorch-ssd's ``--mb2-width-mult``, ``--resolution``).
        The network runs in PyTorch; :func:`ssdfast.load_detector` runs it in other runtimes too."""
        loaded = load_model_file(path, net=net, label_file=label_file, width_mult=width_mult,
                                 resolution=resolution, device=device)
        return cls(loaded.model, loaded.class_names, device, settings, fused=fused, chunk_size=chunk_size,
                   preprocessing=preprocessing)

    #: Another name of :meth:`from_file`.
    from_checkpoint = from_file

    def preprocess(self, images: Any) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images -> ``(batch[B, 3, H, W], sizes)`` on the detector's device, made with
        ``detector.preprocessing``, in the layout its network runs fastest on (see
        :func:`~ssdfast.detector.images.preprocess`)."""
        layout = getattr(self.network, "memory_format", torch.contiguous_format)
        return preprocess(images, self.preprocessing, self.device, layout)

    def postprocess(
        self, confidences: Tensor, locations: Tensor, sizes: Sequence[tuple[int, int]],
        settings: PostprocessSettings | None = None,
    ) -> list[Detections]:
        """Network outputs of a batch -> one :class:`Detections` per image, on the CPU (see
        :func:`~ssdfast.detector.detections.postprocess`), with ``settings`` (None: ``detector.settings``)."""
        network = self.network
        results = postprocess(confidences, locations, network.priors, sizes, network.variances,
                              self.settings if settings is None else settings,
                              probabilities=network.outputs_probabilities)
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

        ``batch``: ``[B, 3, H, W]`` float32 made with :func:`~ssdfast.detector.images.prepare_image`
        and ``detector.preprocessing`` (e.g. in DataLoader workers) or :func:`preprocess`, any device
        and layout; ``sizes``: ``(height, width)`` of each original image; ``settings``: as in
        ``__call__``. Returns one :class:`Detections` per image (boxes in its pixels), on the CPU.
        """
        if batch.dim() != 4 or batch.shape[0] != len(sizes):
            raise ValueError(f"batch should be [B, 3, H, W] with one size per image, got {tuple(batch.shape)} "
                             f"and {len(sizes)} sizes")
        if batch.shape[0] == 0:
            return []
        confidences, locations = self.run_network(batch.to(self.device, non_blocking=True))
        return self.postprocess(confidences, locations, sizes, settings)

    def run_network(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """The network on a preprocessed ``batch``: ``(confidences[B, P, C], locations[B, P, 4])``
        (see :mod:`ssdfast.detector.network`)."""
        return self.network(batch)
