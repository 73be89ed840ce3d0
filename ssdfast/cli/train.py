"""``ssdfast-train``: train SSD / SSD-Lite on VOC, COCO, Open Images or synthetic data.

pytorch-ssd's ``train_ssd.py`` flags work as they are (``--dataset_type voc --datasets A B
--validation_dataset C --net mb2-ssd-lite --scheduler cosine --t_max 100 --lr 0.01``), in either
spelling (``--flag_name`` / ``--flag-name``). ``--config FILE.yaml`` gives settings whose keys are the
flag names; flags on the command line override it. ``ssdfast-train --demo`` trains on generated data.
Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m ssdfast.cli.train ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import UsageError, add_argument, make_parser, positive_int, resolve_device, run_main, str2bool

__all__ = ["main", "build_parser", "parse_args"]

_DATASET_TYPES = ("voc", "coco", "open_images", "synthetic")

_EPILOG = """\
examples:
  ssdfast-train --demo
  ssdfast-train --dataset-type voc --datasets VOC2007 VOC2012 --validation-dataset VOC2007TEST \\
      --net mb1-ssd --pretrained-ssd mobilenet-v1-ssd-mp-0_675.pth --scheduler cosine --lr 0.01 --t-max 100
  ssdfast-train --dataset-type coco --datasets data/coco/train2017 --validation-dataset data/coco/val2017 \\
      --net mb2-ssd-lite --batch-size 64 --amp --num-epochs 200
  ssdfast-train --config run.yaml --lr 0.005            # a flag overrides the YAML file
  ssdfast-train --resume models/last.pth ...             # same flags as the interrupted run
  torchrun --nproc-per-node 4 -m ssdfast.cli.train ...  # one process per GPU

outputs (in --checkpoint-folder): last.pth (every epoch), best.pth (best validation mAP),
labels.txt, train.log, metrics.jsonl, curves.png, tensorboard/ (when tensorboard is installed)
"""






def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-train`` argument parser (defaults follow pytorch-ssd's ``train_ssd.py``)."""
    p = make_parser("ssdfast-train", "Train an SSD / SSD-Lite detector (pytorch-ssd compatible flags).", _EPILOG)

    g = p.add_argument_group("data")
    add_argument(g, "--dataset-type", default="voc", choices=_DATASET_TYPES,
                 help="dataset format: voc (VOCdevkit-style folders), coco (a folder with annotations/*.json "
                      "and images), open_images (pytorch-ssd's open_images_downloader layout), synthetic (generated VOC)")
    add_argument(g, "--datasets", "--data", nargs="+", default=[], metavar="PATH",
                 help="training dataset folder(s); several are concatenated")
    add_argument(g, "--validation-dataset", default=None, metavar="PATH",
                 help="dataset used for validation loss and mAP (its test split)")
    add_argument(g, "--balance-data", action="store_true",
                 help="balance the classes of an Open Images training set (pytorch-ssd's --balance-data)")
    add_argument(g, "--label-file", default=None, metavar="FILE",
                 help="class names file (one per line, BACKGROUND first) restricting/ordering the classes")

    g = p.add_argument_group("network")
    add_argument(g, "--net", default="vgg16-ssd",
                 help="network: vgg16-ssd, vgg16-ssd512, mb1-ssd, mb1-ssd-lite, mb2-ssd-lite, "
                      "mb3-large-ssd-lite, mb3-small-ssd-lite")
    add_argument(g, "--mb2-width-mult", "--width-mult", type=float, default=1.0,
                 help="width multiplier of the MobileNet backbones")
    add_argument(g, "--resolution", type=int, default=None,
                 help="input image size in pixels (square); default: the network's own (300 or 512)")
    add_argument(g, "--zoom-out-max", type=float, default=4.0,
                 help="largest zoom-out of the SSD augmentation, relative to the image (the paper's 4; "
                      "a smaller one suits small inputs and short runs)")
    add_argument(g, "--base-net", default=None, metavar="FILE", help="pretrained base net weights to start from")
    add_argument(g, "--pretrained-ssd", default=None, metavar="FILE",
                 help="pretrained SSD checkpoint to start from (heads of another class count are re-initialised)")
    add_argument(g, "--resume", default=None, metavar="FILE",
                 help="continue the run saved in this checkpoint (last.pth) exactly: weights, optimizer, "
                      "scheduler, scaler, epoch, step, RNG; the run's flags are read from the checkpoint "
                      "(flags given now override them, e.g. a larger --num-epochs)")
    add_argument(g, "--freeze-base-net", action="store_true", help="freeze the base net layers")
    add_argument(g, "--freeze-net", action="store_true", help="freeze all layers except the prediction heads")

    g = p.add_argument_group("optimisation (SGD)")
    add_argument(g, "--lr", "--learning-rate", type=float, default=1e-3, help="initial learning rate (the heads')")
    add_argument(g, "--momentum", type=float, default=0.9, help="SGD momentum")
    add_argument(g, "--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    add_argument(g, "--gamma", type=float, default=0.1, help="lr factor at each multi-step milestone")
    add_argument(g, "--base-net-lr", type=float, default=None, help="initial lr of the base net (default: --lr)")
    add_argument(g, "--extra-layers-lr", type=float, default=None,
                 help="initial lr of the layers between base net and heads (default: --lr)")
    add_argument(g, "--scheduler", default="multi-step", choices=("multi-step", "cosine", "constant"),
                 help="learning-rate schedule")
    add_argument(g, "--milestones", default=None,
                 help="multi-step milestones, comma-separated (epochs, or iterations with --iterations); "
                      "default: 2/3 and 5/6 of the run (pytorch-ssd's 80,100 of 120)")
    add_argument(g, "--t-max", type=float, default=None,
                 help="cosine schedule length (epochs, or iterations with --iterations); default: the run's length")
    add_argument(g, "--warmup", type=int, default=0, help="linear learning-rate warmup, in iterations")
    add_argument(g, "--grad-clip", type=float, default=None, help="clip the gradient norm to this value")
    add_argument(g, "--batch-size", type=positive_int, default=32, help="images per batch (per process)")
    add_argument(g, "--num-epochs", "--epochs", type=int, default=120, help="number of epochs")
    add_argument(g, "--iterations", type=int, default=None,
                 help="train this many iterations instead of --num-epochs")

    g = p.add_argument_group("running")
    add_argument(g, "--num-workers", "--workers", type=int, default=4, help="data loading worker processes")
    add_argument(g, "--validation-epochs", type=positive_int, default=5,
                 help="validate (loss and mAP) every this many epochs, and after the last")
    add_argument(g, "--debug-steps", type=positive_int, default=100, help="log the training loss every this many steps")
    add_argument(g, "--use-cuda", type=str2bool, nargs="?", const=True, default=None, metavar="BOOL",
                 help="use CUDA when available (pytorch-ssd's flag; --device is the general one)")
    add_argument(g, "--device", default="auto", help="device: auto, cpu, cuda, cuda:1 ...")
    add_argument(g, "--checkpoint-folder", "--model-dir", default="models", metavar="DIR",
                 help="folder for checkpoints, labels.txt, train.log, metrics.jsonl, curves.png")
    add_argument(g, "--checkpoint-every-steps", type=int, default=None, metavar="N",
                 help="also write last.pth every N steps inside an epoch (a killed run then loses at most N steps)")
    add_argument(g, "--amp", nargs="?", const="auto", default=None, choices=("auto", "bf16", "fp16", "none"),
                 help="mixed precision: --amp alone is bf16 on CPU and fp16 (with a GradScaler) on CUDA")
    add_argument(g, "--compile", action="store_true", help="torch.compile the model")
    add_argument(g, "--channels-last", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                 help="train in the channels-last memory format (default true: 1.2-1.7x faster steps on CPU, "
                      "the fast layout for AMP on GPUs); --channels-last false keeps NCHW")
    add_argument(g, "--seed", type=int, default=0, help="random seed (data order, augmentation, initialisation)")
    add_argument(g, "--max-nonfinite-steps", type=positive_int, default=10,
                 help="stop after this many steps in a row with a NaN/inf loss (each one is skipped)")
    add_argument(g, "--metric", default="auto", choices=("auto", "voc", "coco"),
                 help="validation mAP: auto is COCO AP for --dataset-type coco, VOC mAP@0.5 otherwise")
    add_argument(g, "--no-progress", dest="progress", action="store_false",
                 help="no progress bar (it is also off when stderr is not a terminal)")
    add_argument(g, "--config", default=None, metavar="FILE.yaml",
                 help="YAML file of settings (keys are flag names: net, lr, batch_size ...); flags override it")

    g = p.add_argument_group("demo")
    add_argument(g, "--demo", action="store_true",
                 help="generate a synthetic dataset, train on it, evaluate and draw the detections (CPU, ~7 min)")
    add_argument(g, "--output", default="demo-output", metavar="DIR", help="folder of the demo's data and results")
    return p


def _raise_usage(message: str) -> None:
    raise UsageError(message)


def _flag_to_action(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every spelling of every flag (without dashes, '-' as '_') -> its action."""
    table: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of actions
        for option in action.option_strings:
            if option.startswith("--"):
                table[option[2:].replace("-", "_")] = action
    return table


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Read ``--config FILE.yaml`` into parser defaults (validated like command-line values)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values, got a {type(data).__name__}")
    actions = _flag_to_action(parser)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        action = actions.get(name)
        if action is None or name in ("config", "help"):
            raise UsageError(f"--config {path}: unknown setting {key!r} (settings are flag names such as net, lr, batch_size)")
        try:
            defaults[action.dest] = _config_value(action, value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise UsageError(f"--config {path}: {key}: {exc}") from None
    return defaults


def _config_value(action: argparse.Action, value: Any) -> Any:
    """A YAML value converted and checked as argparse would the same text on the command line."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        # store_false flags (--no-progress) keep the positive meaning of their dest in YAML too
        return value

    def convert(item: Any) -> Any:
        if isinstance(item, (list, dict)):
            raise ValueError(f"expected a single value, got {item!r}")
        text = item if isinstance(item, str) else str(item)
        if isinstance(item, bool) and action.type is not str2bool:
            text = str(item).lower()
        converted = action.type(text) if action.type is not None else text
        if action.choices is not None and converted not in action.choices:
            raise ValueError(f"{converted!r} is not one of {', '.join(map(str, action.choices))}")
        return converted

    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [convert(item) for item in items]
    if action.dest == "milestones" and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return convert(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line (and ``--config`` file) -> namespace. Mistakes raise :class:`UsageError`."""
    parser = build_parser()
    parser.error = _raise_usage  # type: ignore[method-assign]  # one line, no usage dump
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_argument(pre, "--config", default=None)
    add_argument(pre, "--resume", default=None)
    known, _ = pre.parse_known_args(argv)
    # precedence: command line > --config file > the resumed checkpoint's settings > defaults
    from_config = _config_defaults(parser, known.config) if known.config else {}
    resume = known.resume or from_config.get("resume")
    if resume:
        parser.set_defaults(**_resume_defaults(parser, resume))
    parser.set_defaults(**from_config)
    return parser.parse_args(argv)


# Settings of the interrupted run that a resumed run does not inherit: where and how it runs.
_NOT_RESUMED = {"resume", "config", "device", "use_cuda", "progress", "demo", "output", "help"}


def _resume_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The interrupted run's settings (stored in the checkpoint) as defaults, so ``--resume last.pth``
    alone continues it; flags given now (and ``--config``) override them."""
    if not Path(path).is_file():
        return {}  # the trainer reports the missing file
    from ..checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise UsageError(f"--resume: {exc}") from None
    saved = (ckpt.get("train_state") or {}).get("args") or {}
    dests = {action.dest for action in parser._actions}
    return {k: v for k, v in saved.items() if k in dests and k not in _NOT_RESUMED}


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device, args.use_cuda)
    if args.demo:
        from ..demo import run_demo

        run_demo(args.output, device=str(device), seed=args.seed)
        return 0

    from ..engine.trainer import ConfigError, NonFiniteLossError, TrainConfig, train

    try:
        from ..data import DataError
    except ImportError:  # pragma: no cover - the data package is always there once installed
        DataError = ConfigError  # type: ignore[misc,assignment]
    config = TrainConfig.from_mapping(vars(args))
    config.device = str(device)
    try:
        train(config)
    except (ConfigError, DataError) as exc:
        raise UsageError(str(exc)) from None
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-train``; returns the exit status (2 for a usage mistake)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
