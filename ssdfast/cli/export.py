"""``ssdfast-export``: a model to ONNX for jetson-inference, ONNX Runtime or TensorRT.

Takes an ssdfast checkpoint or a pytorch-ssd ``.pth`` (with its ``--net`` and labels), or a training
folder (``--model-dir``, picking the latest run's model: :func:`ssdfast.model_files.pick_model_file`).
pytorch-ssd's ``onnx_export.py`` flags work with their meaning (``--net``, ``--input``,
``--output``, ``--labels``, ``--width``, ``--height``, ``--batch-size``, ``--model-dir``), in either
spelling, so jetson-inference's ``onnx_export.py --model-dir=models/fruit`` becomes
``ssdfast-export --model-dir=models/fruit`` and leaves ``models/fruit/ssd-mobilenet.onnx`` and
``models/fruit/labels.txt`` (BACKGROUND first) for ``detectnet``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import DataError, ModelFileError, SettingsError
from ..export.deps import require
from ..export.formats import DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET, model_image_size
from ..ops.settings import DISPLAY
from ..runtimes.names import MAP_MARGINS
from ._common import (
    add_argument,
    add_model_file_arguments,
    add_postprocess_arguments,
    load_model_arg,
    make_parser,
    positive_int,
    postprocess_settings,
    run_main,
)
from ._export_int8 import add_int8_arguments, check_int8_flags, write_int8
from ._export_map import check_data_flags, check_map

__all__ = ["main", "build_parser"]

#: pytorch-ssd's onnx_export.py: its default --net, which also names the file it writes (<NET>.onnx),
#: and the network that name means.
ONNX_EXPORT_DEFAULT_NET = "ssd-mobilenet"
ONNX_EXPORT_NET_ALIASES = {"ssd-mobilenet": "mb1-ssd"}
DETECTNET_FLAGS = "--input-blob=input_0 --output-cvg=scores --output-bbox=boxes"

_EPILOG = f"""\
formats (all take input_0 float32 [B,3,H,W], RGB scaled to [-1, 1] as detectnet feeds it; the model's
own mean/std are folded into the graph):
  jetson    outputs scores [1,P,C] (softmax, class 0 = background) and boxes [1,P,4] (normalized x1,y1,x2,y2),
            no NMS: what jetson-inference's detectnet reads
  onnx-nms  decode + NonMaxSuppression in standard ONNX ops (ONNX Runtime, TensorRT >= 8.5); outputs
            num_detections int32 [B,1], detection_boxes [B,K,4], detection_scores [B,K], detection_classes int32 [B,K]
  trt-nms   the same outputs from TensorRT's EfficientNMS_TRT plugin (TensorRT >= 8.0)

post-processing (onnx-nms, trt-nms): the defaults are ssdfast-detect's, for showing detections;
pass --score-threshold 0.01 for an export meant for mAP evaluation. --max-detections is K, the size of
the detection outputs; trt-nms's EfficientNMS has no per-class --top-k cut.

--model-dir DIR picks the latest run's model: ssdfast-train's best.pth when it is of the run last.pth
ends (same run id), else last.pth; pytorch-ssd's NET-Epoch-N-Loss-L.pth with the lowest loss, as its
onnx_export.py does. It writes DIR/ssd-mobilenet.onnx (DIR/<NET>.onnx when --net is given, as
onnx_export.py) and DIR/labels.txt. A pytorch-ssd .pth needs its network: --net (ssd-mobilenet, onnx_export.py's
default, means mb1-ssd; without --net, the network is read from the file, else taken as mb1-ssd) and
--mb2-width-mult / --resolution when it was trained with them; its class names come from --labels, else
labels.txt beside it.

INT8 (--int8 --calib-dir DIR): ONNX files with Q/DQ nodes (explicit quantization, calibrated on DIR's images
prepared as for evaluation), beside the export and with its input and outputs; one per target:
  MODEL-int8-tensorrt.onnx  symmetric int8, per-channel weights: TensorRT builds its INT8 engine from it
                            (trtexec --onnx=FILE --int8, or --tensorrt ENGINE here), no calibration cache
  MODEL-int8-cpu.onnx       unsigned int8 activations: what ONNX Runtime and OpenVINO run fast on CPUs

examples:
  ssdfast-export --model-dir=models/fruit                     # jetson-inference's onnx_export.py command
  detectnet --model=models/fruit/ssd-mobilenet.onnx --labels=models/fruit/labels.txt \\
      {DETECTNET_FLAGS} csi://0
  ssdfast-export --input mb2-ssd-lite-Epoch-99-Loss-2.1.pth --net mb2-ssd-lite --labels labels.txt --check
  ssdfast-export models/fruit/best.pth --format onnx-nms --batch-size dynamic --output fruit-nms.onnx --check
  ssdfast-export models/fruit/best.pth --format trt-nms --output fruit-trt.onnx --tensorrt fruit.engine --fp16
  ssdfast-export models/fruit/best.pth --verify-engine fruit.engine   # is the engine built from this checkpoint?
  ssdfast-export models/fruit/best.pth --int8 --calib-dir data/fruit/JPEGImages   # + the two INT8 files
  ssdfast-export --model-dir=models/fruit --check --data data/fruit  # PyTorch mAP vs the export's, side by side

--check and --int8 need onnxruntime (pip install 'ssdfast[export]', or onnxruntime-gpu); --tensorrt builds with
the tensorrt package where it is installed (JetPack), else prints the trtexec command.
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


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-export`` argument parser."""
    p = make_parser("ssdfast-export", "Export a trained SSD to ONNX (jetson-inference, ONNX Runtime, TensorRT).",
                    _EPILOG)
    p.add_argument("checkpoint", nargs="?", default=None, metavar="MODEL",
                   help="the model file: an ssdfast checkpoint or a pytorch-ssd .pth (or --input / --model-dir)")
    add_argument(p, "--input", default=None, metavar="FILE",
                 help="the model file, as pytorch-ssd's onnx_export.py takes it (same as MODEL; with --model-dir, "
                      "a name inside DIR)")
    add_argument(p, "--model-dir", default=None, metavar="DIR", type=lambda v: Path(v).expanduser() if v else None,
                 help="a training folder: exports its latest run's model (see below) to DIR/ssd-mobilenet.onnx, "
                      "with DIR/labels.txt")
    add_argument(p, "--output", "-o", default=None, metavar="FILE",
                 help="the .onnx file to write (a bare name goes into --model-dir; default: DIR/ssd-mobilenet.onnx "
                      "with --model-dir, else beside the model: best.pth -> best.onnx, best-onnx-nms.onnx, "
                      "best-trt-nms.onnx)")
    add_argument(p, "--output-labels", default=None, metavar="FILE",
                 help="where to write the class names, one a line, BACKGROUND first "
                      "(default: labels.txt beside --output)")
    add_argument(p, "--format", default=FORMATS[0], choices=FORMATS,
                 help="graph outputs: jetson (scores + boxes for detectnet), onnx-nms (standard NMS in the graph), "
                      "trt-nms (TensorRT EfficientNMS_TRT plugin)")
    add_argument(p, "--opset", type=int, default=DEFAULT_OPSET,
                 help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}); {DEFAULT_OPSET} is the highest TensorRT 8.2 "
                      "(Jetson Nano's last JetPack) parses")
    add_argument(p, "--batch-size", type=_batch_size, default=1, metavar="N|dynamic",
                 help="fixed batch size of the graph, or 'dynamic' for a variable batch axis (detectnet: 1)")
    add_model_file_arguments(p)
    add_argument(p, "--width", type=positive_int, default=None,
                 help="input width (onnx_export.py's flag): checked against the model's size")
    add_argument(p, "--height", type=positive_int, default=None,
                 help="input height (onnx_export.py's flag): checked against the model's size")

    nms = p.add_argument_group("post-processing (onnx-nms, trt-nms; see below)")
    add_postprocess_arguments(nms, DISPLAY, {"iou_threshold": ("--iou-threshold", "--nms-threshold")})

    chk = p.add_argument_group("checking (needs onnxruntime)")
    add_argument(chk, "--check", action="store_true",
                 help="run the export in onnxruntime on preprocessed images and compare with PyTorch "
                      "(raw outputs within --tolerance; onnx-nms: the Detector's detections); exit 1 on a mismatch")
    add_argument(chk, "--check-images", nargs="+", default=None, metavar="PATH",
                 help="images (files or folders) for --check; default: generated test images")
    add_argument(chk, "--check-count", type=positive_int, default=4,
                 help="how many images --check uses at most")
    add_argument(chk, "--tolerance", type=float, default=1e-4,
                 help="largest absolute difference --check accepts")
    add_argument(chk, "--data", default=None, metavar="DIR",
                 help="with --check (jetson format): also score the PyTorch model and the export on DIR's test split "
                      "(VOC, COCO or Open Images layout), print their mAP side by side (and the export's with "
                      f"detectnet's preprocessing, for information) and exit 1 when they differ by more than "
                      f"{MAP_MARGINS['fp32']:g} point ({MAP_MARGINS['int8']:g} for an INT8 graph)")

    add_int8_arguments(p)

    trt = p.add_argument_group("TensorRT")
    add_argument(trt, "--tensorrt", default=None, metavar="ENGINE",
                 help="build a TensorRT engine from the export (needs the tensorrt package; otherwise the "
                      "equivalent trtexec command is printed); ENGINE.json records the checkpoint's sha256")
    add_argument(trt, "--fp16", action="store_true", help="allow FP16 kernels in the engine")
    add_argument(trt, "--max-batch-size", type=positive_int, default=8,
                 help="largest batch of a dynamic-batch engine")
    add_argument(trt, "--workspace", type=positive_int, default=None, metavar="MB",
                 help="TensorRT builder workspace (default: 1024 when building here, trtexec's own default "
                      "otherwise; trtexec >= 8.4 takes it as --memPoolSize)")
    add_argument(trt, "--verify-engine", default=None, metavar="ENGINE",
                 help="only check that ENGINE (with its ENGINE.json) was built from this model file; exit 1 if stale")
    return p


# ----------------------------------------------------------------------------- which file, where to


def _resolve_model_file(args: argparse.Namespace) -> tuple[Path, str]:
    """The model file to export and the flag it came from (for messages); prints why when picked."""
    given = [v for v in (args.checkpoint, args.input) if v]
    if len(given) == 2 and Path(given[0]) != Path(given[1]):
        raise SettingsError("give the model file once: MODEL or --input, not both")
    model_dir = args.model_dir
    if model_dir is not None and not model_dir.is_dir():
        raise ModelFileError(f"--model-dir {model_dir} is not a folder")
    flag = "--input" if args.input else "MODEL"
    if given:
        path = Path(given[0]).expanduser()
        if not path.is_file() and model_dir is not None and (model_dir / path).is_file():
            path = model_dir / path  # onnx_export.py: a name inside --model-dir
        if not path.is_file():
            raise ModelFileError(f"{flag}: model file {path} does not exist")
        return path, flag
    if model_dir is not None:
        from ..model_files import pick_model_file

        choice = pick_model_file(model_dir, flag="--model-dir")
        print(f"--model-dir {model_dir}: exporting {choice.path.name}: {choice.reason}")
        return choice.path, "--model-dir"
    raise SettingsError("which checkpoint? give MODEL (an ssdfast checkpoint or a pytorch-ssd .pth), --input FILE "
                        "or --model-dir DIR")


def _resolve_label_file(args: argparse.Namespace) -> None:
    """onnx_export.py: a --labels that is not a file is looked up in --model-dir."""
    if args.label_file and args.model_dir and not Path(args.label_file).is_file():
        inside = args.model_dir / args.label_file
        if inside.is_file():
            args.label_file = str(inside)


def _output_path(args: argparse.Namespace, model_file: Path, net_given: str | None) -> Path:
    model_dir = args.model_dir
    if args.output:
        output = Path(args.output)
        if model_dir is not None and "/" not in args.output and "\\" not in args.output:
            output = model_dir / output  # onnx_export.py: a bare name goes into --model-dir
    elif model_dir is not None and args.format == "jetson":
        output = model_dir / f"{net_given or ONNX_EXPORT_DEFAULT_NET}.onnx"  # onnx_export.py's <NET>.onnx
    else:
        folder = model_dir or model_file.parent
        suffix = "" if args.format == "jetson" else f"-{args.format}"
        output = folder / f"{model_file.stem}{suffix}.onnx"
    if output.suffix.lower() != ".onnx":
        raise SettingsError(f"--output should be a .onnx file, got {output}")
    if output.is_dir():
        raise SettingsError(f"--output {output} is a folder")
    return output


# ----------------------------------------------------------------------------- the model


def _load(model_file: Path, args: argparse.Namespace, flag: str) -> Any:
    """The model file read (once) with the model-file flags. A pytorch-ssd file given without --net, whose
    network is not recognised from the file, is read as onnx_export.py's default, ssd-mobilenet (mb1-ssd)."""
    from ..model_files import read_model_file

    read = read_model_file(model_file, flag=flag)
    try:
        return load_model_arg(read, args, "cpu", flag)
    except ModelFileError as exc:
        if args.net is not None or read.kind == "ssdfast":
            raise
        first = exc
    fallback = argparse.Namespace(**{**vars(args), "net": ONNX_EXPORT_NET_ALIASES[ONNX_EXPORT_DEFAULT_NET]})
    try:
        loaded = load_model_arg(read, fallback, "cpu", flag)
    except ModelFileError:
        raise first from None
    print(f"no --net: {model_file.name} read as onnx_export.py's default network, {ONNX_EXPORT_DEFAULT_NET} (mb1-ssd)")
    return loaded


def _check_size(args: argparse.Namespace, loaded: Any) -> None:
    h, w = model_image_size(loaded.model.config)
    for flag, given, actual in (("--width", args.width, w), ("--height", args.height, h)):
        if given is not None and given != actual:
            hint = ("give --resolution to build the pytorch-ssd network at another size" if loaded.kind == "pytorch-ssd"
                    else "the export uses the size the model was trained at")
            raise SettingsError(f"{flag} {given} but the model's network takes {w}x{h} images ({hint})")


def _check_labels_destination(labels: Path, loaded: Any) -> None:
    """Writing labels.txt must not rewrite, in another format, the label file the classes came from."""
    if loaded.label_file is None or not labels.exists() or labels.resolve() != Path(loaded.label_file).resolve():
        return
    lines = [line.strip() for line in labels.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if lines != list(loaded.class_names):
        raise SettingsError(f"--output-labels: {labels} is the label file the class names were read from, in another "
                            "format than detectnet's (one a line, BACKGROUND first); give --output-labels FILE")


def _print_usage_hint(result: Any, labels: Path | None) -> None:
    from ..io.labels import class_count

    h, w = result.image_size
    batch = "dynamic" if result.batch_size is None else result.batch_size
    print(f"wrote {result.path} ({result.format}, opset {result.opset}, input {result.input_name} "
          f"[{batch},3,{h},{w}] RGB in [-1, 1], {result.num_priors} priors, {class_count(result.num_classes)})")
    if labels is not None:
        print(f"wrote {labels} ({result.num_classes} lines, BACKGROUND first)")
    if result.format == "jetson":
        model_flag = shlex.quote(f"--model={result.path}")
        labels_flag = shlex.quote(f"--labels={labels}") if labels is not None else "--labels=<labels.txt>"
        print(f"run it on a Jetson with:\n  detectnet {model_flag} {labels_flag} {DETECTNET_FLAGS} <input> <output>")
        if result.batch_size != 1:
            print(f"note: detectnet runs ONNX SSDs at batch 1; this graph's batch is {batch}")


# ----------------------------------------------------------------------------- images, TensorRT


def _read_images(paths: list[str], limit: int, flag: str) -> list[Any]:
    from ..export.inputs import load_images

    loaded = load_images(paths, limit=limit, flag=flag)
    if not loaded:
        raise DataError(f"{flag} {' '.join(paths)}: no images found")
    for image in loaded:
        if image.warning:
            print(f"note: {image.warning}")
    return [image.pixels for image in loaded]


def _tensorrt(args: argparse.Namespace, result: Any, checkpoint_sha: str, int8_onnx: Path | None) -> int:
    """Build the engine (tensorrt present) or print the trtexec command; write the sidecar. Exit status.
    With ``--int8`` the engine is built from the ``tensorrt`` Q/DQ file ``int8_onnx`` (explicit
    quantization: its scales come with it, TensorRT calibrates nothing)."""
    from ..export.tensorrt import (
        EngineInfo,
        build_engine,
        file_sha256,
        format_command,
        tensorrt_available,
        trtexec_command,
        write_sidecar,
    )

    engine = Path(args.tensorrt)
    source = int8_onnx or result.path
    if tensorrt_available():
        try:
            info = build_engine(
                source, engine, checkpoint_sha256=checkpoint_sha, format=result.format, fp16=args.fp16,
                int8=int8_onnx is not None, batch_size=result.batch_size,
                max_batch_size=args.max_batch_size, image_size=result.image_size,
                workspace_mb=args.workspace or 1024,
            )
        except (RuntimeError, ValueError) as exc:
            print(f"error: TensorRT engine build failed: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {engine} (TensorRT {info.tensorrt_version}, {info.precision}, from {source.name}) "
              f"and {engine.name}.json")
        return 0
    cmd = trtexec_command(source, engine, fp16=args.fp16, int8=int8_onnx is not None,
                          batch_size=result.batch_size, max_batch_size=args.max_batch_size,
                          image_size=result.image_size, workspace_mb=args.workspace)
    precision = "int8" if int8_onnx is not None else ("fp16" if args.fp16 else "fp32")
    sidecar = write_sidecar(engine, EngineInfo(
        engine=engine.name, checkpoint_sha256=checkpoint_sha, onnx_sha256=file_sha256(source),
        export_format=result.format, precision=precision, batch_size=result.batch_size,
        image_size=result.image_size, built_by="trtexec",
    ))
    print("the tensorrt Python package is not installed here; build the engine on the target with:")
    print("  " + format_command(cmd))
    if int8_onnx is not None:
        print(f"  ({int8_onnx.name} carries its INT8 scales in its Q/DQ nodes: trtexec needs no calibration cache)")
    print(f"wrote {sidecar} (the checkpoint's sha256, so a stale engine is detected: "
          f"ssdfast-export CHECKPOINT --verify-engine {engine})")
    return 0


# ----------------------------------------------------------------------------- main


def _check_flags(args: argparse.Namespace) -> None:
    if not (MIN_OPSET <= args.opset <= MAX_OPSET):
        raise SettingsError(f"--opset should be between {MIN_OPSET} and {MAX_OPSET}, got {args.opset}")
    if args.fp16 and args.tensorrt is None:
        raise SettingsError("--fp16 applies to the TensorRT engine: add --tensorrt ENGINE")
    check_int8_flags(args)
    if not args.tolerance > 0:
        raise SettingsError(f"--tolerance should be positive, got {args.tolerance}")
    if args.data is not None:
        check_data_flags(args)
    if args.check:  # before anything is written: say what to install
        require("onnxruntime", "--check")


def _export(args: argparse.Namespace) -> int:
    settings = postprocess_settings(args)
    net_given = args.net
    if args.net is not None:
        args.net = ONNX_EXPORT_NET_ALIASES.get(args.net.strip().lower(), args.net)
    model_file, flag = _resolve_model_file(args)
    _resolve_label_file(args)

    from ..export.tensorrt import check_engine, file_sha256

    checkpoint_sha = file_sha256(model_file)
    if args.verify_engine:
        try:
            info = check_engine(args.verify_engine, checkpoint_sha256=checkpoint_sha)
        except ModelFileError as exc:  # an answer, not a mistake: exit 1 (a failed check), as --check
            print(f"stale: {exc}", file=sys.stderr)
            return 1
        print(f"{args.verify_engine} is up to date: built from {model_file} ({info.export_format}, {info.precision})")
        return 0

    _check_flags(args)
    loaded = _load(model_file, args, flag)
    _check_size(args, loaded)
    print(loaded.describe())
    output = _output_path(args, model_file, net_given)
    labels = Path(args.output_labels) if args.output_labels else output.parent / "labels.txt"
    _check_labels_destination(labels, loaded)
    check_images = _read_images(args.check_images, args.check_count, "--check-images") if args.check_images else None
    calib_images = _read_images([args.calib_dir], args.calib_count, "--calib-dir") if args.int8 else None
    if calib_images is not None and len(calib_images) < (args.batch_size or 1):
        raise DataError(f"--calib-dir has {len(calib_images)} images, fewer than one batch of {args.batch_size}")

    from ..export import check_export, export_onnx, sample_images

    model = loaded.model
    result = export_onnx(
        model, output, format=args.format, opset=args.opset, batch_size=args.batch_size, settings=settings,
        class_names=loaded.class_names, labels_path=labels,
        metadata={"ssdfast.checkpoint_sha256": checkpoint_sha, "ssdfast.checkpoint": model_file.name},
    )
    _print_usage_hint(result, result.labels_path)

    if args.check:
        images = check_images or sample_images(args.check_count, size=result.image_size)
        report = check_export(result.path, model, format=args.format, images=images, settings=settings,
                              atol=args.tolerance)
        print(report.summary(), file=sys.stdout if report.passed else sys.stderr)
        if not report.passed:
            if args.tensorrt:
                print("no TensorRT engine built: the export failed its check", file=sys.stderr)
            return 1
    int8_files = write_int8(args, result, model, calib_images) if calib_images else {}
    if args.check and args.data is not None and not check_map(args, result, loaded, list(int8_files.values())):
        return 1
    if args.tensorrt:
        return _tensorrt(args, result, checkpoint_sha, int8_files.get("tensorrt"))
    return 0


def _main(argv: list[str] | None) -> int:
    return _export(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-export``: 0 on success, 1 when --check fails, 2 on a usage error
    (a missing optional package included: one line saying what to install)."""
    return run_main(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
