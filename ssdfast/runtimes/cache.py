"""The on-the-fly export cache: a PyTorch model file exported once per content and settings.

A runtime other than torch given an ssdfast checkpoint or a pytorch-ssd ``.pth`` runs the model
exported by ssdfast's own export code (:func:`ssdfast.export.export_onnx`: the ``jetson`` format,
a dynamic batch), written under the cache folder (``$XDG_CACHE_HOME/ssdfast``, else
``~/.cache/ssdfast``; ``cache_dir`` / ``SSDFAST_CACHE_DIR`` choose another) in a folder named by a key
of the model file's sha256, the network's configuration and class names as loaded (a pytorch-ssd
file's ``--net``, width and resolution included), the export settings and ssdfast's version. A
second call with the same file and settings reuses it; an edited file, other settings or another
ssdfast export again. Files are written atomically (a reader never sees half a file). TensorRT
engines built from an export are kept the same way, keyed by the ``.onnx`` file's sha256, the
TensorRT version, the GPU and the largest batch.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..export.formats import DEFAULT_OPSET

__all__ = ["EXPORT_SETTINGS", "default_cache_dir", "export_key", "cached_export", "engine_key", "cached_engine"]

#: How a model file is exported for a runtime (ssdfast.export.export_onnx's arguments).
EXPORT_SETTINGS = {"format": "jetson", "opset": DEFAULT_OPSET, "batch_size": None}


def default_cache_dir() -> Path:
    """``$SSDFAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssdfast``, else ``~/.cache/ssdfast``."""
    if os.environ.get("SSDFAST_CACHE_DIR"):
        return Path(os.environ["SSDFAST_CACHE_DIR"]).expanduser()
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(home) / "ssdfast"


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def export_key(file_sha256: str, config: Any, class_names: list[str]) -> str:
    """The cache key of a model file's export (see the module docstring)."""
    return _digest({"file": file_sha256, "config": config.to_dict(), "class_names": list(class_names),
                    "export": EXPORT_SETTINGS, "ssdfast": __version__})


def cached_export(loaded: Any, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ``.onnx`` export of a model file read by :func:`ssdfast.model_files.load_model_file`
    (``loaded``: its :class:`~ssdfast.model_files.LoadedModel`), from the cache or written to it now."""
    from ..export.onnx import export_onnx
    from ..export.tensorrt import file_sha256

    sha = file_sha256(loaded.path)
    key = export_key(sha, loaded.model.config, loaded.class_names)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "exports" / key[:24] / f"{Path(loaded.path).stem}.onnx"
    if not path.is_file():
        export_onnx(loaded.model, path, format=EXPORT_SETTINGS["format"], opset=EXPORT_SETTINGS["opset"],
                    batch_size=EXPORT_SETTINGS["batch_size"], class_names=loaded.class_names,
                    labels_path=path.parent / "labels.txt",
                    metadata={"ssdfast.checkpoint_sha256": sha, "ssdfast.checkpoint": Path(loaded.path).name})
    return path


def engine_key(onnx_sha256: str, tensorrt_version: str, gpu: str, max_batch: int) -> str:
    """The cache key of a TensorRT engine built from an ``.onnx`` file."""
    return _digest({"onnx": onnx_sha256, "tensorrt": tensorrt_version, "gpu": gpu, "max_batch": int(max_batch),
                    "ssdfast": __version__})


def cached_engine(onnx_path: str | os.PathLike, *, tensorrt_version: str, gpu: str, max_batch: int,
                  batch_size: int | None, image_size: tuple[int, int],
                  cache_dir: str | os.PathLike | None = None) -> Path:
    """A TensorRT engine of ``onnx_path`` (FP32; a dynamic batch up to ``max_batch`` when
    ``batch_size`` is None), from the cache or built now with :func:`ssdfast.export.build_engine`."""
    from ..export.tensorrt import build_engine, file_sha256

    sha = file_sha256(onnx_path)
    key = engine_key(sha, tensorrt_version, gpu, max_batch)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "engines" / key[:24] / f"{Path(onnx_path).stem}.engine"
    if not path.is_file():
        build_engine(onnx_path, path, checkpoint_sha256=sha, format="jetson", batch_size=batch_size,
                     max_batch_size=max_batch, image_size=image_size)
    return path
