"""``ssdfast-data``: generate a synthetic detection set, or validate a dataset folder.

Examples::

    ssdfast-data synthetic --out data/shapes --format voc --num-images 1000 --image-size 256
    ssdfast-data synthetic --out data/coco --format coco    # train2017/ val2017/ annotations/ (COCO's own layout)
    ssdfast-data validate data/VOC2007 data/VOC2012
    ssdfast-data validate data/coco --dataset-type coco --workers 4
    ssdfast-data validate data/coco/val2017 --strict        # one split of the official COCO layout
"""
from __future__ import annotations

import os
import sys
import time

from ..errors import DataError, SettingsError
from ._common import add_argument, make_parser, run_main

__all__ = ["main"]


def _parser():
    from ..data.synthetic import FORMATS, SHAPES

    parser = make_parser("ssdfast-data", "Synthetic data and dataset checks for ssdfast.",
                         epilog=__doc__.split("Examples::", 1)[1])
    sub = parser.add_subparsers(dest="command", metavar="{synthetic,validate}")
    sub.required = True

    syn = sub.add_parser(
        "synthetic",
        help="draw a synthetic shapes detection set in VOC, COCO or Open Images layout",
        description="Draw coloured shapes (one shape and colour per class) at many scales on textured "
        "backgrounds and write them in a real dataset layout.",
        formatter_class=parser.formatter_class,
    )
    add_argument(syn, "--out", "-o", required=True,
                 help="output folder (created; existing files of the same names are overwritten)")
    add_argument(syn, "--format", default="voc", choices=FORMATS,
                 help="on-disk layout to write: voc (Annotations/, JPEGImages/, ImageSets/Main/, labels.txt); coco "
                      "(COCO's official layout: train2017/, val2017/, annotations/instances_{train,val}2017.json); "
                      "open_images (pytorch-ssd's downloader layout)")
    add_argument(syn, "--num-images", type=int, default=1000, help="number of images over all splits")
    add_argument(syn, "--image-size", type=int, default=256, help="long side of the images in pixels")
    add_argument(syn, "--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    add_argument(syn, "--num-classes", type=int, default=5, help=f"number of shape classes (1-{len(SHAPES)})")
    add_argument(syn, "--workers", type=int, default=None,
                 help="drawing processes; None: up to 8 for 64 images or more")

    val = sub.add_parser(
        "validate",
        help="check a VOC, COCO or Open Images folder for unreadable images and bad annotations",
        description="Decode every image fully, as training reads it, and check every annotation (box "
        "outside the image, zero area, unknown class, unparsable XML/JSON/CSV, image size). Prints one "
        "line per problem and exits 1 when there is any, 0 otherwise. A truncated image that still "
        "decodes (most of its rows there: a JPEG short by a few bytes, which training, OpenCV and PIL "
        "use) is a warning, printed as 'warning: FILE: ...', and does not change the exit status unless "
        "--strict; one that cannot be decoded, or whose pixels are mostly missing, is a problem.",
        formatter_class=parser.formatter_class,
    )
    val.add_argument("dirs", nargs="+", metavar="DIR",
                     help="dataset root(s); for COCO also an image folder of the official layout (coco/val2017)")
    add_argument(val, "--dataset-type", default=None, choices=("voc", "coco", "open_images"),
                 help="layout of DIR; None: detected from its folders")
    add_argument(val, "--label-file", default=None,
                 help="class names file to check VOC / Open Images names against; None: DIR/labels.txt when present")
    add_argument(val, "--workers", type=int, default=None, help="checking processes; None: the cores available")
    add_argument(val, "--strict", action="store_true",
                 help="warnings are problems too (exit 1 on a truncated image even when it decodes)")
    add_argument(val, "--no-progress", action="store_true", help="no progress bar")
    return parser


def _synthetic(args) -> int:
    from ..data.synthetic import SHAPES, generate
    from ..io.labels import class_count

    if args.num_images < 1:
        raise SettingsError(f"--num-images should be at least 1, got {args.num_images}")
    if args.image_size < 32:
        raise SettingsError(f"--image-size should be at least 32, got {args.image_size}")
    if not 1 <= args.num_classes <= len(SHAPES):
        raise SettingsError(f"--num-classes should be between 1 and {len(SHAPES)}, got {args.num_classes}")
    try:
        start = time.perf_counter()
        out = generate(
            args.out, format=args.format, num_images=args.num_images, image_size=args.image_size,
            seed=args.seed, num_classes=args.num_classes, workers=args.workers,
        )
    except OSError as exc:  # the output folder cannot be written
        raise DataError.about(args.out, exc.strerror or str(exc), "--out") from None
    print(f"wrote {args.num_images} {args.format} images ({args.image_size} px, {class_count(args.num_classes + 1)}) "
          f"to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _validate(args) -> int:
    from ..data.validate import validate_dataset

    if args.label_file is not None and not os.path.isfile(args.label_file):
        raise DataError(f"--label-file {args.label_file}: no such file")
    total = 0
    for d in args.dirs:
        if not os.path.isdir(d):
            raise DataError(f"{d}: no such directory")
        report = validate_dataset(  # a folder that is no dataset: DataError, one line (run_main)
            d, dataset_type=args.dataset_type, label_file=args.label_file, workers=args.workers,
            progress=not args.no_progress and sys.stderr.isatty(), strict=args.strict,
        )
        for problem in report.problems:
            print(problem)
        for warning in report.warnings:
            print(f"warning: {warning}")
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        print(report.summary())
        total += len(report.problems)
    return 1 if total else 0


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "synthetic":
        return _synthetic(args)
    return _validate(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-data``; returns the exit code (0 fine or only warnings, 1 problems
    found (warnings too with ``--strict``), 2 usage error)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
