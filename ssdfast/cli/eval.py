"""``ssdfast-eval``: the mAP of a trained SSD on a VOC, COCO or Open Images test set.

pytorch-ssd's ``eval_ssd.py`` flags work as they are (``--net mb1-ssd --trained_model m.pth
--dataset_type voc --dataset VOC2007TEST --label_file labels.txt``), in either spelling. The network,
image size, normalization and class names come from the ssdfast checkpoint, so ``--net`` and
``--label-file`` may be left out; a pytorch-ssd ``.pth`` (a bare state dict) needs both.

VOC metric: the devkit's AP (py-faster-rcnn's ``voc_eval.py``), 11-point (VOC2007) by default.
COCO metric: pycocotools' COCOeval, its 12 numbers, with detections mapped back to the category ids.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Any

from ._common import UsageError, add_argument, make_parser, positive_int, resolve_device, run_main, str2bool

__all__ = ["main", "build_parser"]

_DATASET_TYPES = ("voc", "coco", "open_images", "synthetic")

_EPILOG = """\
examples:
  ssdfast-eval --trained-model models/best.pth --dataset-type voc --dataset data/VOC2007TEST
  ssdfast-eval --trained-model models/best.pth --dataset-type coco --dataset data/coco --eval-dir eval_results
  ssdfast-eval --net mb1-ssd --trained_model mobilenet-v1-ssd-mp-0_675.pth --dataset_type voc \\
      --dataset VOC2007TEST --label_file voc-model-labels.txt       # a pytorch-ssd model

outputs with --eval-dir DIR: metrics.json (mAP and per-class AP, or the 12 COCO numbers),
det_test_<class>.txt per class (VOC devkit format: image_id score xmin ymin xmax ymax, 1-based pixels)
or detections.json (COCO results format, original category ids)
"""


def _one_line(exc: BaseException) -> str:
    """The first line of an error message (usage errors print as one line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__






def _unit_interval(value: str) -> float:
    number = float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"should be in [0, 1), got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-eval`` argument parser (flags of pytorch-ssd's ``eval_ssd.py``)."""
    p = make_parser("ssdfast-eval", "Evaluate a trained SSD: VOC mAP or COCO AP (pytorch-ssd compatible flags).", _EPILOG)
    add_argument(p, "--trained-model", "--checkpoint", required=True, metavar="FILE",
                 help="the model to evaluate: an ssdfast checkpoint (or a pytorch-ssd .pth with --net and --label-file)")
    add_argument(p, "--net", default=None,
                 help="network name; read from the checkpoint when left out (must match it when given)")
    add_argument(p, "--mb2-width-mult", "--width-mult", type=float, default=None,
                 help="MobileNet width multiplier, for a pytorch-ssd .pth (ssdfast checkpoints carry it)")
    add_argument(p, "--dataset-type", default="voc", choices=_DATASET_TYPES,
                 help="dataset format: voc, coco, open_images, or synthetic (a folder written by ssdfast-data synthetic)")
    add_argument(p, "--dataset", "--datasets", nargs="+", required=True, metavar="PATH",
                 help="dataset root folder(s); several are evaluated together")
    add_argument(p, "--split", default="test", choices=("test", "val", "train"),
                 help="which part of the dataset to evaluate (VOC: test.txt; COCO: val2017; Open Images: test)")
    add_argument(p, "--label-file", default=None, metavar="FILE",
                 help="class names, one a line, BACKGROUND first; default: the checkpoint's")
    add_argument(p, "--metric", default=None, choices=("voc", "coco"),
                 help="voc (devkit AP) or coco (COCOeval AP@[.5:.95]); default: coco for --dataset-type coco, voc otherwise")
    add_argument(p, "--use-2007-metric", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                 help="VOC: the 11-point VOC2007 AP (true) or the all-point area of VOC2010+ (false)")
    add_argument(p, "--iou-threshold", type=_unit_interval, default=0.5,
                 help="VOC: a detection matches a ground-truth box when their IoU is above this")
    add_argument(p, "--nms-iou-threshold", type=_unit_interval, default=0.45, help="NMS IoU threshold within a class")
    add_argument(p, "--score-threshold", type=_unit_interval, default=0.01,
                 help="lowest class probability kept as a detection")
    add_argument(p, "--max-detections", type=positive_int, default=200, help="detections kept per image")
    add_argument(p, "--nms-method", default="hard", choices=("hard",),
                 help="NMS flavour (pytorch-ssd's flag; hard NMS is the only one)")
    add_argument(p, "--eval-dir", default=None, metavar="DIR",
                 help="write metrics.json and the detections (det_test_<class>.txt or detections.json) here")
    add_argument(p, "--batch-size", type=positive_int, default=16, help="images per forward pass")
    add_argument(p, "--num-workers", "--workers", type=int, default=2, help="image decoding worker processes")
    add_argument(p, "--device", default="auto", help="device: auto, cpu, cuda, cuda:1 ...")
    add_argument(p, "--use-cuda", type=str2bool, nargs="?", const=True, default=None, metavar="BOOL",
                 help="use CUDA when available (pytorch-ssd's flag; --device is the general one)")
    add_argument(p, "--quiet", "-q", action="store_true", help="no progress bar")
    return p


def _load_model(args: argparse.Namespace, device: Any) -> tuple[Any, list[str], list[int] | None]:
    """(model, class names, category ids) from an ssdfast checkpoint or a pytorch-ssd state dict."""
    from ..data import DataError, read_label_file
    from ..checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    path = args.trained_model
    if not os.path.isfile(path):
        raise UsageError(f"--trained-model {path}: no such file")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        if args.net is None or args.label_file is None:
            raise UsageError(f"{_one_line(exc)} -- for a pytorch-ssd model give --net and --label-file") from None
        return _load_pytorch_ssd(args, device) + (None,)
    net = ckpt["net"]
    if args.net is not None and args.net.strip().lower().replace("_", "-") != net:
        raise UsageError(f"--net {args.net}: {path} holds a {net} network")
    try:
        model, class_names = model_from_checkpoint(ckpt, device=device)
    except CheckpointError as exc:
        raise UsageError(_one_line(exc)) from None
    if args.mb2_width_mult is not None and abs(args.mb2_width_mult - model.config.width_mult) > 1e-9:
        raise UsageError(f"--mb2-width-mult {args.mb2_width_mult}: {path} has width multiplier {model.config.width_mult}")
    if args.label_file is not None:
        try:
            names = read_label_file(args.label_file)
        except DataError as exc:
            raise UsageError(_one_line(exc)) from None
        if len(names) != len(class_names):
            raise UsageError(
                f"--label-file {args.label_file} has {len(names)} classes (background included) but the "
                f"model predicts {len(class_names)}: {class_names}"
            )
        class_names = names
    return model, class_names, ckpt.get("category_ids")


def _load_pytorch_ssd(args: argparse.Namespace, device: Any) -> tuple[Any, list[str]]:
    from ..data import DataError, read_label_file
    from ..models import create_model, load_pretrained_ssd

    try:
        class_names = read_label_file(args.label_file)
    except DataError as exc:
        raise UsageError(_one_line(exc)) from None
    try:
        model = create_model(args.net, len(class_names), width_mult=args.mb2_width_mult or 1.0)
        report = load_pretrained_ssd(model, args.trained_model)
    except ValueError as exc:
        raise UsageError(f"--trained-model {args.trained_model}: {_one_line(exc)}") from None
    if report.reinitialized:
        raise UsageError(
            f"--trained-model {args.trained_model}: its prediction heads do not fit the {len(class_names)} classes "
            f"of --label-file {args.label_file}"
        )
    return model.to(device).eval(), class_names


def _build_dataset(args: argparse.Namespace, class_names: list[str]) -> Any:
    from ..data import DataError, build_dataset

    for path in args.dataset:
        if not os.path.exists(path):
            raise UsageError(f"--dataset {path}: no such folder")
    with tempfile.TemporaryDirectory() as tmp:
        label_file = args.label_file
        if label_file is None:  # read the dataset with the model's classes, in the model's order
            label_file = os.path.join(tmp, "labels.txt")
            with open(label_file, "w", encoding="utf-8") as f:
                f.write("\n".join(class_names) + "\n")
        try:
            dataset = build_dataset(args.dataset_type, args.dataset, split=args.split, label_file=label_file)
        except (DataError, ValueError) as exc:
            raise UsageError(_one_line(exc)) from None
    if list(dataset.class_names) != list(class_names):
        raise UsageError(f"the dataset's classes {dataset.class_names} differ from the model's {class_names}")
    if len(dataset) == 0:
        raise UsageError(f"--dataset {' '.join(args.dataset)}: no images in split {args.split!r}")
    return dataset


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
        print(f"Average precision per class ({kind}, IoU > {result['iou_threshold']:g}):", file=out)
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
    skipped = f", {result['skipped_images']} unreadable images skipped" if result["skipped_images"] else ""
    print(f"{result['num_images']} images in {result['seconds']:.1f} s: {result['images_per_s']:.1f} images/s{skipped}",
          file=out)


def _write_eval_dir(eval_dir: str, result: dict[str, Any], class_names: list[str], args: argparse.Namespace) -> list[str]:
    from ..evaluation import COCO_STAT_NAMES, write_voc_detections

    os.makedirs(eval_dir, exist_ok=True)
    metrics: dict[str, Any] = {"metric": result["metric"], "mAP": result["mAP"]}
    if result["metric"] == "coco":
        metrics.update({name: result[name] for name in COCO_STAT_NAMES})
    else:
        metrics.update(iou_threshold=result["iou_threshold"], use_2007_metric=result["use_2007_metric"],
                       num_gt=result["num_gt"])
    metrics.update(
        per_class_AP=result["per_class_AP"],
        num_images=result["num_images"],
        skipped_images=result["skipped_images"],
        images_per_s=result["images_per_s"],
        checkpoint=os.path.abspath(args.trained_model),
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
        written += write_voc_detections(eval_dir, detections, [d["image_id"] for d in detections], class_names)
    return written


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_workers < 0:
        raise UsageError(f"--num-workers should be >= 0, got {args.num_workers}")
    device = resolve_device(args.device, args.use_cuda)
    model, class_names, _ = _load_model(args, device)
    dataset = _build_dataset(args, class_names)
    metric = args.metric or ("coco" if args.dataset_type == "coco" else "voc")

    from ..evaluation import evaluate

    result = evaluate(
        model, dataset, batch_size=args.batch_size, device=device, metric=metric,
        iou_threshold=args.iou_threshold, use_2007_metric=args.use_2007_metric, num_workers=args.num_workers,
        progress=not args.quiet, score_threshold=args.score_threshold, nms_iou_threshold=args.nms_iou_threshold,
        max_detections=args.max_detections,
    )
    _print_report(result)
    if args.eval_dir:
        written = _write_eval_dir(args.eval_dir, result, class_names, args)
        print(f"wrote {len(written)} files to {args.eval_dir}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-eval``; returns the exit code (2 for a usage error)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
