"""``ssdfast-export``: a checkpoint to ONNX for jetson-inference, ONNX Runtime or TensorRT.

The network, image size, normalization and class names come from the ssdfast checkpoint, so any
network of ``ssdfast.models.list_models()`` exports at the size it was trained at. ``labels.txt``
(BACKGROUND first, one line per class) is written beside the model. jetson-inference's
``onnx_export.py`` flags (``--input``, ``--model-dir``, ``--net``, ``--width/--height``,
``--batch-size``, ``--labels``) work in either spelling.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import UsageError, add_argument, make_parser, positive_int, run_main

__all__ = ["main", "build_parser"]

_FORMATS = ("jetson", "onnx-nms", "trt-nms")

_EPILOG = """\
formats (all take input_0 float32 [B,3,H,W], RGB scaled to [-1, 1]; the model's mean/std are in the graph):
  jetson    outputs scores [1,P,C] (softmax, class 0 = background) and boxes [1,P,4] (normalized x1,y1,x2,y2),
            no NMS: what jetson-inference's detectnet reads
  onnx-nms  decode + NonMaxSuppression in standard ONNX ops (ONNX Runtime, TensorRT >= 8.5); outputs
            num_detections int32 [B,1], detection_boxes [B,K,4], detection_scores [B,K], detection_classes int32 [B,K]
  trt-nms   the same outputs from TensorRT's EfficientNMS_TRT plugin (TensorRT >= 8.0)

examples:
  ssdfast-export models/fruit/best.pth --output models/fruit/ssd-mobilenet.onnx --check
  detectnet --model=models/fruit/ssd-mobilenet.onnx --labels=models/fruit/labels.txt \\
      --input-blob=input_0 --output-cvg=scores --output-bbox=boxes csi://0
  ssdfast-export models/fruit/best.pth --format onnx-nms --batch-size dynamic --output fruit-nms.onnx --check
  ssdfast-export models/fruit/best.pth --format trt-nms --output fruit-trt.onnx --tensorrt fruit.engine --fp16
  ssdfast-export models/fruit/best.pth --verify-engine fruit.engine   # is the engine built from this checkpoint?
"""


def _batch_size(value: str) -> int | None:
    if value.strip().lower() == "dynamic":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive integer or 'dynamic', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"should be a positive integer or 'dynamic', got {value!r}")
    return number




def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"should be in [0, 1], got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-export`` argument parser."""
    p = make_parser("ssdfast-export", "Export a trained SSD to ONNX (jetson-inference, ONNX Runtime, TensorRT).", _EPILOG)
    p.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT",
                   help="the ssdfast checkpoint to export (or --input / --model-dir)")
    add_argument(p, "--input", default=None, metavar="FILE",
                 help="the checkpoint, as jetson-inference's onnx_export.py takes it (same as CHECKPOINT)")
    add_argument(p, "--model-dir", default=None, metavar="DIR",
                 help="a training folder: exports its best.pth (else last.pth, else its newest .pth)")
    add_argument(p, "--output", "-o", default=None, metavar="FILE",
                 help="the .onnx file to write (default: beside the checkpoint, best.pth -> best.onnx, "
                      "best-onnx-nms.onnx, best-trt-nms.onnx)")
    add_argument(p, "--format", default="jetson", choices=_FORMATS,
                 help="graph outputs: jetson (scores + boxes for detectnet), onnx-nms (standard NMS in the graph), "
                      "trt-nms (TensorRT EfficientNMS_TRT plugin)")
    add_argument(p, "--opset", type=int, default=13,
                 help="ONNX opset (>= 11); 13 is the highest TensorRT 8.2 (Jetson Nano's last JetPack) parses")
    add_argument(p, "--batch-size", type=_batch_size, default=1, metavar="N|dynamic",
                 help="fixed batch size of the graph, or 'dynamic' for a variable batch axis")
    add_argument(p, "--labels", default=None, metavar="FILE",
                 help="where to write the class names, one a line, BACKGROUND first (default: labels.txt beside --output)")
    add_argument(p, "--net", default=None,
                 help="network name; read from the checkpoint (an error when given and different)")
    add_argument(p, "--width", type=positive_int, default=None,
                 help="input width; read from the checkpoint (an error when given and different)")
    add_argument(p, "--height", type=positive_int, default=None,
                 help="input height; read from the checkpoint (an error when given and different)")

    nms = p.add_argument_group("post-processing (onnx-nms, trt-nms)")
    add_argument(nms, "--score-threshold", type=_fraction, default=0.3,
                 help="a detection needs a class probability above this (the Detector's default; 0.01 for mAP)")
    add_argument(nms, "--iou-threshold", "--nms-threshold", type=_fraction, default=0.45,
                 help="NMS IoU threshold within a class")
    add_argument(nms, "--top-k", type=positive_int, default=200,
                 help="candidates per class before NMS (onnx-nms; EfficientNMS has no per-class cut)")
    add_argument(nms, "--max-detections", type=positive_int, default=200,
                 help="detections per image after NMS (K, the size of the detection outputs)")

    chk = p.add_argument_group("checking")
    add_argument(chk, "--check", action="store_true",
                 help="run the export in onnxruntime on preprocessed images and compare with PyTorch "
                      "(raw outputs within --tolerance; onnx-nms: the Detector's detections); exit 1 on a mismatch")
    add_argument(chk, "--check-images", nargs="+", default=None, metavar="PATH",
                 help="images (files or folders) for --check; default: generated test images")
    add_argument(chk, "--check-count", type=positive_int, default=4,
                 help="how many images --check uses at most")
    add_argument(chk, "--tolerance", type=float, default=1e-4,
                 help="largest absolute difference --check accepts")

    trt = p.add_argument_group("TensorRT")
    add_argument(trt, "--tensorrt", default=None, metavar="ENGINE",
                 help="build a TensorRT engine from the export (needs the tensorrt package; otherwise the "
                      "equivalent trtexec command is printed); ENGINE.json records the checkpoint's sha256")
    add_argument(trt, "--fp16", action="store_true", help="allow FP16 kernels in the engine")
    add_argument(trt, "--int8", action="store_true", help="INT8 engine, calibrated on --calib-dir")
    add_argument(trt, "--calib-dir", default=None, metavar="DIR", help="images to calibrate INT8 on")
    add_argument(trt, "--calib-count", type=positive_int, default=256, help="calibration images used at most")
    add_argument(trt, "--max-batch-size", type=positive_int, default=8,
                 help="largest batch of a dynamic-batch engine")
    add_argument(trt, "--workspace", type=positive_int, default=None, metavar="MB",
                 help="TensorRT builder workspace (default: 1024 when building here, trtexec's own default "
                      "otherwise; trtexec >= 8.4 takes it as --memPoolSize)")
    add_argument(trt, "--verify-engine", default=None, metavar="ENGINE",
                 help="only check that ENGINE (with its ENGINE.json) was built from this checkpoint; exit 1 if stale")
    return p


def _resolve_checkpoint(args: argparse.Namespace) -> Path:
    given = [v for v in (args.checkpoint, args.input) if v]
    if len(given) == 2 and Path(given[0]) != Path(given[1]):
        raise UsageError("give the checkpoint once: CHECKPOINT or --input, not both")
    if given and args.model_dir:
        raise UsageError("give either a checkpoint (CHECKPOINT / --input) or --model-dir, not both")
    if given:
        path = Path(given[0])
        if not path.is_file():
            raise UsageError(f"checkpoint {path} does not exist")
        return path
    if args.model_dir:
        folder = Path(args.model_dir)
        if not folder.is_dir():
            raise UsageError(f"--model-dir {folder} is not a folder")
        for name in ("best.pth", "last.pth"):
            if (folder / name).is_file():
                return folder / name
        candidates = sorted(folder.glob("*.pth"), key=lambda f: f.stat().st_mtime)
        if candidates:
            return candidates[-1]
        raise UsageError(f"--model-dir {folder} has no best.pth, last.pth or other .pth checkpoint")
    raise UsageError("which checkpoint? give CHECKPOINT (or --input FILE, or --model-dir DIR)")


def _load_model(path: Path) -> tuple[Any, list[str]]:
    from ssdfast.checkpoint import CheckpointError, model_from_checkpoint

    try:
        return model_from_checkpoint(path, device="cpu")
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None


def _check_consistency(args: argparse.Namespace, model: Any) -> None:
    config = model.config
    if args.net is not None and args.net.strip().lower().replace("_", "-") != config.name:
        raise UsageError(f"--net {args.net} but the checkpoint holds a {config.name}")
    from ssdfast.export.onnx import model_image_size

    h, w = model_image_size(config)
    for flag, given, actual in (("--width", args.width, w), ("--height", args.height, h)):
        if given is not None and given != actual:
            raise UsageError(f"{flag} {given} but the checkpoint's network takes {w}x{h} images "
                             "(the export uses the size the model was trained at)")


def _print_usage_hint(result: Any, labels: Path | None) -> None:
    h, w = result.image_size
    batch = "dynamic" if result.batch_size is None else result.batch_size
    print(f"wrote {result.path} ({result.format}, opset {result.opset}, input {result.input_name} "
          f"[{batch},3,{h},{w}] RGB in [-1, 1], {result.num_priors} priors, {result.num_classes} classes)")
    if labels is not None:
        print(f"wrote {labels} ({result.num_classes} lines, BACKGROUND first)")
    if result.format == "jetson":
        print("run it on a Jetson with:\n  detectnet --model=" + str(result.path) + f" --labels={labels} "
              "--input-blob=input_0 --output-cvg=scores --output-bbox=boxes <input> <output>")


def _calibration_batches(args: argparse.Namespace, model: Any, batch: int) -> list[Any]:
    from ssdfast.export.check import load_images, prepare_inputs

    if not args.calib_dir:
        raise UsageError("--int8 needs --calib-dir DIR (images like the ones the model will see)")
    try:
        images = load_images([args.calib_dir], limit=args.calib_count)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--calib-dir: {exc}") from None
    if not images:
        raise UsageError(f"--calib-dir {args.calib_dir} has no images")
    batches = []
    for start in range(0, len(images) - batch + 1, batch):
        _, x, _ = prepare_inputs(images[start:start + batch], model.config)
        batches.append(x.numpy())
    if not batches:
        raise UsageError(f"--calib-dir has {len(images)} images, fewer than one batch of {batch}")
    return batches


def _tensorrt(args: argparse.Namespace, result: Any, model: Any, checkpoint_sha: str) -> int:
    """Build the engine (tensorrt present) or print the trtexec command; write the sidecar. Exit status."""
    from ssdfast.export.tensorrt import (
        EngineInfo,
        build_engine,
        file_sha256,
        format_command,
        tensorrt_available,
        trtexec_command,
        write_sidecar,
    )

    engine = Path(args.tensorrt)
    if tensorrt_available():
        batch = result.batch_size or args.max_batch_size
        calib = _calibration_batches(args, model, batch) if args.int8 else None
        try:
            info = build_engine(
                result.path, engine, checkpoint_sha256=checkpoint_sha, format=result.format, fp16=args.fp16,
                int8=args.int8, calibration_batches=calib, batch_size=result.batch_size,
                max_batch_size=args.max_batch_size, image_size=result.image_size,
                workspace_mb=args.workspace or 1024,
            )
        except (RuntimeError, ValueError) as exc:
            print(f"error: TensorRT engine build failed: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {engine} (TensorRT {info.tensorrt_version}, {info.precision}) and {engine.name}.json")
        return 0
    calib_cache = engine.with_name(engine.name + ".calib") if args.int8 else None
    cmd = trtexec_command(result.path, engine, fp16=args.fp16, int8=args.int8,
                          calib_cache=calib_cache if calib_cache is not None and calib_cache.is_file() else None,
                          batch_size=result.batch_size, max_batch_size=args.max_batch_size,
                          image_size=result.image_size, workspace_mb=args.workspace)
    precision = "int8" if args.int8 else ("fp16" if args.fp16 else "fp32")
    sidecar = write_sidecar(engine, EngineInfo(
        engine=engine.name, checkpoint_sha256=checkpoint_sha, onnx_sha256=file_sha256(result.path),
        export_format=result.format, precision=precision, batch_size=result.batch_size,
        image_size=result.image_size, built_by="trtexec",
    ))
    print("the tensorrt Python package is not installed here; build the engine on the target with:")
    print("  " + format_command(cmd))
    if calib_cache is not None and not calib_cache.is_file():
        print("  (trtexec cannot calibrate from images: without a calibration cache the INT8 scales are "
              "placeholders, good for timing only; build with the tensorrt package and --calib-dir for accuracy)")
    print(f"wrote {sidecar} (the checkpoint's sha256, so a stale engine is detected: "
          f"ssdfast-export CHECKPOINT --verify-engine {engine})")
    return 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = _resolve_checkpoint(args)

    from ssdfast.export.tensorrt import StaleEngineError, check_engine, file_sha256

    checkpoint_sha = file_sha256(checkpoint)
    if args.verify_engine:
        try:
            info = check_engine(args.verify_engine, checkpoint_sha256=checkpoint_sha)
        except StaleEngineError as exc:
            print(f"stale: {exc}", file=sys.stderr)
            return 1
        print(f"{args.verify_engine} is up to date: built from {checkpoint} ({info.export_format}, {info.precision})")
        return 0

    if not (11 <= args.opset <= 20):
        raise UsageError(f"--opset should be between 11 and 20, got {args.opset}")
    if args.int8 and args.tensorrt is None:
        raise UsageError("--int8 applies to the TensorRT engine: add --tensorrt ENGINE")
    if args.fp16 and args.tensorrt is None:
        raise UsageError("--fp16 applies to the TensorRT engine: add --tensorrt ENGINE")
    if args.calib_dir is not None and not Path(args.calib_dir).is_dir():
        raise UsageError(f"--calib-dir {args.calib_dir} is not a folder")
    if not args.tolerance > 0:
        raise UsageError(f"--tolerance should be positive, got {args.tolerance}")

    model, class_names = _load_model(checkpoint)
    _check_consistency(args, model)
    if args.output:
        output = Path(args.output)
    elif args.format == "jetson":
        output = checkpoint.with_suffix(".onnx")
    else:
        output = checkpoint.with_name(f"{checkpoint.stem}-{args.format}.onnx")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"--output should be a .onnx file, got {output}")
    if output.exists() and output.is_dir():
        raise UsageError(f"--output {output} is a folder")
    labels = Path(args.labels) if args.labels else output.parent / "labels.txt"

    check_images = None
    if args.check_images:
        from ssdfast.export.check import load_images

        try:
            check_images = load_images(args.check_images, limit=args.check_count)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--check-images: {exc}") from None
        if not check_images:
            raise UsageError(f"--check-images {' '.join(args.check_images)}: no images found")

    from ssdfast.export import PostprocessSettings, check_export, export_onnx

    settings = PostprocessSettings(args.score_threshold, args.iou_threshold, args.top_k, args.max_detections)
    try:
        result = export_onnx(
            model, output, format=args.format, opset=args.opset, batch_size=args.batch_size, settings=settings,
            class_names=class_names, labels_path=labels,
            metadata={"ssdfast.checkpoint_sha256": checkpoint_sha, "ssdfast.checkpoint": checkpoint.name},
        )
    except ValueError as exc:  # e.g. class names not starting with BACKGROUND
        raise UsageError(str(exc)) from None
    _print_usage_hint(result, result.labels_path)

    status = 0
    if args.check:
        from ssdfast.export.check import sample_images

        images = check_images or sample_images(args.check_count, size=result.image_size)
        report = check_export(result.path, model, format=args.format, images=images, settings=settings,
                              atol=args.tolerance)
        print(report.summary(), file=sys.stdout if report.passed else sys.stderr)
        if not report.passed:
            if args.tensorrt:
                print("no TensorRT engine built: the export failed its check", file=sys.stderr)
            return 1
    if args.tensorrt:
        status = _tensorrt(args, result, model, checkpoint_sha)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-export``: 0 on success, 1 when --check fails, 2 on a usage error."""
    return run_main(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
