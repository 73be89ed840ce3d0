"""INT8 (Q/DQ ONNX) against FP32 on the CPU: the accuracy of a trained model and the speed per network.

    python -m benchmarks.int8_cases                                   # both parts, Markdown on stdout
    python -m benchmarks.int8_cases --part accuracy --work /tmp/int8  # trains (or reuses) the demo models
    python -m benchmarks.int8_cases --part speed --networks mb1-ssd vgg16-ssd --batches 1 32

Accuracy: a model trained on a generated VOC-format set (the demo's data and settings,
:mod:`ssdfast.demo`; trained once into ``--work`` and reused), exported (``jetson`` format, dynamic
batch), quantized by each candidate on the training split's images (prepared as the evaluation
transform prepares them, then mapped to the graph's [-1, 1] input), run in ONNX Runtime and OpenVINO
on the held-out split, post-processed by ssdfast (:func:`ssdfast.detector.postprocess`) and scored with
:func:`ssdfast.evaluation.evaluate_voc` (VOC mAP@0.5, 11-point): FP32 PyTorch, FP32 ONNX and each INT8 file.

Speed: each network untrained (speed does not depend on the weights) at its default size, 81 classes
as in the ``infer`` section, exported and quantized on generated images; the network alone (one
``run`` of the graph, no post-processing: the same for FP32 and INT8), images/s at each batch size,
``--threads`` threads (idle threads sleep), contenders interleaved in one process so their ratios
survive a busy machine. OpenVINO runs float layers in f32 (``openvino``) and, in the ``openvino bf16``
rows, in bf16: its CPU default on AMX / AVX512-BF16 machines, where "FP32" files run in bf16.

Candidates (``--candidates``; the ones whose package is missing are left out with a note):

- ``ssdfast-tensorrt`` / ``ssdfast-cpu``: what ``ssdfast-export --int8`` writes for each target
  (:func:`ssdfast.export.quantize.quantize_onnx`: ONNX Runtime's ``quantize_static``, min/max).
- ``ssdfast-tensorrt-entropy`` / ``ssdfast-tensorrt-percentile``: TensorRT's form with ONNX Runtime's
  histogram calibrations instead of min/max.
- ``modelopt-max`` / ``modelopt-entropy``: NVIDIA Model Optimizer's ONNX PTQ (``nvidia-modelopt``), int8,
  float32 kept for the rest of the graph.
- ``nncf-mixed`` / ``nncf-performance``: NNCF's post-training quantization of the ONNX model (presets).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # `python benchmarks/int8_cases.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import numpy as np

from ssdfast.export.quantize import CALIBRATION_COUNT

__all__ = ["CANDIDATES", "NETWORKS", "accuracy_rows", "speed_rows", "main"]

NETWORKS = ("mb1-ssd", "mb2-ssd-lite", "mb3-large-ssd-lite", "vgg16-ssd")
#: Networks trained for the accuracy part: (network, width multiplier), on the demo's data and settings.
TRAINED = (("mb2-ssd-lite", 0.5), ("mb1-ssd", 1.0))
NUM_CLASSES = 81  # as the infer section
SPEED_CALIBRATION_IMAGES = 8


# ----------------------------------------------------------------------------- candidates


def _ssdfast(target: str, method: str = "minmax") -> Callable[[Path, Path, list[np.ndarray]], None]:
    def run(source: Path, output: Path, batches: list[np.ndarray]) -> None:
        from ssdfast.export.quantize import quantize_onnx

        quantize_onnx(source, output, batches, target=target, method=method)

    return run


def _modelopt(method: str) -> Callable[[Path, Path, list[np.ndarray]], None]:
    def run(source: Path, output: Path, batches: list[np.ndarray]) -> None:
        from modelopt.onnx.quantization import quantize

        with contextlib.redirect_stdout(io.StringIO()):
            quantize(str(source), quantize_mode="int8", calibration_data={"input_0": np.concatenate(batches)},
                     calibration_method=method, calibration_eps=["cpu"], high_precision_dtype="fp32",
                     output_path=str(output), log_level="ERROR")

    return run


def _nncf(preset: str) -> Callable[[Path, Path, list[np.ndarray]], None]:
    def run(source: Path, output: Path, batches: list[np.ndarray]) -> None:
        import nncf
        import onnx

        quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(batches, lambda b: {"input_0": b}),
                                  preset=getattr(nncf.QuantizationPreset, preset.upper()), subset_size=len(batches))
        onnx.save(quantized, str(output))

    return run


#: name -> (the package it needs, quantize(fp32 source, output, calibration batches))
CANDIDATES: dict[str, tuple[str, Callable[[Path, Path, list[np.ndarray]], None]]] = {
    "ssdfast-tensorrt": ("onnxruntime", _ssdfast("tensorrt")),
    "ssdfast-cpu": ("onnxruntime", _ssdfast("cpu")),
    "ssdfast-tensorrt-entropy": ("onnxruntime", _ssdfast("tensorrt", "entropy")),
    "ssdfast-tensorrt-percentile": ("onnxruntime", _ssdfast("tensorrt", "percentile")),
    "modelopt-max": ("modelopt", _modelopt("max")),
    "modelopt-entropy": ("modelopt", _modelopt("entropy")),
    "nncf-mixed": ("nncf", _nncf("mixed")),
    "nncf-performance": ("nncf", _nncf("performance")),
}
DEFAULT_ACCURACY = tuple(CANDIDATES)
DEFAULT_SPEED = ("ssdfast-tensorrt", "ssdfast-cpu", "nncf-mixed")


def _quantize(name: str, source: Path, output: Path, batches: list[np.ndarray]) -> None:
    CANDIDATES[name][1](Path(source), Path(output), batches)


def quantize_isolated(name: str, source: Path, output: Path, batches: list[np.ndarray]) -> None:
    """Candidate ``name`` quantizes ``source`` in a process of its own: Model Optimizer patches
    onnxruntime's quantizer classes in the process it runs in, which would change the next candidates."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_quantize, (name, source, output, batches))


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def available(names: Sequence[str]) -> list[str]:
    """The candidates among ``names`` whose package is installed (a note on stderr for the others)."""
    out = []
    for name in names:
        package = CANDIDATES[name][0]
        if _installed(package):
            out.append(name)
        else:
            _log(f"note: {name} left out ({package} is not installed)")
    return out


# ----------------------------------------------------------------------------- runtimes


def ort_runner(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(x) -> [scores, boxes]`` in ONNX Runtime's CPU provider, ``threads`` threads, no spinning."""
    from ssdfast.export.runtime import onnxruntime_session

    session = onnxruntime_session(path, threads=threads)
    return lambda x: session.run(None, {"input_0": x})


def openvino_runner(path: Path, threads: int, precision: str = "f32") -> Callable[[np.ndarray], list[np.ndarray]]:
    """``run(x) -> [scores, boxes]`` in OpenVINO's CPU plugin (latency hint, one stream, ``threads``
    threads); ``precision`` is its inference precision hint for float layers (``f32`` or ``bf16``)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision,
    })
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.asarray(result[out]) for out in compiled.outputs]

    return run


RUNTIMES: dict[str, Callable[..., Callable[[np.ndarray], list[np.ndarray]]]] = {
    "onnxruntime": ort_runner,
    "openvino": openvino_runner,
}


# ----------------------------------------------------------------------------- accuracy


def trained_checkpoint(work: Path, net: str, width_mult: float) -> Path:
    """The demo's training of ``net`` (its data and settings) into ``work``, reused when there."""
    from ssdfast.demo import DemoSettings, run_demo

    folder = work / f"demo-{net}"
    checkpoint = folder / "checkpoints" / "last.pth"
    if not checkpoint.is_file():
        run_demo(folder, settings=DemoSettings(net=net, width_mult=width_mult))
    return checkpoint


def _images(paths: Sequence[str], config: Any, batch: int) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    """Image files -> ``[(graph input [b, 3, S, S], sizes)]`` in batches of ``batch``."""
    from ssdfast.export.inputs import load_images, prepare_inputs

    out = []
    for start in range(0, len(paths), batch):
        images = [im.pixels for im in load_images(paths[start:start + batch])]
        _, x, sizes = prepare_inputs(images, config)
        out.append((x.numpy(), sizes))
    return out


def onnx_map(run: Callable[[np.ndarray], list[np.ndarray]], batches: list[tuple[np.ndarray, list]], model: Any,
             annotations: list[dict], class_names: Sequence[str]) -> float:
    """VOC mAP@0.5 of a ``jetson``-format graph: its softmax scores and decoded boxes handed to ssdfast's
    post-processing as logits (their log) and offsets (re-encoded), as the Detector would post-process."""
    import torch

    from ssdfast import ops
    from ssdfast.detector import postprocess
    from ssdfast.evaluation import evaluate_voc
    from ssdfast.ops import EVALUATION

    priors, variances = model.priors.detach().float().cpu(), tuple(model.config.variances)
    detections = []
    for x, sizes in batches:
        scores, boxes = (torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in run(x))
        loc = ops.encode_boxes(boxes, priors, variances)
        detections += postprocess(scores.clamp_min(1e-30).log(), loc, priors, sizes, variances, EVALUATION)
    return float(evaluate_voc(detections, annotations, class_names)["mAP"])


def accuracy_rows(work: Path, candidates: Sequence[str], threads: int = 2,
                  calibration_images: int = CALIBRATION_COUNT, nets: Sequence[str] | None = None) -> list[str]:
    """The accuracy table (Markdown lines) for the trained models of :data:`TRAINED` (those of ``nets``)."""
    from ssdfast.data import build_dataset
    from ssdfast.evaluation import evaluate
    from ssdfast.export import export_onnx
    from ssdfast.model_files import model_from_checkpoint

    runtimes = [r for r in RUNTIMES if _installed(r)]
    rows = [f"| model | file | {' | '.join(f'{r} mAP' for r in runtimes)} | "
            f"{' | '.join(f'{r} vs FP32' for r in runtimes)} |",
            "|---|---|" + "---:|" * (2 * len(runtimes))]
    for net, width in TRAINED:
        if nets is not None and net not in nets:
            continue
        checkpoint = trained_checkpoint(work, net, width)
        data = checkpoint.parent.parent / "data"
        model, _ = model_from_checkpoint(checkpoint, device="cpu")
        model.eval()
        config = model.config
        test = build_dataset("voc", [str(data)], split="test")
        train = build_dataset("voc", [str(data)], split="train")
        annotations = [test.get_annotation(i) for i in range(len(test))]
        class_names = list(test.class_names)
        torch_map = float(evaluate(model, test, batch_size=16, device="cpu", metric="voc", progress=False)["mAP"])
        name = f"{net} x{width} {config.image_size}px" if width != 1.0 else f"{net} {config.image_size}px"
        rows.append(f"| {name} | PyTorch FP32 | {torch_map:.4f} |" + " |" * (2 * len(runtimes) - 1))
        folder = work / f"int8-{net}"
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = export_onnx(model, folder / "fp32.onnx", batch_size="dynamic").path
        test_batches = _images([str(test.image_path(i)) for i in range(len(test))], config, 16)
        calib_paths = [str(train.image_path(i)) for i in range(min(calibration_images, len(train)))]
        calib = [x for x, _ in _images(calib_paths, config, 8)]
        files = {"FP32": fp32}
        seconds = {}
        for candidate in candidates:
            path = folder / f"{candidate}.onnx"
            start = time.perf_counter()
            try:
                quantize_isolated(candidate, fp32, path, calib)
            except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported, the others go on
                _log(f"{net} {candidate}: failed: {type(exc).__name__}: {exc}")
                continue
            seconds[candidate] = time.perf_counter() - start
            files[candidate] = path
        base: dict[str, float] = {}
        for label, path in files.items():
            maps = {}
            for runtime in runtimes:
                try:
                    maps[runtime] = onnx_map(RUNTIMES[runtime](path, threads), test_batches, model, annotations,
                                             class_names)
                except Exception as exc:  # noqa: BLE001
                    _log(f"{net} {label} in {runtime}: failed: {type(exc).__name__}: {exc}")
            if label == "FP32":
                base = maps
            took = f" ({seconds[label]:.0f} s)" if label in seconds else ""
            cells = [f"{maps[r]:.4f}" if r in maps else "—" for r in runtimes]
            deltas = [f"{100 * (maps[r] - base[r]):+.2f} pt" if r in maps and r in base and label != "FP32" else ""
                      for r in runtimes]
            rows.append(f"| {name} | {label}{took} | {' | '.join(cells)} | {' | '.join(deltas)} |")
            _log(rows[-1])
    return rows


# ----------------------------------------------------------------------------- speed


def speed_rows(networks: Sequence[str], candidates: Sequence[str], batches: Sequence[int] = (1, 32),
               threads: int = 2, rounds: int = 3) -> list[str]:
    """The speed table (Markdown lines): images/s of FP32 and each INT8 file, per runtime and batch."""
    import torch

    from ssdfast.export import export_onnx
    from ssdfast.export.inputs import prepare_inputs, sample_images
    from ssdfast.models import create_model

    from .timing import time_contenders

    runtimes = [r for r in RUNTIMES if _installed(r)]
    header = " | ".join(f"b{b} img/s | b{b} vs FP32" for b in batches)
    rows = [f"| network | runtime | file | {header} |", "|---|---|---|" + "---:|" * (2 * len(batches))]
    with tempfile.TemporaryDirectory(prefix="ssdfast-int8-speed-") as work:
        for net in networks:
            torch.manual_seed(0)
            model = create_model(net, NUM_CLASSES).eval()
            size = model.config.image_size
            fp32 = export_onnx(model, Path(work) / f"{net}.onnx", batch_size="dynamic").path
            images = sample_images(SPEED_CALIBRATION_IMAGES, (size, size))
            calib = [prepare_inputs(images[i:i + 1], model.config)[1].numpy() for i in range(len(images))]
            files = {"FP32": fp32}
            for candidate in candidates:
                path = Path(work) / f"{net}-{candidate}.onnx"
                try:
                    quantize_isolated(candidate, fp32, path, calib)
                except Exception as exc:  # noqa: BLE001
                    _log(f"{net} {candidate}: failed: {type(exc).__name__}: {exc}")
                    continue
                files[candidate] = path
            inputs = {b: np.clip(np.random.default_rng(b).normal(0, 0.5, (b, 3, size, size)), -1, 1).astype(np.float32)
                      for b in batches}
            variants = [(r, "f32") for r in runtimes] + ([("openvino", "bf16")] if "openvino" in runtimes else [])
            for runtime, precision in variants:
                label = runtime if precision == "f32" else f"{runtime} {precision}"
                runners = {}
                for name, path in files.items():
                    try:
                        runners[name] = (RUNTIMES[runtime](path, threads, precision) if runtime == "openvino"
                                         else RUNTIMES[runtime](path, threads))
                    except Exception as exc:  # noqa: BLE001
                        _log(f"{net} {name} in {label}: failed: {type(exc).__name__}: {exc}")
                per_batch = {}
                for b in batches:
                    contenders = {name: (lambda run=run, x=inputs[b]: run(x)) for name, run in runners.items()}
                    per_batch[b] = time_contenders(contenders, rounds=rounds, warmup=1, min_time=0.5)
                for name in runners:
                    cells = []
                    for b in batches:
                        t, base = per_batch[b][name], per_batch[b].get("FP32")
                        cells.append(f"{b / t:.1f} | {base / t:.2f}x" if base else f"{b / t:.1f} | —")
                    rows.append(f"| {net} ({size}) | {label} | {name} | {' | '.join(cells)} |")
                    _log(rows[-1])
    return rows


# ----------------------------------------------------------------------------- main


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from ssdfast.threads import quiet_openmp

    quiet_openmp()
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_cases", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("accuracy", "speed", "both"), default="both")
    p.add_argument("--work", type=Path, default=Path("int8-work"),
                   help="folder of the trained models, their data and the quantized files (reused)")
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    p.add_argument("--candidates", nargs="+", default=None, choices=list(CANDIDATES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calib-count", type=int, default=CALIBRATION_COUNT)
    p.add_argument("--trained", nargs="+", default=[n for n, _ in TRAINED], choices=[n for n, _ in TRAINED],
                   help="the trained networks of the accuracy part")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.part in ("accuracy", "both"):
        names = available(args.candidates or DEFAULT_ACCURACY)
        print(f"### INT8 accuracy (VOC mAP@0.5 on the held-out split, {args.calib_count} calibration images)\n")
        print("\n".join(accuracy_rows(args.work, names, args.threads, args.calib_count, args.trained)) + "\n",
              flush=True)
    if args.part in ("speed", "both"):
        names = available(args.candidates or DEFAULT_SPEED)
        print(f"### INT8 speed (network only, {args.threads} threads, images/s)\n")
        print("\n".join(speed_rows(args.networks, names, args.batches, args.threads, args.rounds)) + "\n", flush=True)
    _log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
