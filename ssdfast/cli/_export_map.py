"""``ssdfast-export --check --data DIR``: the PyTorch model's mAP and its export's on DIR's test split,
side by side (:func:`ssdfast.runtimes.map_check.compare_map`); the command fails when they differ by
more than :data:`ssdfast.runtimes.names.MAP_MARGINS`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError, SettingsError
from ._common import dataset_arg

__all__ = ["check_data_flags", "check_map"]


def check_data_flags(args: argparse.Namespace) -> None:
    """``--data``'s flags, checked before anything is written; sets ``args.data_type`` (the folder's layout)."""
    from ..data import detect_layout

    if not args.check:
        raise SettingsError("--data DIR scores the export: add --check")
    if args.format != "jetson":
        raise SettingsError(f"--check --data scores jetson-format exports (the default), not {args.format}")
    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such folder")
    args.data_type = detect_layout(args.data)
    if args.data_type is None:
        raise DataError(f"--data {args.data}: not a VOC, COCO or Open Images data set")


def check_map(args: argparse.Namespace, result: Any, loaded: Any, int8_files: Sequence[Path] = ()) -> bool:
    """``--check --data``: the PyTorch model's mAP and the export's (and its INT8 files', when ``--int8``
    wrote them) on DIR's test split, side by side; False when one differs by more than its margin."""
    from ..detector import Detector
    from ..ops.settings import EVALUATION
    from ..runtimes.map_check import compare_map
    from ..threads import planned_cpu

    dataset = dataset_arg(args.data_type, [args.data], "test", loaded.class_names, None, "--data")
    metric = "coco" if args.data_type == "coco" else "voc"
    with planned_cpu(None) as workers:
        pytorch = Detector(loaded.model, loaded.class_names, "cpu", EVALUATION)
        comparisons = compare_map(pytorch, [result.path, *int8_files], dataset, label_file=result.labels_path,
                                  metric=metric, num_workers=workers)
    for comparison in comparisons:
        print(comparison.summary(), file=sys.stdout if comparison.passed else sys.stderr)
    return all(c.passed for c in comparisons)
