""":func:`load_detector`: a model file -> a :class:`~ssdfast.detector.Detector` whose network runs in
the runtime asked for; what every command line that runs a model calls.

- an ssdfast checkpoint or a pytorch-ssd ``.pth``: the torch runtime is exactly
  :meth:`Detector.from_file <ssdfast.detector.Detector.from_file>`; another runtime runs the model
  exported on the fly by ssdfast's export code and cached (:mod:`ssdfast.runtimes.cache`);
- an exported ``.onnx`` (the ``jetson`` format; INT8 Q/DQ graphs too): onnxruntime by default, or
  openvino / tensorrt; an OpenVINO ``.xml``: openvino. Its class names come from ``label_file``, else
  the ``labels.txt`` beside it, else the names stored in the file.

``preprocess="detectnet"`` feeds the network as jetson-inference's detectNet does (nearest-neighbour
resize, :mod:`ssdfast.detector.images`): with an exported file, the mAP a Jetson will give up to
TensorRT's arithmetic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..detector import Detector, Preprocessing
from ..errors import MissingPackageError, ModelFileError, SettingsError, first_line
from ..export.deps import require
from ..io import read_label_file
from ..io.labels import class_count
from ..model_files import exported_format, load_model_file
from ..ops.settings import DISPLAY, PostprocessSettings
from .names import PACKAGES, PREPROCESSES, RUNTIMES, default_runtime

__all__ = ["ModelSource", "load_detector"]


@dataclass
class ModelSource:
    """Where a detector loaded by :func:`load_detector` came from (``detector.source``).

    Attributes:
        path: the model file given.
        kind: ``"ssdfast"`` (a checkpoint), ``"pytorch-ssd"`` (a ``.pth``), ``"onnx"`` or ``"openvino"``.
        runtime: the runtime its network runs in.
        preprocess: ``"ssdfast"`` or ``"detectnet"``.
        description: one line for the command lines (model, size, classes, runtime).
        exported: the exported file the runtime runs (the cached export for a PyTorch model file), None for torch.
    """

    path: str
    kind: str
    runtime: str
    preprocess: str
    description: str
    exported: str | None = None


def load_detector(
    model: str | os.PathLike,
    *,
    runtime: str | None = None,
    preprocess: str = "ssdfast",
    settings: PostprocessSettings = DISPLAY,
    device: str | torch.device = "cpu",
    net: str | None = None,
    label_file: str | os.PathLike | None = None,
    width_mult: float | None = None,
    resolution: int | None = None,
    fused: bool = True,
    chunk_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    flag: str | None = None,
) -> Detector:
    """A detector for the model file ``model``, its network in ``runtime`` (see the module docstring).

    Args:
        model: an ssdfast checkpoint, a pytorch-ssd ``.pth``, an exported ``.onnx`` or an OpenVINO ``.xml``.
        runtime: ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``; None: onnxruntime for an
            ``.onnx``, openvino for an ``.xml``, and for a PyTorch model file the CPU default chosen by
            measurement (:data:`ssdfast.runtimes.names.CPU_DEFAULT`; torch on a GPU).
        preprocess: ``ssdfast`` (the model's own input path) or ``detectnet`` (detectNet's nearest
            resize; the model's own mean/std, which an exported graph folds in).
        settings: the post-processing, as :class:`~ssdfast.detector.Detector` takes it.
        device: where to run: torch's device; onnxruntime: the CPU, or CUDA with onnxruntime-gpu;
            openvino: the CPU, or an OpenVINO device name (``"GPU"``); tensorrt: a CUDA device.
        net, label_file, width_mult, resolution: as :func:`ssdfast.model_files.load_model_file` takes
            them (a pytorch-ssd file's network, class names, width and size); for an exported file,
            ``label_file`` names its classes and ``net`` / ``resolution`` are checked against it.
        fused, chunk_size: the torch runtime's (see :class:`~ssdfast.detector.Detector`).
        cache_dir: where exports and engines are cached (see :mod:`ssdfast.runtimes.cache`).
        threads: the threads of onnxruntime / openvino (default: torch's, set from the cores this
            process may use by :func:`ssdfast.threads.plan_cpu`).
        flag: the command-line flag that gave ``model``, named in errors.

    The returned detector's ``source`` (a :class:`ModelSource`) says what was loaded.

    Raises:
        ModelFileError (one line naming ``flag`` and the file): a file that cannot be used;
        MissingPackageError (one line saying what to install): the runtime's package is missing;
        SettingsError (a ValueError): an unknown runtime or preprocessing, or a runtime that cannot run here.
    """
    path = os.fspath(model)
    exported = exported_format(path)
    runtime = runtime or default_runtime(exported, torch.device(_torch_device(device)).type)
    if runtime not in RUNTIMES:
        raise SettingsError(f"runtime should be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if preprocess not in PREPROCESSES:
        raise SettingsError(f"preprocess should be one of {', '.join(PREPROCESSES)}, got {preprocess!r}")
    if not os.path.isfile(path):
        raise ModelFileError.about(path, "no such file", flag)
    if runtime in PACKAGES:  # before anything is exported: say what to install
        require(PACKAGES[runtime], f"the {runtime} runtime")
    if runtime == "tensorrt" and not torch.cuda.is_available():
        raise SettingsError("--runtime tensorrt: the tensorrt runtime runs on a CUDA GPU, and none is available here")
    if exported is not None:
        return _load_exported(path, exported, runtime, preprocess, settings, device, net, label_file, resolution,
                              cache_dir, threads, flag)

    load_on = device if runtime == "torch" else "cpu"
    loaded = load_model_file(path, flag=flag, net=net, label_file=label_file, width_mult=width_mult,
                             resolution=resolution, device=load_on)
    if runtime == "torch":
        preprocessing = Preprocessing.of(loaded.model.config, "nearest") if preprocess == "detectnet" else None
        detector = Detector(loaded.model, loaded.class_names, device, settings, fused=fused, chunk_size=chunk_size,
                            preprocessing=preprocessing)
        detector.source = ModelSource(path, loaded.kind, runtime, preprocess, _describe(loaded.describe(), runtime,
                                                                                       preprocess))
        return detector
    from .cache import cached_export

    onnx_path = cached_export(loaded, cache_dir=cache_dir)
    network, where = _open(runtime, onnx_path, device, threads, cache_dir, flag, path)
    detector = _detector(network, loaded.class_names, where, settings, preprocess)
    description = _describe(loaded.describe(), runtime, preprocess, f"exported to {onnx_path}")
    detector.source = ModelSource(path, loaded.kind, runtime, preprocess, description, os.fspath(onnx_path))
    return detector


def _torch_device(device: Any) -> Any:
    """The torch device of a detector's ``device`` (an OpenVINO device name: the CPU prepares its batches)."""
    from .openvino_runtime import OPENVINO_DEVICES

    return "cpu" if str(device).split(".")[0].upper() in OPENVINO_DEVICES else device


def _describe(what: str, runtime: str, preprocess: str, note: str | None = None) -> str:
    extra = f"; {note}" if note else ""
    pre = "; detectnet preprocessing (nearest-neighbour resize)" if preprocess == "detectnet" else ""
    return f"{what}; runtime {runtime}{extra}{pre}"


def _open(runtime: str, path: str | os.PathLike, device: Any, threads: int | None,
          cache_dir: str | os.PathLike | None, flag: str | None, given: str) -> tuple[Any, torch.device]:
    """The runtime's network of an exported file and the device the detector prepares batches on; a file
    the runtime cannot load, or that is no jetson graph, is a ModelFileError naming the file ``given``."""
    try:
        return _open_network(runtime, path, device, threads, cache_dir)
    except (MissingPackageError, ModelFileError):
        raise
    except ValueError as exc:  # not a jetson graph, a device the runtime cannot use ...
        raise ModelFileError.about(given, first_line(exc).removeprefix(f"{os.fspath(path)}: "), flag) from None
    except Exception as exc:  # the runtime's own error types (a damaged or foreign file)
        raise ModelFileError.about(given, f"{runtime} cannot load it ({first_line(exc)})", flag) from None


def _open_network(runtime: str, path: str | os.PathLike, device: Any, threads: int | None,
                  cache_dir: str | os.PathLike | None) -> tuple[Any, torch.device]:
    if runtime == "onnxruntime":
        from .onnx_runtime import onnxruntime_network

        return onnxruntime_network(path, device=_torch_device(device), threads=threads)
    if runtime == "openvino":
        from .openvino_runtime import openvino_network

        return openvino_network(path, device=device, threads=threads)
    from .tensorrt_runtime import tensorrt_network

    return tensorrt_network(path, device=device, cache_dir=cache_dir)


def _detector(network: Any, class_names: list[str], device: torch.device, settings: PostprocessSettings,
              preprocess: str) -> Detector:
    preprocessing = network.preprocessing.with_resize("nearest") if preprocess == "detectnet" else None
    return Detector(network, class_names, device, settings, preprocessing=preprocessing)


def _load_exported(path: str, exported: str, runtime: str, preprocess: str, settings: PostprocessSettings,
                   device: Any, net: str | None, label_file: str | os.PathLike | None, resolution: int | None,
                   cache_dir: str | os.PathLike | None, threads: int | None, flag: str | None) -> Detector:
    if runtime == "torch" or (exported == "openvino" and runtime != "openvino"):
        runs = "openvino" if exported == "openvino" else "onnxruntime, openvino or tensorrt"
        need = "" if exported == "openvino" else "; torch runs the checkpoint it was exported from"
        raise ModelFileError.about(path, f"an exported {exported} model runs in {runs}, not {runtime}{need}", flag)
    network, where = _open(runtime, path, device, threads, cache_dir, flag, path)
    graph = network.graph
    names = _exported_class_names(path, graph, label_file, flag)
    if network.num_classes is None:
        network.num_classes = len(names)
    if len(names) != network.num_classes:
        source = label_file or "the labels beside it"
        raise ModelFileError.about(path, f"predicts {class_count(network.num_classes)} but {source} has "
                                f"{class_count(len(names))}", flag)
    stored_net = graph.metadata.get("ssdfast.net")
    if net is not None and stored_net and _canonical(net) != stored_net:
        raise ModelFileError.about(path, f"holds a {stored_net} network, not {net}", flag)
    h, w = graph.image_size
    if resolution is not None and (int(resolution), int(resolution)) != (h, w):
        raise ModelFileError.about(path, f"takes {w}x{h} images, not resolution {resolution}", flag)
    detector = _detector(network, names, where, settings, preprocess)
    labels = "labels from " + os.fspath(label_file or Path(path).with_name("labels.txt")) \
        if label_file or Path(path).with_name("labels.txt").is_file() else "class names from the file"
    what = f"{exported} model {path}: {stored_net or 'jetson graph'} {w}x{h}, {class_count(len(names))} ({labels})"
    detector.source = ModelSource(path, exported, runtime, preprocess, _describe(what, runtime, preprocess), path)
    return detector


def _canonical(net: str) -> str:
    from ..models import canonical_name

    return canonical_name(net)


def _exported_class_names(path: str, graph: Any, label_file: str | os.PathLike | None, flag: str | None) -> list[str]:
    if label_file is not None:
        return read_label_file(label_file)
    beside = Path(path).with_name("labels.txt")
    if beside.is_file():
        return read_label_file(beside)
    if graph.class_names:
        return graph.class_names
    raise ModelFileError.about(path, "its class names are unknown: give its label file with --label-file "
                            "(no labels.txt beside it, none stored in the file)", flag)

