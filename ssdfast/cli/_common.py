"""Helpers shared by the command lines: both flag spellings, user errors printed as one line, the
model-file and post-processing flags."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import DataError, SettingsError, UserError, one_line
from ..ops.settings import PostprocessSettings, check_fraction

if TYPE_CHECKING:
    from ..detector import Detector
    from ..model_files import LoadedModel, ModelFile

__all__ = [
    "make_parser",
    "add_argument",
    "run_main",
    "str2bool",
    "positive_int",
    "non_negative_int",
    "fraction",
    "add_postprocess_arguments",
    "postprocess_settings",
    "add_model_file_arguments",
    "load_model_arg",
    "add_runtime_arguments",
    "load_detector_arg",
    "dataset_arg",
]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def make_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser that shows defaults in ``--help`` and keeps the description's layout."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=_HelpFormatter)


def str2bool(value: str) -> bool:
    """argparse type for true/false flag values (1/0, yes/no, on/off too), as pytorch-ssd's."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _int_at_least(value: str, low: int, wording: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be {wording}, got {value!r}") from None
    if number < low:
        raise argparse.ArgumentTypeError(f"should be {wording}, got {value!r}")
    return number


def positive_int(value: str) -> int:
    """argparse type for an integer >= 1."""
    return _int_at_least(value, 1, "a positive integer")


def non_negative_int(value: str) -> int:
    """argparse type for an integer >= 0 (e.g. data workers: 0 loads in the main process)."""
    return _int_at_least(value, 0, "an integer >= 0")


def fraction(value: str) -> float:
    """argparse type for a number in [0, 1] (e.g. ssdfast-eval's matching ``--iou-threshold``)."""
    try:
        return check_fraction("the value", value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _spellings(flags: Sequence[str]) -> list[str]:
    """``--dataset-type`` -> [``--dataset-type``, ``--dataset_type``] (and the reverse), in order."""
    out: list[str] = []
    for flag in flags:
        variants = [flag]
        if flag.startswith("--"):
            body = flag[2:]
            variants += ["--" + body.replace("_", "-"), "--" + body.replace("-", "_")]
        for v in variants:
            if v not in out:
                out.append(v)
    return out


def add_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, **kwargs):
    """``parser.add_argument`` that accepts both ``--flag-name`` and ``--flag_name``.

    The first flag gives the destination name (dashes become underscores) unless ``dest`` is given;
    only the first spelling of each alias is shown in ``--help``.
    """
    if flags and flags[0].startswith("-"):
        if "dest" not in kwargs and flags[0].startswith("--"):
            kwargs["dest"] = flags[0][2:].replace("-", "_")
        return parser.add_argument(*_spellings(flags), **kwargs)
    return parser.add_argument(*flags, **kwargs)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's body; a problem the user can fix (:class:`ssdfast.errors.UserError`: a data or
    model file, a setting, a missing package) is printed once, as ``error: <one line>`` on stderr, and
    exits 2. ``KeyboardInterrupt`` exits 130 with one line. Anything else is a bug and keeps its
    traceback.
    """
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {one_line(exc, limit=None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_model_file_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags that describe a model file, as pytorch-ssd names them: what a pytorch-ssd ``.pth``
    needs to load (its network, class names, width and input size), checked against an ssdfast
    checkpoint, which carries them."""
    add_argument(parser, "--net", default=None,
                 help="network name (vgg16-ssd, mb1-ssd, mb1-ssd-lite, mb2-ssd-lite, mb3-large-ssd-lite, ...) of a "
                      "pytorch-ssd .pth: read off the file's layers when left out; an ssdfast checkpoint carries it "
                      "(checked when given)")
    add_argument(parser, "--label-file", "--labels", default=None, metavar="FILE",
                 help="class names (one per line with or without BACKGROUND first, or comma-separated): "
                      "for a pytorch-ssd .pth, default labels.txt beside it; for a checkpoint, they rename its classes")
    add_argument(parser, "--mb2-width-mult", "--width-mult", type=float, default=None, metavar="W",
                 help="MobileNet width multiplier of a pytorch-ssd .pth (default 1.0); a checkpoint carries it")
    add_argument(parser, "--resolution", type=int, default=None, metavar="PIXELS",
                 help="input size of a pytorch-ssd .pth (default: the network's, 300 or 512); a checkpoint carries it")


def load_model_arg(source: "str | ModelFile", args: argparse.Namespace, device: Any = "cpu",
                   flag: str = "--trained-model") -> "LoadedModel":
    """The model file ``source`` (given with ``flag``; a path or the file already read) read with the flags
    of :func:`add_model_file_arguments`. A file that does not load raises
    :class:`~ssdfast.errors.ModelFileError` naming ``flag`` and the file (:func:`run_main` prints it)."""
    from ..model_files import load_model_file

    return load_model_file(source, flag=flag, net=getattr(args, "net", None),
                           label_file=getattr(args, "label_file", None),
                           width_mult=getattr(args, "mb2_width_mult", None),
                           resolution=getattr(args, "resolution", None), device=device)


def add_runtime_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--runtime`` and ``--preprocess``: where the network runs and how images are fed to it
    (:func:`ssdfast.load_detector`)."""
    from ..runtimes.names import CPU_DEFAULT, PREPROCESSES, RUNTIMES

    add_argument(parser, "--runtime", default=None, choices=RUNTIMES,
                 help="where the network runs: torch, onnxruntime, openvino (CPU) or tensorrt (GPU); a .pth is "
                      "exported on the fly and cached for the others. Default: onnxruntime for a .onnx, openvino "
                      f"for a .xml; for a .pth, {CPU_DEFAULT} on a CPU (the fastest measured, see the README) and "
                      "torch on a GPU")
    add_argument(parser, "--preprocess", default="ssdfast", choices=PREPROCESSES,
                 help="ssdfast: the model's own resize and normalization; detectnet: as jetson-inference's "
                      "detectNet feeds an exported model (nearest-neighbour resize, (pixel/255 - 0.5)/0.5), "
                      "the input a Jetson gives it")


def load_detector_arg(source: str, args: argparse.Namespace, device: Any, settings: PostprocessSettings,
                      flag: str) -> "Detector":
    """:func:`ssdfast.load_detector` of the model file ``source`` (given with ``flag``) with the flags of
    :func:`add_model_file_arguments` and :func:`add_runtime_arguments`. Its errors name ``flag`` and the
    file (a file that cannot be used), the package to install (a runtime not installed) or ``--runtime``
    (a runtime that cannot run here); :func:`run_main` prints them."""
    from ..runtimes.load import load_detector

    return load_detector(source, runtime=args.runtime, preprocess=args.preprocess, settings=settings,
                         device=device, net=getattr(args, "net", None), label_file=getattr(args, "label_file", None),
                         width_mult=getattr(args, "mb2_width_mult", None),
                         resolution=getattr(args, "resolution", None), flag=flag)


def dataset_arg(dataset_type: str, paths: Sequence[str], split: str, class_names: Sequence[str],
                label_file: str | None, flag: str) -> Any:
    """The data set at ``paths`` (given with ``flag``) read with a model's ``class_names``, in the model's
    order (or with ``label_file``'s names, which must be the model's); a :class:`~ssdfast.errors.DataError`
    when it cannot be read, its classes differ from the model's or the split has no image."""
    import os
    import tempfile

    from ..data import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        if label_file is None:  # read the dataset with the model's classes, in the model's order
            label_file = os.path.join(tmp, "labels.txt")
            with open(label_file, "w", encoding="utf-8") as f:
                f.write("\n".join(class_names) + "\n")
        dataset = build_dataset(dataset_type, list(paths), split=split, label_file=label_file)
    if list(dataset.class_names) != list(class_names):
        raise DataError(f"the dataset's classes {dataset.class_names} differ from the model's {list(class_names)}")
    if len(dataset) == 0:
        raise DataError(f"{flag} {' '.join(paths)}: no images in split {split!r}")
    return dataset


#: Each post-processing setting: its flag by default, its argparse type and its help (written once).
_POSTPROCESS_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "score_threshold": ("--score-threshold", float, "lowest class probability kept as a detection, in [0, 1]"),
    "iou_threshold": ("--iou-threshold", float,
                      "NMS IoU threshold, in [0, 1]: within a class, a box is dropped when its IoU with a kept, "
                      "higher-scoring box is above this"),
    "top_k": ("--top-k", int,
              "candidates per class before NMS (pytorch-ssd's predictor top_k), so also the most detections "
              "one class keeps"),
    "max_detections": ("--max-detections", int, "most detections kept per image, all classes together"),
}
#: Where a parser built by add_postprocess_arguments keeps the flag shown for each setting.
_FLAGS_DEST = "_postprocess_flags"


def add_postprocess_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                              defaults: PostprocessSettings,
                              flags: Mapping[str, Sequence[str]] | None = None) -> None:
    """The four post-processing flags (:class:`ssdfast.ops.PostprocessSettings`'s fields), their
    defaults from ``defaults``; ``flags`` gives a command's own spellings of some of them (e.g.
    ``{"iou_threshold": ("--nms-iou-threshold",)}``). Each destination is the field's name;
    :func:`postprocess_settings` builds the value."""
    shown = {}
    for field, (flag, kind, text) in _POSTPROCESS_FLAGS.items():
        spellings = tuple((flags or {}).get(field, (flag,)))
        add_argument(parser, *spellings, dest=field, type=kind, default=getattr(defaults, field), help=text)
        shown[field] = spellings[0]
    parser.set_defaults(**{_FLAGS_DEST: shown})


def postprocess_settings(args: argparse.Namespace) -> PostprocessSettings:
    """The :class:`~ssdfast.ops.PostprocessSettings` of the flags :func:`add_postprocess_arguments`
    declared; a value out of range is a :class:`~ssdfast.errors.SettingsError` naming its flag."""
    shown: dict[str, str] = getattr(args, _FLAGS_DEST)
    settings = PostprocessSettings()
    for field, flag in shown.items():  # one at a time, so that an error names its flag
        try:
            settings = dataclasses.replace(settings, **{field: getattr(args, field)})
        except ValueError as exc:
            message = str(exc)  # "<field> should be ...": said of the flag instead
            said = flag + message[len(field):] if message.startswith(field) else f"{flag}: {message}"
            raise SettingsError(said) from None
    return settings
