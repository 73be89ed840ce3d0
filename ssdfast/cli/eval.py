"""``ssdfast-eval``: the mAP of a trained SSD on a VOC, COCO or Open Images test set.

pytorch-ssd's ``eval_ssd.py`` flags work as they are (``--net mb1-ssd --trained_model m.pth
--dataset_type voc --dataset VOC2007TEST --label_file labels.txt``), in either spelling. The model file
is read by :func:`ssdfast.model_files.load_model_file` (the loader every command shares): an ssdfast
checkpoint carries its network, image size, normalization and class names, so ``--net`` and
``--label-file`` may be left out; a pytorch-ssd ``.pth`` (a bare state dict) takes its network from
``--net`` (else from its layers) and its class names from ``--label-file`` or a ``labels.txt`` beside
it. A pytorch-ssd model is fed images resized as pytorch-ssd resized them (OpenCV's bilinear), see
:func:`ssdfast.detector.prepare_image`.

What ships is scored too: an exported ``.onnx`` (the ``jetson`` format, INT8 Q/DQ graphs included; its
labels from the ``labels.txt`` beside it) or OpenVINO ``.xml``, in ONNX Runtime / OpenVINO / TensorRT
(``--runtime``), and ``--preprocess detectnet`` feeds the network as jetson-inference's detectNet does
(:func:`ssdfast.load_detector`).

Every image of the test set is scored: one that cannot be read counts as missed (its objects stay in
the recall denominator, as with the devkit) and is listed by path; a truncated image that decodes is
used with a warning naming it. ``--strict`` makes either an error.

VOC metric: the devkit's AP (py-faster-rcnn's ``voc_eval.py``), 11-point (VOC2007) by default.
COCO metric: pycocotools' COCOeval, its 12 numbers, with detections mapped back to the category ids.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from ..data import DATASET_TYPES
from ..device import resolve_device
from ..errors import DataError, ModelFileError
from ..ops.settings import EVALUATION
from ._common import (
    add_argument,
    add_model_file_arguments,
    add_postprocess_arguments,
    add_runtime_arguments,
    dataset_arg,
    fraction,
    load_detector_arg,
    make_parser,
    non_negative_int,
    positive_int,
    postprocess_settings,
    run_main,
    str2bool,
)

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  ssdfast-eval --trained-model models/best.pth --dataset-type voc --dataset data/VOC2007TEST
  ssdfast-eval --trained-model models/best.pth --dataset-type coco --dataset data/coco --eval-dir eval_results
  ssdfast-eval --net mb1-ssd --trained_model mobilenet-v1-ssd-mp-0_675.pth --dataset_type voc \\
      --dataset VOC2007TEST --label_file voc-model-labels.txt       # a pytorch-ssd model
  ssdfast-eval --trained-model models/fruit/ssd-mobilenet.onnx --dataset data/fruit   # the exported file
  ssdfast-eval --trained-model models/fruit/ssd-mobilenet.onnx --dataset data/fruit --preprocess detectnet

outputs: the per-class AP table and mAP (or the 12 COCO numbers) on stdout, then the images that could
not be read (scored as missed) and those used with a warning (e.g. truncated), by path. With
--eval-dir DIR: metrics.json (mAP and per-class AP, or the 12 COCO numbers; unreadable_images, notes),
det_test_<class>.txt per class (VOC devkit format: image_id score xmin ymin xmax ymax, 1-based pixels)
or detections.json (COCO results format, original category ids)
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-eval`` argument parser (flags of pytorch-ssd's ``eval_ssd.py``)."""
    p = make_parser("ssdfast-eval", "Evaluate a trained SSD: VOC mAP or COCO AP (pytorch-ssd compatible flags).",
                    _EPILOG)
    add_argument(p, "--trained-model", "--checkpoint", required=True, metavar="FILE",
                 help="the model to evaluate: an ssdfast checkpoint, a pytorch-ssd .pth, or an exported .onnx "
                      "(jetson format) / OpenVINO .xml (their class names from --label-file or a labels.txt beside "
                      "them)")
    add_model_file_arguments(p)
    add_runtime_arguments(p)
    add_argument(p, "--dataset-type", default="voc", choices=DATASET_TYPES,
                 help="dataset format: voc, coco, open_images, or synthetic "
                      "(a folder written by ssdfast-data synthetic)")
    add_argument(p, "--dataset", "--datasets", nargs="+", required=True, metavar="PATH",
                 help="dataset root folder(s); several are evaluated together")
    add_argument(p, "--split", default="test", choices=("test", "val", "train"),
                 help="which part of the dataset to evaluate (VOC: test.txt; COCO: val2017; Open Images: test)")
    add_argument(p, "--metric", default=None, choices=("voc", "coco"),
                 help="voc (devkit AP) or coco (COCOeval AP@[.5:.95]); "
                      "default: coco for --dataset-type coco, voc otherwise")
    add_argument(p, "--use-2007-metric", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                 help="VOC: the 11-point VOC2007 AP (true) or the all-point area of VOC2010+ (false)")
    add_argument(p, "--iou-threshold", dest="match_iou", type=fraction, default=0.5,
                 help="VOC matching: a detection matches a ground-truth box when their IoU is above this")
    add_postprocess_arguments(p, EVALUATION, {"iou_threshold": ("--nms-iou-threshold",)})
    add_argument(p, "--nms-method", default="hard", choices=("hard",),
                 help="NMS flavour (pytorch-ssd's flag; hard NMS is the only one)")
    add_argument(p, "--eval-dir", default=None, metavar="DIR",
                 help="write metrics.json and the detections (det_test_<class>.txt or detections.json) here")
    add_argument(p, "--batch-size", type=positive_int, default=16, help="images per forward pass")
    add_argument(p, "--num-workers", "--workers", type=non_negative_int, default=None, metavar="N",
                 help="image reading worker processes (default: the cores this process may use, less one, at most 4)")
    add_argument(p, "--strict", action="store_true",
                 help="stop with an error on a test image that cannot be read or is truncated, instead of "
                      "scoring it as missed / using it with a warning")
    add_argument(p, "--device", default="auto", help="device: auto, cpu, cuda, cuda:1 ...")
    add_argument(p, "--use-cuda", type=str2bool, nargs="?", const=True, default=None, metavar="BOOL",
                 help="use CUDA when available (pytorch-ssd's flag; --device is the general one)")
    add_argument(p, "--quiet", "-q", action="store_true",
                 help="no progress bar (there is none when stderr is not a terminal)")
    return p


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _print_report(result: dict[str, Any], out: Any = None) -> None:
    from ..evaluation import COCO_STAT_NAMES

    out = sys.stdout if out is None else out

    per_class = result["per_class_AP"]
    width = max([len("class")] + [len(n) for n in per_class])
    if result["metric"] == "voc":
        num_gt = result.get("num_gt", {})
        kind = "VOC2007 11-point" if result["use_2007_metric"] else "VOC2010 all-point"
        print(f"Average precision per class ({kind}, IoU > {result['match_iou']:g}):", file=out)
        print(f"  {'class':<{width}}  {'AP':>7}  {'gt boxes':>8}", file=out)
        for name, ap in per_class.items():
            text = "      -" if math.isnan(ap) else f"{ap:7.4f}"
            print(f"  {name:<{width}}  {text}  {num_gt.get(name, 0):>8}", file=out)
        print(f"mAP: {result['mAP']:.4f}", file=out)
    else:
        print("Average precision per class (AP@[.5:.95]):", file=out)
        for name, ap in per_class.items():
            text = "      -" if math.isnan(ap) else f"{ap:7.4f}"
            print(f"  {name:<{width}}  {text}", file=out)
        labels = {
            "AP": "AP     @[IoU=0.50:0.95 | area=   all | maxDets=100]",
            "AP50": "AP     @[IoU=0.50      | area=   all | maxDets=100]",
            "AP75": "AP     @[IoU=0.75      | area=   all | maxDets=100]",
            "APs": "AP     @[IoU=0.50:0.95 | area= small | maxDets=100]",
            "APm": "AP     @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "APl": "AP     @[IoU=0.50:0.95 | area= large | maxDets=100]",
            "AR1": "AR     @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
            "AR10": "AR     @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
            "AR100": "AR     @[IoU=0.50:0.95 | area=   all | maxDets=100]",
            "ARs": "AR     @[IoU=0.50:0.95 | area= small | maxDets=100]",
            "ARm": "AR     @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "ARl": "AR     @[IoU=0.50:0.95 | area= large | maxDets=100]",
        }
        for name in COCO_STAT_NAMES:
            print(f"  {name:<6} {labels[name]} = {result[name]:.4f}", file=out)
        print(f"mAP (AP@[.5:.95]): {result['mAP']:.4f}   AP50: {result['AP50']:.4f}", file=out)
    print(f"{result['num_images']} images in {result['seconds']:.1f} s: {result['images_per_s']:.1f} images/s",
          file=out)
    unreadable = result.get("unreadable_images") or []
    if unreadable:
        print(f"{len(unreadable)} images could not be read; their objects are scored as missed:", file=out)
        for path in unreadable:
            print(f"  {path}", file=out)
    warned = [note for note in result.get("notes") or [] if not any(note.startswith(p) for p in unreadable)]
    if warned:
        print(f"{len(warned)} images were used with a warning:", file=out)
        for note in warned:
            print(f"  {note}", file=out)


def _write_eval_dir(eval_dir: str, result: dict[str, Any], class_names: list[str], args: argparse.Namespace,
                    kind: str, runtime: str) -> list[str]:
    from ..evaluation import COCO_STAT_NAMES, write_voc_detections

    os.makedirs(eval_dir, exist_ok=True)
    metrics: dict[str, Any] = {"metric": result["metric"], "mAP": result["mAP"]}
    if result["metric"] == "coco":
        metrics.update({name: result[name] for name in COCO_STAT_NAMES})
    else:
        metrics.update(match_iou=result["match_iou"], use_2007_metric=result["use_2007_metric"],
                       num_gt=result["num_gt"])
    metrics.update(
        per_class_AP=result["per_class_AP"],
        num_images=result["num_images"],
        skipped_images=result["skipped_images"],
        unreadable_images=result["unreadable_images"],
        notes=result["notes"],
        images_per_s=result["images_per_s"],
        checkpoint=os.path.abspath(args.trained_model),
        model_kind=kind,
        runtime=runtime,
        preprocess=args.preprocess,
        dataset=[os.path.abspath(p) for p in args.dataset],
        dataset_type=args.dataset_type,
        split=args.split,
    )
    written = [os.path.join(eval_dir, "metrics.json")]
    with open(written[0], "w", encoding="utf-8") as f:
        json.dump(_json_safe(metrics), f, indent=2)
        f.write("\n")
    detections = result["detections"]
    if result["metric"] == "coco":
        path = os.path.join(eval_dir, "detections.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result["coco_results"], f)
        written.append(path)
    else:
        written += write_voc_detections(eval_dir, detections, result["image_ids"], class_names)
    return written


def _main(argv: list[str] | None) -> int:
    from ..evaluation import evaluate
    from ..threads import planned_cpu

    args = build_parser().parse_args(argv)
    settings = postprocess_settings(args)
    device = resolve_device(args.device, args.use_cuda)
    if not os.path.isfile(args.trained_model):
        raise ModelFileError.about(args.trained_model, "no such file", "--trained-model")
    for path in args.dataset:
        if not os.path.exists(path):
            raise DataError(f"--dataset {path}: no such folder")
    metric = args.metric or ("coco" if args.dataset_type == "coco" else "voc")
    with planned_cpu(args.num_workers, device.type) as num_workers:  # the network gets the cores they leave
        detector = load_detector_arg(args.trained_model, args, device, settings, "--trained-model")
        source = detector.source
        if not args.quiet:
            print(source.description, file=sys.stderr)
        dataset = dataset_arg(args.dataset_type, args.dataset, args.split, detector.class_names, args.label_file,
                              "--dataset")
        result = evaluate(
            detector, dataset, batch_size=args.batch_size, metric=metric, settings=settings,
            match_iou=args.match_iou, use_2007_metric=args.use_2007_metric, num_workers=num_workers,
            progress=not args.quiet, strict=args.strict,
        )
    _print_report(result)
    if args.eval_dir:
        written = _write_eval_dir(args.eval_dir, result, detector.class_names, args, source.kind, source.runtime)
        print(f"wrote {len(written)} files to {args.eval_dir}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-eval``; returns the exit code (2 for a usage error)."""
    from ..threads import quiet_openmp

    quiet_openmp()  # before torch is imported: OpenMP threads then sleep instead of spinning
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
