"""What a :class:`~ssdfast.detector.Detector` runs: a *network*, and the PyTorch one, :class:`TorchNetwork`.

The network contract (any object with these works; the runtimes of :mod:`ssdfast.runtimes` --
ONNX Runtime, OpenVINO, TensorRT -- provide theirs):

- ``network(batch[B, 3, H, W] float32) -> (scores[B, P, C], locations[B, P, 4])``, the batch made
  with ``network.preprocessing`` and on the detector's device (the outputs may be on any device);
- ``network.priors`` ``[P, 4]`` cxcywh and ``network.variances`` (two floats): ``locations`` are SSD
  offsets against them (``ops.ssd_postprocess`` decodes them);
- ``network.outputs_probabilities``: True when ``scores`` are softmax probabilities already
  (exported graphs), False for logits (the PyTorch SSD): the detector applies the softmax then;
- ``network.preprocessing``: the :class:`~ssdfast.detector.images.Preprocessing` its input is made with;
- ``network.num_classes``: C, background included.

Optional: ``network.memory_format`` (the layout its batches are made in, ``torch.contiguous_format``
when absent).

:class:`TorchNetwork` runs an ssdfast SSD: its inference copy (``fused``: BatchNorm folded,
activations fused, channels_last, oneDNN convolutions on CPU; :func:`ssdfast.models.fuse.inference_model`)
on CPU batches cut into chunks whose feature maps stay in glibc's heap (:func:`run_in_chunks`).
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..models.fuse import inference_model
from .images import Preprocessing

__all__ = ["Network", "TorchNetwork", "check_network", "run_in_chunks"]


class Network(Protocol):
    """The network contract (see the module docstring)."""

    priors: Tensor
    variances: tuple[float, float]
    outputs_probabilities: bool
    preprocessing: Preprocessing
    num_classes: int

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]: ...


#: The attributes of the network contract, checked when a detector is given a network.
CONTRACT = ("priors", "variances", "outputs_probabilities", "preprocessing", "num_classes")


def check_network(network: Any) -> Any:
    """``network`` if it has the contract's attributes and is callable, else a TypeError naming what is missing."""
    missing = [name for name in CONTRACT if not hasattr(network, name)]
    if missing or not callable(network):
        what = ", ".join(missing + ([] if callable(network) else ["__call__"]))
        raise TypeError(f"a Detector runs an ssdfast SSD (nn.Module with .config) or a network with priors, variances, "
                        f"outputs_probabilities, preprocessing and num_classes; {type(network).__name__} lacks {what}")
    return network


class TorchNetwork:
    """An ssdfast SSD as a detector's network (see the module docstring).

    Args:
        model: the SSD (``.config``, ``.priors``), on the device it runs on, in eval mode.
        fused: run its inference copy, made here once, on channels_last batches; ``False`` runs
            ``model`` itself.
        chunk_size: on CPU with ``fused``, at most this many images per call (None: as many as keep
            the largest feature map under 32 MiB, measured once per input size; 0: no chunks).
    """

    outputs_probabilities = False

    def __init__(self, model: nn.Module, *, fused: bool = True, chunk_size: int | None = None):
        config = model.config
        self.model = model
        self.fused = bool(fused)
        self.module = inference_model(model) if self.fused else model
        self.memory_format = torch.channels_last if self.fused else torch.contiguous_format
        self.chunk_size = chunk_size
        self.chunks: dict[tuple[int, ...], int] = {}  # input shape of one image -> images per call
        self.priors = model.priors
        self.variances = tuple(float(v) for v in config.variances)
        self.num_classes = int(config.num_classes)
        self.preprocessing = Preprocessing.of(config)

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        if not self.fused:
            return self.module(batch)
        batch = batch.contiguous(memory_format=self.memory_format)
        return run_in_chunks(self.module, batch, self.chunk_size, self.chunks)


def run_in_chunks(network: nn.Module, batch: Tensor, chunk_size: int | None = None,
                  sizes: dict[tuple[int, ...], int] | None = None) -> tuple[Tensor, Tensor]:
    """``network(batch)`` for an SSD, on CPU in chunks of at most ``chunk_size`` images (None: as many
    as keep its largest feature map under 32 MiB, measured on the first image and remembered in
    ``sizes`` per input shape; 0: no chunks). Same outputs; see :class:`~ssdfast.detector.Detector`'s
    ``chunk_size``."""
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
