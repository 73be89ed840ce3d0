"""TensorRT engines from the exported ONNX files, stamped with the checkpoint they came from.

:func:`build_engine` builds a serialized engine with the ``tensorrt`` Python package (FP32, FP16, or
INT8 calibrated on a folder of images). Without the package, :func:`trtexec_command` gives the
equivalent ``trtexec`` command line to run on the Jetson.

Either way a sidecar ``<engine>.json`` records the sha256 of the checkpoint (and of the ONNX file,
and of the engine once built). :func:`check_engine` compares it with the checkpoint at hand and
raises :class:`~ssdfast.errors.ModelFileError` when the engine was built from another checkpoint, another
ONNX export, or was replaced since: a stale engine is never loaded silently.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelFileError
from .deps import require

__all__ = [
    "EngineInfo",
    "file_sha256",
    "sidecar_path",
    "tensorrt_available",
    "trtexec_command",
    "format_command",
    "write_sidecar",
    "read_sidecar",
    "check_engine",
    "build_engine",
    "has_qdq_nodes",
]

SIDECAR_FORMAT = "ssdfast-engine"


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` Python package imports."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


@dataclass
class EngineInfo:
    """The sidecar's content. ``engine_sha256`` is None until the engine has been built by ssdfast
    (an engine built by ``trtexec`` from the printed command is stamped with :func:`write_sidecar`
    ``(..., engine_sha256=file_sha256(engine))`` or by running ``ssdfast-export --tensorrt`` again)."""

    engine: str
    checkpoint_sha256: str
    onnx_sha256: str
    export_format: str
    precision: str = "fp32"
    batch_size: int | None = 1
    image_size: tuple[int, int] | None = None
    engine_sha256: str | None = None
    tensorrt_version: str | None = None
    built_by: str = "ssdfast"
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return {"format": SIDECAR_FORMAT, "version": 1, **d}


def write_sidecar(engine_path: str | os.PathLike, info: EngineInfo) -> Path:
    """Write ``<engine>.json`` atomically."""
    path = sidecar_path(engine_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_sidecar(engine_path: str | os.PathLike) -> EngineInfo:
    """Read ``<engine>.json``; :class:`~ssdfast.errors.ModelFileError` when it is missing or not ssdfast's."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ModelFileError(f"{engine_path}: no {path.name} beside it, so the checkpoint it was built from "
                             "is unknown; rebuild it with `ssdfast-export CHECKPOINT --tensorrt ENGINE`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable engine sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ModelFileError(f"{path}: not an ssdfast engine sidecar")
    fields = {k: v for k, v in data.items() if k in EngineInfo.__dataclass_fields__}
    if fields.get("image_size") is not None:
        fields["image_size"] = tuple(fields["image_size"])
    try:
        return EngineInfo(**fields)
    except TypeError as exc:
        raise ModelFileError(f"{path}: incomplete engine sidecar ({exc})") from None


def check_engine(engine_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                 checkpoint_sha256: str | None = None, onnx_path: str | os.PathLike | None = None) -> EngineInfo:
    """Verify that an engine belongs to a checkpoint; return its sidecar.

    Raises :class:`~ssdfast.errors.ModelFileError` when: the engine or its sidecar is missing; the sidecar
    names another checkpoint (sha256); ``onnx_path`` is given and differs from the ONNX file the engine was
    built from; the engine file changed since it was built (when its hash was recorded); or the
    installed TensorRT differs from the one that built it (engines are not portable across versions).
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise ModelFileError(f"{engine_path}: no such engine file")
    info = read_sidecar(engine_path)
    if checkpoint_sha256 is None and checkpoint is not None:
        checkpoint_sha256 = file_sha256(checkpoint)
    if checkpoint_sha256 is not None and info.checkpoint_sha256 != checkpoint_sha256:
        raise ModelFileError(
            f"{engine_path} is stale: built from checkpoint sha256 {info.checkpoint_sha256[:12]}…, "
            f"this checkpoint is {checkpoint_sha256[:12]}…; rebuild it"
        )
    if onnx_path is not None:
        onnx_sha = file_sha256(onnx_path)
        if onnx_sha != info.onnx_sha256:
            raise ModelFileError(f"{engine_path} is stale: built from another export than {onnx_path}; rebuild it")
    if info.engine_sha256 is not None and file_sha256(engine_path) != info.engine_sha256:
        raise ModelFileError(f"{engine_path} changed after it was built (sha256 differs from its sidecar)")
    if info.tensorrt_version is not None and tensorrt_available():
        import tensorrt as trt

        if trt.__version__ != info.tensorrt_version:
            raise ModelFileError(f"{engine_path} was built with TensorRT {info.tensorrt_version}, "
                                 f"this is TensorRT {trt.__version__}; rebuild it")
    return info


def has_qdq_nodes(onnx_path: str | os.PathLike) -> bool:
    """Whether an ONNX file is explicitly quantized (has ``QuantizeLinear`` nodes)."""
    onnx = require("onnx")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in proto.graph.node)


# ----------------------------------------------------------------------------- trtexec


def trtexec_command(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    fp16: bool = False,
    int8: bool = False,
    calib_cache: str | os.PathLike | None = None,
    batch_size: int | None = 1,
    max_batch_size: int = 8,
    image_size: tuple[int, int] | None = None,
    workspace_mb: int | None = None,
) -> list[str]:
    """The ``trtexec`` command that builds the same engine as :func:`build_engine`.

    ``batch_size=None`` (a dynamic-batch export) adds min/opt/max shapes from 1 to
    ``max_batch_size``. ``int8``: for an ONNX file with Q/DQ nodes (``ssdfast-export --int8``) the
    scales are in the file; for an FP32 one, ``trtexec`` uses the calibration cache ``calib_cache`` (it
    cannot calibrate from images itself; without a cache it builds with placeholder scales, for timing only).
    ``trtexec`` loads TensorRT's plugins (``EfficientNMS_TRT``) by itself.
    """
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if batch_size is None:
        if image_size is None:
            raise ValueError("a dynamic-batch engine needs image_size for its shapes")
        h, w = image_size
        cmd += [f"--minShapes=input_0:1x3x{h}x{w}", f"--optShapes=input_0:{max_batch_size}x3x{h}x{w}",
                f"--maxShapes=input_0:{max_batch_size}x3x{h}x{w}"]
    if fp16:
        cmd.append("--fp16")
    if int8:
        cmd.append("--int8")
        if calib_cache is not None:
            cmd.append(f"--calib={calib_cache}")
    if workspace_mb is not None:
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    """A command list as one shell line."""
    return " ".join(shlex.quote(str(c)) for c in cmd)


# ----------------------------------------------------------------------------- build (needs tensorrt)


class _ImageCalibrator:
    """INT8 entropy calibration on preprocessed images (``input_0`` in [-1, 1]), via torch CUDA buffers."""

    def __new__(cls, trt: Any, batches: list[Any], cache_path: Path):  # noqa: D102
        import numpy as np
        import torch

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches = batches
                self.index = 0
                self.device_input = None
                self.cache_path = cache_path

            def get_batch_size(self) -> int:
                return int(self.batches[0].shape[0]) if self.batches else 1

            def get_batch(self, names: Any) -> Any:
                if self.index >= len(self.batches):
                    return None
                batch = np.ascontiguousarray(self.batches[self.index], dtype=np.float32)
                self.index += 1
                self.device_input = torch.from_numpy(batch).cuda()
                return [int(self.device_input.data_ptr())]

            def read_calibration_cache(self) -> Any:
                if self.cache_path.is_file():
                    return self.cache_path.read_bytes()
                return None

            def write_calibration_cache(self, cache: Any) -> None:
                self.cache_path.write_bytes(bytes(cache))

        return Calibrator()


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    checkpoint_sha256: str,
    format: str,
    fp16: bool = False,
    int8: bool = False,
    calibration_batches: list[Any] | None = None,
    batch_size: int | None = 1,
    max_batch_size: int = 8,
    image_size: tuple[int, int] | None = None,
    workspace_mb: int = 1024,
) -> EngineInfo:
    """Build a TensorRT engine from an exported ONNX file and write it with its sidecar.

    Needs the ``tensorrt`` Python package (and a GPU). INT8: from an ONNX file with Q/DQ nodes
    (:func:`ssdfast.export.quantize.quantize_onnx`, explicit quantization: the scales are in the file),
    or from an FP32 one with ``calibration_batches``, arrays ``[N, 3, H, W]`` float32 in [-1, 1] for
    TensorRT's own calibrator (implicit quantization, deprecated since TensorRT 10; the cache is kept
    as ``<engine>.calib``).
    """
    trt = require("tensorrt")

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = int(workspace_mb) << 20
    precision = "fp32"
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise RuntimeError("this GPU has no fast FP16; build without --fp16")
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    if int8:
        if not calibration_batches and not has_qdq_nodes(onnx_path):
            raise ValueError(f"INT8 needs calibration images or an ONNX file with Q/DQ nodes "
                             f"(ssdfast-export --int8); {onnx_path.name} has none")
        config.set_flag(trt.BuilderFlag.INT8)
        if calibration_batches:
            config.int8_calibrator = _ImageCalibrator(trt, calibration_batches,
                                                      engine_path.with_name(engine_path.name + ".calib"))
        precision = "int8" if not fp16 else "int8+fp16"
    if batch_size is None:
        if image_size is None:
            raise ValueError("a dynamic-batch engine needs image_size")
        h, w = image_size
        profile = builder.create_optimization_profile()
        profile.set_shape("input_0", (1, 3, h, w), (max_batch_size, 3, h, w), (max_batch_size, 3, h, w))
        config.add_optimization_profile(profile)
        if int8 and calibration_batches:
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, engine_path)
    info = EngineInfo(
        engine=engine_path.name,
        checkpoint_sha256=checkpoint_sha256,
        onnx_sha256=file_sha256(onnx_path),
        export_format=format,
        precision=precision,
        batch_size=batch_size,
        image_size=image_size,
        engine_sha256=file_sha256(engine_path),
        tensorrt_version=trt.__version__,
    )
    write_sidecar(engine_path, info)
    return info
