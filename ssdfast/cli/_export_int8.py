"""``ssdfast-export``'s INT8 part: its flags, their checks, and the Q/DQ file written per target
(:func:`ssdfast.export.quantize.quantize_onnx`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DataError, SettingsError
from ..export.deps import require
from ..export.quantize import CALIBRATION_COUNT, INT8_TARGETS, MIN_INT8_OPSET
from ._common import add_argument, positive_int

__all__ = ["add_int8_arguments", "check_int8_flags", "int8_targets", "write_int8"]


def add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    """The INT8 argument group: --int8, --int8-target, --calib-dir, --calib-count."""
    int8 = parser.add_argument_group("INT8 (ONNX with Q/DQ nodes: explicit quantization; needs onnxruntime)")
    add_argument(int8, "--int8", action="store_true",
                 help="also write INT8 ONNX files beside the export, calibrated on --calib-dir: "
                      "MODEL-int8-tensorrt.onnx (TensorRT / Jetson) and MODEL-int8-cpu.onnx (ONNX Runtime and "
                      "OpenVINO on CPUs); with --tensorrt, the engine is built from the tensorrt one")
    add_argument(int8, "--int8-target", nargs="+", default=None, choices=INT8_TARGETS, metavar="TARGET",
                 help=f"which INT8 files to write: {' and/or '.join(INT8_TARGETS)} (when not given: both; "
                      "tensorrt alone with --tensorrt)")
    add_argument(int8, "--calib-dir", default=None, metavar="DIR",
                 help="images to calibrate INT8 on (like the ones the model will see; prepared as the model's "
                      "evaluation transform prepares them)")
    add_argument(int8, "--calib-count", type=positive_int, default=CALIBRATION_COUNT,
                 help="calibration images used at most")


def check_int8_flags(args: argparse.Namespace) -> None:
    """Usage errors of the INT8 flags, and onnxruntime present, before anything is written."""
    if args.int8_target and not args.int8:
        raise SettingsError("--int8-target applies to --int8: add --int8 --calib-dir DIR")
    if args.int8 and not args.calib_dir:
        raise SettingsError("--int8 needs --calib-dir DIR (images like the ones the model will see)")
    if args.calib_dir is not None and not Path(args.calib_dir).is_dir():
        raise DataError(f"--calib-dir {args.calib_dir} is not a folder")
    if args.int8 and args.opset < MIN_INT8_OPSET:
        raise SettingsError(f"--int8 needs --opset {MIN_INT8_OPSET} or higher (per-channel weight scales), "
                            f"got {args.opset}")
    if args.int8:
        require("onnxruntime", "--int8 (calibration and quantization)")


def int8_targets(args: argparse.Namespace) -> tuple[str, ...]:
    """--int8-target's targets, else every target (only tensorrt with --tensorrt); with --tensorrt,
    tensorrt always: the engine is built from its file."""
    chosen = set(args.int8_target or (("tensorrt",) if args.tensorrt else INT8_TARGETS))
    if args.tensorrt:
        chosen.add("tensorrt")
    return tuple(t for t in INT8_TARGETS if t in chosen)


def write_int8(args: argparse.Namespace, result: Any, model: Any, images: list[Any]) -> dict[str, Path]:
    """Write the INT8 (Q/DQ) file of each target beside the export, calibrated on ``images``;
    -> {target: path}."""
    from ..export.inputs import calibration_batches
    from ..export.quantize import INT8_RECIPES, int8_path, quantize_onnx

    batches = calibration_batches(images, model.config, result.batch_size or 1)
    written = {}
    for target in int8_targets(args):
        out = quantize_onnx(result.path, int8_path(result.path, target), batches, target=target)
        wide = (f"; {out.float_head_outputs} head outputs left float, their range too wide for int8"
                if out.float_head_outputs else "")
        print(f"wrote {out.path} (INT8 Q/DQ for {INT8_RECIPES[target].runs_on}: {out.quantized_convs} of "
              f"{out.total_convs} convolutions in INT8, calibrated on {out.calibration_images} images{wide})")
        written[target] = out.path
    if "tensorrt" in written and not args.tensorrt:
        from ..export.tensorrt import format_command, trtexec_command

        engine = written["tensorrt"].with_suffix(".engine")
        cmd = trtexec_command(written["tensorrt"], engine, int8=True, batch_size=result.batch_size,
                              max_batch_size=args.max_batch_size, image_size=result.image_size)
        print(f"build its TensorRT engine on the target with:\n  {format_command(cmd)}")
    return written
