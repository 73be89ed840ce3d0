"""The mAP of what ships: a trained model, its FP32 export and its INT8 files, scored the way
``ssdfast-eval`` / ``ssdfast-export --check --data`` score them.

A model is trained on a generated VOC-format set with the demo's data and settings
(:func:`ssdfast.demo.run_demo`; into ``work``, reused when it is there), exported in the ``jetson``
format (dynamic batch) and quantized to the two INT8 files ``ssdfast-export --int8`` writes (``cpu``:
ONNX Runtime / OpenVINO; ``tensorrt``: TensorRT's explicit quantization), calibrated on the training
split's images prepared as the evaluation transform prepares them. Each file runs in each installed
CPU runtime through :func:`ssdfast.load_detector` and is scored on the held-out split
(:func:`ssdfast.runtimes.map_check.compare_map`: VOC mAP@0.5, 11-point, ``EVALUATION`` settings) with
ssdfast's preprocessing and with detectNet's (nearest-neighbour resize), beside the PyTorch model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .int8_cases import TRAINED, trained_checkpoint

__all__ = ["TRAINED", "trained_model", "deploy_rows"]


def trained_model(work: Path, net: str, width_mult: float) -> tuple[Path, Path]:
    """``(checkpoint, VOC data folder)`` of the demo's training of ``net`` into ``work`` (reused; the
    models of the INT8 benchmark, :func:`benchmarks.int8_cases.trained_checkpoint`)."""
    checkpoint = trained_checkpoint(work, net, width_mult)
    return checkpoint, checkpoint.parent.parent / "data"


def _files(loaded: Any, train: Any, folder: Path) -> list[Path]:
    """The FP32 export of the model file ``loaded`` and its INT8 files (as ``ssdfast-export --int8`` writes
    them, calibrated on ``train``'s first images), made once in ``folder``."""
    from ssdfast.export import export_onnx
    from ssdfast.export.inputs import calibration_batches, load_images
    from ssdfast.export.quantize import CALIBRATION_COUNT, INT8_TARGETS, int8_path, quantize_onnx

    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        export_onnx(loaded.model, fp32, batch_size="dynamic", class_names=loaded.class_names)
    paths = [str(train.image_path(i)) for i in range(min(CALIBRATION_COUNT, len(train)))]
    out = [fp32]
    for target in INT8_TARGETS:
        path = int8_path(fp32, target)
        if not path.is_file():
            images = [image.pixels for image in load_images(paths)]
            quantize_onnx(fp32, path, calibration_batches(images, loaded.model.config, 1), target=target)
        out.append(path)
    return out


def deploy_rows(work: str | os.PathLike, trained: Sequence[tuple[str, float]] = TRAINED,
                runtimes: Sequence[str] = ("onnxruntime", "openvino"), log=print) -> list[str]:
    """The Markdown table: per trained model, file and runtime, the mAP with ssdfast's and detectNet's
    preprocessing and their differences from the PyTorch model's."""
    import importlib.util

    from ssdfast.data import build_dataset
    from ssdfast.detector import Detector
    from ssdfast.model_files import load_model_file
    from ssdfast.ops import EVALUATION
    from ssdfast.runtimes.map_check import compare_map

    work = Path(work)
    installed = [r for r in runtimes if importlib.util.find_spec(r) is not None]
    rows = ["| model (held-out images) | file | runtime | mAP, ssdfast preprocessing | vs PyTorch | "
            "mAP, detectnet preprocessing | vs PyTorch | margin |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    for net, width in trained:
        checkpoint, data = trained_model(work, net, width)
        train = build_dataset("voc", [str(data)], split="train")
        test = build_dataset("voc", [str(data)], split="test")
        loaded = load_model_file(checkpoint)
        files = _files(loaded, train, checkpoint.parent)
        pytorch = Detector(loaded.model, loaded.class_names, "cpu", EVALUATION)
        size = loaded.model.config.image_size
        name = f"{net}{f' x{width:g}' if width != 1.0 else ''} {size} px ({len(test)})"
        first = True
        for runtime in installed:
            for c in compare_map(pytorch, files, test, runtime=runtime, label_file=files[0].parent / "labels.txt"):
                if first:
                    rows.append(f"| {name} | PyTorch (torch) | torch | {c.pytorch:.4f} | | | | |")
                    first = False
                nearest = "—" if c.detectnet is None else f"{c.detectnet:.4f}"
                near_diff = "" if c.detectnet is None else f"{(c.detectnet - c.pytorch) * 100:+.2f} pt"
                rows.append(f"| {name} | {c.name} ({c.precision}) | {runtime} | {c.exported:.4f} | "
                            f"{c.difference:+.2f} pt | {nearest} | {near_diff} | "
                            f"{c.margin:g} pt: {'passed' if c.passed else 'MISSED'} |")
                log(rows[-1])
    return rows
