"""Inference: images in, boxes in each image's pixels out -- the one inference path (``ssdfast-eval``,
the trainer's validation and ``ssdfast-detect`` all run a :class:`Detector`).

By concern:

- :mod:`.images`: :class:`Preprocessing` (size, mean/std, resize: antialiased, OpenCV's or
  detectNet's nearest), :func:`prepare_image` (one image -> the network's input; the evaluator's
  loader workers call it), :func:`preprocess` (a batch), :func:`to_image_tensor`;
- :mod:`.network`: the network contract a detector runs, and :class:`TorchNetwork` (the PyTorch
  SSD's inference copy, big CPU batches in chunks: :func:`run_in_chunks`);
- :mod:`.detections`: :class:`Detections` and :func:`postprocess` (softmax, ``ops.ssd_postprocess``,
  scaling to pixels);
- :mod:`.detector`: :class:`Detector`.

Networks of other runtimes (ONNX Runtime, OpenVINO, TensorRT) and the loader that picks one,
:func:`ssdfast.load_detector`, are :mod:`ssdfast.runtimes`'.
"""
from __future__ import annotations

from .detections import Detections, postprocess
from .detector import Detector
from .images import RESIZES, Preprocessing, prepare_image, preprocess, resize_nearest, to_image_tensor
from .network import Network, TorchNetwork, run_in_chunks

__all__ = [
    "Detections",
    "Detector",
    "Network",
    "Preprocessing",
    "RESIZES",
    "TorchNetwork",
    "prepare_image",
    "preprocess",
    "postprocess",
    "resize_nearest",
    "run_in_chunks",
    "to_image_tensor",
]
