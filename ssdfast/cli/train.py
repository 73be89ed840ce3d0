"""``ssdfast-train``: train SSD / SSD-Lite on VOC, COCO, Open Images or synthetic data.

pytorch-ssd's ``train_ssd.py`` flags work as they are (``--dataset_type voc --datasets A B
--validation_dataset C --net mb2-ssd-lite --scheduler cosine --t_max 100 --lr 0.01``), in either
spelling (``--flag_name`` / ``--flag-name``). ``--config FILE.yaml`` gives settings whose keys are the
flag names; flags on the command line override it. ``ssdfast-train --demo`` trains on generated data.
Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m ssdfast.cli.train ...``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError
from ._common import add_argument, make_parser, positive_int, run_main, str2bool

if TYPE_CHECKING:
    from ..engine import TrainConfig

__all__ = ["main", "build_parser", "parse_args", "config_from_args"]

_EPILOG = """\
examples:
  ssdfast-train --demo
  ssdfast-train --dataset-type=voc --data=data/fruit --model-dir=models/fruit --net mb1-ssd \\
      --pretrained-ssd models/mobilenet-v1-ssd-mp-0_675.pth      # jetson-inference's path (validates on test.txt)
  ssdfast-train --dataset-type voc --datasets VOC2007 VOC2012 --validation-dataset VOC2007TEST \\
      --net mb1-ssd --pretrained-ssd mobilenet-v1-ssd-mp-0_675.pth --scheduler cosine --lr 0.01 --t-max 100
  ssdfast-train --dataset-type coco --datasets data/coco/train2017 --validation-dataset data/coco/val2017 \\
      --net mb2-ssd-lite --batch-size 64 --amp --num-epochs 200
  ssdfast-train --config run.yaml --lr 0.005            # a flag overrides the YAML file
  ssdfast-train --resume models/last.pth                # continue a stopped run (its settings are in the file)
  ssdfast-train --resume models/last.pth --num-epochs 200   # ... and train it longer
  torchrun --nproc-per-node 4 -m ssdfast.cli.train ...  # one process per GPU

outputs (in --checkpoint-folder): last.pth (every epoch, and when stopped by Ctrl-C / SIGTERM), best.pth
(best validation mAP), labels.txt, train.log, metrics.jsonl, curves.png, tensorboard/ (when tensorboard is
installed). A previous run's files found there move to previous-runs/<time>/.
"""

# Flags of the command line only (not training settings): name -> (group, add_argument keywords)
_CLI_ONLY: dict[str, tuple[str, dict[str, Any]]] = {
    "config": ("running", dict(default=None, metavar="FILE.yaml",
                               help="YAML file of settings (keys are flag names: net, lr, batch_size ...); "
                                    "flags given on the command line override it")),
    "demo": ("demo", dict(action="store_true", default=False,
                          help="generate a synthetic dataset, train on it, evaluate and draw the detections "
                               "(CPU, ~5 min)")),
    "output": ("demo", dict(default="demo-output", metavar="DIR", help="folder of the demo's data and results")),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each setting's default, or how it is decided when that happens at run time (the
    setting's ``Flag.shown_default``, kept on its action by :func:`_build`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = getattr(action, "shown_default", None)
        if shown is not None:
            return f"{action.help} (default: {shown()})"
        if action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0:
            return action.help  # nothing to show, or a switch (its default is its absence)
        return super()._get_help_string(action)


def _setting_arguments(flag: Any, name: str, default: Any) -> tuple[list[str], dict[str, Any]]:
    """The flag names and ``add_argument`` keywords of one setting (a :class:`~ssdfast.engine.settings.Flag`)."""
    names = [flag.name or "--" + name.replace("_", "-"), *flag.aliases]
    kw: dict[str, Any] = {"dest": name, "default": default, "help": flag.help}
    kind = flag.kind
    if kind == "switch":
        kw["action"] = "store_true"
    elif kind == "off_switch":
        kw["action"] = "store_false"
    else:
        kw["type"] = {"int": int, "count": positive_int, "float": float, "bool": str2bool}.get(kind)
        if kind == "paths":
            kw["nargs"] = "+"
        elif kind == "bool":
            kw["nargs"], kw["const"] = "?", True
        elif kind == "optional":
            kw["nargs"], kw["const"] = "?", flag.const
        if flag.choices is not None:
            kw["choices"] = flag.choices
        if flag.metavar is not None:
            kw["metavar"] = flag.metavar
    return names, {k: v for k, v in kw.items() if v is not None or k == "default"}


def _build(suppress_defaults: bool) -> argparse.ArgumentParser:
    from ..engine.settings import GROUPS, TrainConfig, flag_of_field

    p = make_parser("ssdfast-train", "Train an SSD / SSD-Lite detector (pytorch-ssd and jetson-inference "
                    "train_ssd.py flags).", _EPILOG)
    p.formatter_class = _HelpFormatter
    groups = {name: p.add_argument_group(name) for name in (*GROUPS, "demo")}
    for f in dataclasses.fields(TrainConfig):
        flag = flag_of_field(f)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        names, kw = _setting_arguments(flag, f.name, argparse.SUPPRESS if suppress_defaults else default)
        add_argument(groups[flag.group], *names, **kw).shown_default = flag.shown_default
    for name, (group, kw) in _CLI_ONLY.items():
        kw = dict(kw, dest=name)
        if suppress_defaults:
            kw["default"] = argparse.SUPPRESS
        add_argument(groups[group], "--" + name, **kw)
    p.error = _raise_usage  # type: ignore[method-assign]  # one line, no usage dump
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-train`` argument parser, generated from :class:`~ssdfast.engine.TrainConfig`'s
    fields (defaults follow pytorch-ssd's ``train_ssd.py``)."""
    return _build(suppress_defaults=False)


def _raise_usage(message: str) -> None:
    raise SettingsError(message)


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
        raise SettingsError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SettingsError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"--config {path}: expected a mapping of flag names to values, got a {type(data).__name__}")
    actions = _flag_to_action(parser)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        action = actions.get(name)
        if action is None or name in ("config", "help"):
            raise SettingsError(f"--config {path}: unknown setting {key!r} (settings are flag names such as net, lr, "
                                "batch_size)")
        try:
            defaults[action.dest] = _config_value(action, value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise SettingsError(f"--config {path}: {key}: {exc}") from None
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


def _given(argv: list[str] | None) -> dict[str, Any]:
    """The settings given explicitly: on the command line, over those of ``--config``."""
    parser = _build(suppress_defaults=True)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_argument(pre, "--config", default=None)
    known, _ = pre.parse_known_args(argv)
    from_config = _config_defaults(parser, known.config) if known.config else {}
    return {**from_config, **vars(parser.parse_args(argv))}


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    given = _given(argv)
    defaults = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    return argparse.Namespace(**{**defaults, **given}), given


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line (and ``--config`` file) -> namespace of every setting (defaults where not given).
    Mistakes raise :class:`SettingsError`. A resumed run's saved settings are not in it:
    :func:`config_from_args` adds them."""
    return _parse(argv)[0]


def config_from_args(argv: list[str] | None = None) -> "TrainConfig":
    """The training settings of a command line: flags given > ``--config`` file > the resumed run's
    settings (``--resume``, through :meth:`~ssdfast.engine.TrainConfig.resumed_from`, as the Python API
    does) > defaults. Mistakes raise :class:`~ssdfast.errors.SettingsError`; a missing or unreadable
    ``--resume`` file a :class:`~ssdfast.errors.ModelFileError`."""
    return _config_from_given(_given(argv))


def _config_from_given(given: dict[str, Any]) -> "TrainConfig":
    from ..engine import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in given.items() if k in names}
    if settings.get("resume"):
        return TrainConfig.resumed_from(settings.pop("resume"), **settings)
    return TrainConfig(**settings)


def _main(argv: list[str] | None) -> int:
    args, given = _parse(argv)
    if args.demo:
        from ..demo import run_demo
        from ..device import resolve_device

        run_demo(args.output, device=str(resolve_device(args.device, args.use_cuda)), seed=args.seed)
        return 0

    from ..engine import NonFiniteLossError, TrainingInterrupted, train

    try:
        train(_config_from_given(given))
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:  # saved last.pth; the resume command is in the log
        return 128 + exc.signal_number
    except KeyboardInterrupt:  # stopped at once; the log says which checkpoint to resume from
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-train``; returns the exit status (2 for a usage mistake, 1 for a run
    stopped by non-finite losses, 128 + the signal for a run stopped by Ctrl-C / SIGTERM)."""
    from ..threads import quiet_openmp

    quiet_openmp()  # before torch is imported: OpenMP threads then sleep instead of spinning
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
