"""Every training setting, declared once: :class:`TrainConfig`.

Each field carries, besides its default, what the command line needs to offer it (a :class:`Flag`
in the field's metadata): its help, its group in ``--help``, its other spellings (pytorch-ssd's and
jetson-inference's), its choices and how it is parsed. ``ssdfast-train`` builds its parser from these
fields (``ssdfast/cli/train.py``), so a setting is added, renamed or documented in this file only.

Resuming: :meth:`TrainConfig.resumed_from` is the one place that restores a run's settings from its
checkpoint, for the command line and the Python API alike (see its docstring for the precedence).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data import DATASET_TYPES
from ..errors import SettingsError

if TYPE_CHECKING:
    from ..model_files import ModelFile

__all__ = [
    "Flag",
    "TrainConfig",
    "SCHEDULERS",
    "AMP_MODES",
    "METRICS",
    "LOG_LEVELS",
    "GROUPS",
    "flag_of",
    "JETSON_PRETRAINED",
    "JETSON_PRETRAINED_URL",
]

SCHEDULERS = ("multi-step", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "none")
METRICS = ("auto", "voc", "coco")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Groups of ``ssdfast-train --help``, in order.
GROUPS = ("data", "network", "optimisation (SGD)", "running")
#: ``--validation-dataset`` / ``--pretrained-ssd`` values that turn validation / the pretrained model off.
NO_VALIDATION = ("none", "off")
#: jetson-inference's ``train_ssd.py`` starts mb1-ssd from this file (its tutorials download it there).
JETSON_PRETRAINED = "models/mobilenet-v1-ssd-mp-0_675.pth"
#: Where jetson-inference's "Re-training SSD-Mobilenet" tutorial downloads :data:`JETSON_PRETRAINED` from.
JETSON_PRETRAINED_URL = "https://nvidia.box.com/shared/static/djf5w54rjvpqocsiztzaandq1m3avr7c.pth"


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line (the metadata of a :class:`TrainConfig` field).

    Attributes:
        help: the ``--help`` text.
        group: one of :data:`GROUPS`.
        kind: how the value is parsed: ``text``, ``int``, ``count`` (an int >= 1), ``float``,
            ``switch`` (present = True), ``off_switch`` (present = False, e.g. ``--no-progress``),
            ``bool`` (``--x``, ``--x true``, ``--x false``), ``paths`` (one or more values), or
            ``optional`` (``--x`` alone means ``const``, ``--x VALUE`` a value).
        aliases: other flag names (``--epochs`` for ``--num-epochs``); each is also accepted with
            ``_`` for ``-`` and the reverse, as the main name is.
        name: the flag when it is not ``--<field-name>`` (``--no-progress`` for ``progress``).
        choices: the accepted values.
        metavar: the value's name in ``--help``.
        const: the value of an ``optional`` flag given alone.
        inherit: a resumed run takes this setting from its checkpoint (False for where and how a run
            executes: device, workers, console).
        shown_default: a function giving the default as ``--help`` shows it, when the field's
            default (None) means "decided at run time".
    """

    help: str
    group: str
    kind: str = "text"
    aliases: tuple[str, ...] = ()
    name: str | None = None
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    const: Any = None
    inherit: bool = True
    shown_default: Callable[[], str] | None = None


def _setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **flag: Any) -> Any:
    return field(default=default, default_factory=factory, metadata={"flag": Flag(**flag)})


def _workers_shown() -> str:
    from ..threads import available_cores, default_num_workers

    return f"{default_num_workers()}, sized from the {available_cores()} cores this process may use"


@dataclass
class TrainConfig:
    """Every training setting; the field names are the ``ssdfast-train`` flag names (``--net`` -> ``net``).

    ``num_epochs`` or ``iterations`` sets the length. With ``iterations``, ``milestones``, ``t_max``
    count iterations; otherwise they count epochs (as in pytorch-ssd). ``warmup`` counts iterations.
    ``check()`` raises :class:`SettingsError` (naming the flag) for settings that cannot work.
    """

    # ------------------------------------------------------------------------------------ data
    dataset_type: str = _setting(
        "voc", group="data", choices=DATASET_TYPES,
        help="dataset format: voc (VOCdevkit-style folders), coco (the official layout: "
             "annotations/instances_<split>.json beside the image folders, or a folder holding annotations/*.json "
             "and the images), open_images (pytorch-ssd's open_images_downloader layout), synthetic (generated VOC)")
    datasets: list[str] = _setting(
        factory=list, group="data", kind="paths", aliases=("--data",), metavar="PATH",
        help="training dataset folder(s); several are concatenated")
    validation_dataset: str | None = _setting(
        None, group="data", metavar="PATH",
        help="dataset for the validation loss and mAP (its test split). Default: the training dataset's own "
             "test split when it has one (VOC ImageSets/Main/test.txt, COCO val, Open Images test), as "
             "jetson-inference's train_ssd.py does; 'none': no validation")
    balance_data: bool = _setting(
        False, group="data", kind="switch",
        help="balance the classes of an Open Images training set (pytorch-ssd's --balance-data)")
    label_file: str | None = _setting(
        None, group="data", metavar="FILE",
        help="class names file (one per line, BACKGROUND first) restricting/ordering the classes")
    strict: bool = _setting(
        False, group="data", kind="switch",
        help="warnings become errors: stop at the first image that is truncated (otherwise used with a "
             "warning), unreadable (otherwise skipped) or badly annotated, naming the file")

    # --------------------------------------------------------------------------------- network
    net: str = _setting(
        "mb1-ssd", group="network",
        help="network: vgg16-ssd, vgg16-ssd512, mb1-ssd, mb1-ssd-lite, mb2-ssd-lite, mb3-large-ssd-lite, "
             "mb3-small-ssd-lite (default: jetson-inference's)")
    conv4_3_norm: str | None = _setting(
        None, group="network", choices=("batchnorm", "l2norm"),
        help="vgg16-ssd(512): the layer between conv4_3 and its head: batchnorm (pytorch-ssd's, the default) "
             "or l2norm (the SSD paper's). Default: the --resume / --pretrained-ssd file's, else batchnorm")
    backbone: str | None = _setting(
        None, group="network", choices=("pytorch-ssd", "torchvision"),
        help="mb2-ssd-lite, mb3-*-ssd-lite: pytorch-ssd's MobileNet (the default) or torchvision's (whose "
             "ImageNet weights --base-net takes). Default: the --resume / --pretrained-ssd file's, else pytorch-ssd")
    mb2_width_mult: float = _setting(
        1.0, group="network", kind="float", aliases=("--width-mult",),
        help="width multiplier of the MobileNet backbones")
    resolution: int | None = _setting(
        None, group="network", kind="int",
        help="input image size in pixels (square); default: the network's own (300 or 512)")
    zoom_out_max: float = _setting(
        4.0, group="network", kind="float",
        help="largest zoom-out of the SSD augmentation, relative to the image (the paper's 4; a smaller one "
             "suits small inputs and short runs)")
    base_net: str | None = _setting(
        None, group="network", metavar="FILE", help="pretrained base net weights to start from")
    pretrained_ssd: str | None = _setting(
        None, group="network", metavar="FILE",
        help="pretrained SSD to start from: an ssdfast checkpoint or a pytorch-ssd .pth (heads of another "
             f"class count are re-initialised). Default, as jetson-inference's train_ssd.py: {JETSON_PRETRAINED} "
             "when that file exists and --net is mb1-ssd (with no --base-net / --resume); 'none': start from scratch")
    resume: str | None = _setting(
        None, group="network", metavar="FILE", inherit=False,
        help="continue the run saved in this checkpoint (DIR/last.pth) exactly: weights, optimizer, scheduler, "
             "scaler, epoch, step, RNG; the run's settings are read from it (flags given now override them, "
             "e.g. a larger --num-epochs). A pytorch-ssd .pth (no training state) loads all its weights and "
             "trains from epoch 0, as pytorch-ssd's --resume does")
    freeze_base_net: bool = _setting(False, group="network", kind="switch", help="freeze the base net layers")
    freeze_net: bool = _setting(
        False, group="network", kind="switch", help="freeze all layers except the prediction heads")

    # ---------------------------------------------------------------------------- optimisation
    lr: float = _setting(
        0.01, group="optimisation (SGD)", kind="float", aliases=("--learning-rate",),
        help="initial learning rate (the heads')")
    momentum: float = _setting(0.9, group="optimisation (SGD)", kind="float", help="SGD momentum")
    weight_decay: float = _setting(5e-4, group="optimisation (SGD)", kind="float", help="SGD weight decay")
    gamma: float = _setting(
        0.1, group="optimisation (SGD)", kind="float", help="lr factor at each multi-step milestone")
    base_net_lr: float | None = _setting(
        0.001, group="optimisation (SGD)", kind="float", help="initial lr of the base net")
    extra_layers_lr: float | None = _setting(
        None, group="optimisation (SGD)", kind="float",
        help="initial lr of the layers between base net and heads (default: --lr)")
    scheduler: str = _setting(
        "cosine", group="optimisation (SGD)", choices=SCHEDULERS, help="learning-rate schedule")
    milestones: list[int] | str | None = _setting(
        None, group="optimisation (SGD)",
        help="multi-step milestones, comma-separated (epochs, or iterations with --iterations); default: 2/3 "
             "and 5/6 of the run (pytorch-ssd's 80,100 of 120)")
    t_max: float | None = _setting(
        None, group="optimisation (SGD)", kind="float",
        help="cosine schedule length (epochs, or iterations with --iterations); default: the run's length")
    warmup: int = _setting(
        0, group="optimisation (SGD)", kind="int", help="linear learning-rate warmup, in iterations")
    grad_clip: float | None = _setting(
        None, group="optimisation (SGD)", kind="float", help="clip the gradient norm to this value")
    batch_size: int = _setting(
        4, group="optimisation (SGD)", kind="count", help="images per batch (per process)")
    num_epochs: int | None = _setting(
        30, group="optimisation (SGD)", kind="int", aliases=("--epochs",), help="number of epochs")
    iterations: int | None = _setting(
        None, group="optimisation (SGD)", kind="int", help="train this many iterations instead of --num-epochs")

    # --------------------------------------------------------------------------------- running
    num_workers: int | None = _setting(
        None, group="running", kind="int", aliases=("--workers",), inherit=False, shown_default=_workers_shown,
        help="data loading worker processes (validation uses as many); the network gets the cores they "
             "leave (ssdfast.threads)")
    validation_epochs: int = _setting(
        1, group="running", kind="count",
        help="validate (loss and mAP) every this many epochs, and after the last")
    validation_mean_ap: bool = _setting(
        False, group="running", kind="switch",
        help="accepted for jetson-inference's train_ssd.py, whose validation computes mAP only with it; "
             "ssdfast's validation always computes mAP")
    debug_steps: int = _setting(
        10, group="running", kind="count", help="log the training loss every this many steps")
    use_cuda: bool | None = _setting(
        None, group="running", kind="bool", inherit=False, metavar="BOOL",
        help="use CUDA when available (pytorch-ssd's flag; --device is the general one)")
    device: str = _setting(
        "auto", group="running", inherit=False, help="device: auto, cpu, cuda, cuda:1 ...")
    checkpoint_folder: str = _setting(
        "models", group="running", aliases=("--model-dir",), metavar="DIR",
        help="folder for checkpoints, labels.txt, train.log, metrics.jsonl, curves.png. A new run moves a "
             "previous run's files found there into DIR/previous-runs/<time>/ (nothing is deleted)")
    checkpoint_every_steps: int | None = _setting(
        None, group="running", kind="int", metavar="N",
        help="also write last.pth every N steps inside an epoch (a killed run then loses at most N steps)")
    amp: str | None = _setting(
        None, group="running", kind="optional", const="auto", choices=AMP_MODES,
        help="mixed precision: --amp alone is bf16 on CPU and fp16 (with a GradScaler) on CUDA")
    compile: bool = _setting(False, group="running", kind="switch", help="torch.compile the model")
    channels_last: bool | None = _setting(
        None, group="running", kind="bool", metavar="BOOL",
        help="train in the channels-last memory format (true) or NCHW (false). Default: channels-last on GPUs; on "
             "a CPU the faster of the two for this network on this processor, measured before training (a few "
             "forward and backward passes of 2 images; logged, and kept by --resume)")
    seed: int = _setting(
        0, group="running", kind="int", help="random seed (data order, augmentation, initialisation)")
    max_nonfinite_steps: int = _setting(
        10, group="running", kind="count",
        help="stop after this many steps in a row with a NaN/inf loss (each one is skipped)")
    metric: str = _setting(
        "auto", group="running", choices=METRICS,
        help="validation mAP: auto is COCO AP for --dataset-type coco, VOC mAP@0.5 otherwise")
    progress: bool = _setting(
        True, group="running", kind="off_switch", name="--no-progress", inherit=False,
        help="no progress bar (it is also off when stderr is not a terminal)")
    log_level: str = _setting(
        "info", group="running", choices=LOG_LEVELS, inherit=False,
        help="the least severe messages shown on the console and written to train.log")

    # ------------------------------------------------------------------------------- checking
    def check(self) -> None:
        """Raise :class:`SettingsError` naming the flag for settings that cannot work."""
        if self.dataset_type not in DATASET_TYPES:
            raise SettingsError(f"--dataset-type should be one of {', '.join(DATASET_TYPES)}, "
                                f"got {self.dataset_type!r}")
        if not self.datasets:
            raise SettingsError("--datasets: give at least one dataset folder (or file)")
        for path in self.datasets:
            if not Path(path).exists():
                raise SettingsError(f"--datasets: {path} does not exist")
        if (self.validation_dataset is not None and not self.validation_off
                and not Path(self.validation_dataset).exists()):
            raise SettingsError(f"--validation-dataset: {self.validation_dataset} does not exist "
                                "(or 'none': no validation)")
        pretrained = None if self.pretrained_ssd is None else self.pretrained_file
        for flag, path in (("--label-file", self.label_file), ("--base-net", self.base_net),
                           ("--pretrained-ssd", pretrained), ("--resume", self.resume)):
            if path is not None and not Path(path).is_file():
                raise SettingsError(f"{flag}: {path} is not a file")
        for name, allowed in (("scheduler", SCHEDULERS), ("metric", METRICS), ("log_level", LOG_LEVELS)):
            value = getattr(self, name)
            if value not in allowed:
                raise SettingsError(f"{flag_of(name)} should be one of {', '.join(allowed)}, got {value!r}")
        if self.amp is not None and self.amp not in AMP_MODES:
            raise SettingsError(f"--amp should be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("batch_size", "validation_epochs", "debug_steps", "max_nonfinite_steps"):
            value = getattr(self, name)
            if value is None or value < 1:
                raise SettingsError(f"{flag_of(name)} should be at least 1, got {value}")
        if self.iterations is None and (self.num_epochs is None or self.num_epochs < 1):
            raise SettingsError(f"--num-epochs should be at least 1, got {self.num_epochs}")
        if self.iterations is not None and self.iterations < 1:
            raise SettingsError(f"--iterations should be at least 1, got {self.iterations}")
        if self.lr <= 0:
            raise SettingsError(f"--lr should be positive, got {self.lr}")
        for name in ("num_workers", "seed", "warmup"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SettingsError(f"{flag_of(name)} should be 0 or more, got {value}")
        for name in ("t_max", "grad_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SettingsError(f"{flag_of(name)} should be positive, got {value}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise SettingsError(f"--checkpoint-every-steps should be at least 1, got {self.checkpoint_every_steps}")
        if self.zoom_out_max < 1:
            raise SettingsError(f"--zoom-out-max should be at least 1 (no zoom-out), got {self.zoom_out_max}")
        self.milestone_list()  # raises on a malformed list

    @property
    def pretrained_file(self) -> str | None:
        """The ``--pretrained-ssd`` file the run starts from: the one given (``none``: no file); when none
        is given, jetson-inference's default :data:`JETSON_PRETRAINED` if :attr:`jetson_default`
        and that file exists; else None."""
        if self.pretrained_ssd is not None:
            return None if str(self.pretrained_ssd).lower() in NO_VALIDATION else str(self.pretrained_ssd)
        return JETSON_PRETRAINED if self.jetson_default and Path(JETSON_PRETRAINED).is_file() else None

    @property
    def jetson_default(self) -> bool:
        """Whether jetson-inference's default start applies: ``mb1-ssd`` and no ``--pretrained-ssd``,
        ``--base-net`` or ``--resume`` given (the run then starts from :data:`JETSON_PRETRAINED`, or from
        scratch with a warning when that file is missing)."""
        from ..models import canonical_name  # models import torchvision: not at import time

        return (self.pretrained_ssd is None and not self.base_net and not self.resume
                and canonical_name(self.net) == "mb1-ssd")

    @property
    def validation_off(self) -> bool:
        """``--validation-dataset none``: no validation at all."""
        return self.validation_dataset is not None and str(self.validation_dataset).lower() in NO_VALIDATION

    def milestone_list(self) -> list[int] | None:
        """``milestones`` as a sorted list of ints (``"80,100"`` -> ``[80, 100]``), or None."""
        value = self.milestones
        if value is None or value == "":
            return None
        if isinstance(value, str):
            parts: list[Any] = [p for p in value.replace(" ", "").split(",") if p]
        elif isinstance(value, (int, float)):
            parts = [value]
        else:
            parts = list(value)
        try:
            out = sorted(int(p) for p in parts)
        except (TypeError, ValueError):
            raise SettingsError(f"--milestones should be comma-separated integers such as 80,100, "
                                f"got {value!r}") from None
        if any(m < 0 for m in out):
            raise SettingsError(f"--milestones should not be negative, got {value!r}")
        return out

    # ---------------------------------------------------------------------------- conversions
    def to_dict(self) -> dict:
        """Plain types only (what goes in a checkpoint's ``train_state["args"]``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: dict) -> "TrainConfig":
        """Build from a dict (or ``vars(argparse_namespace)``); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def changed_settings(self) -> dict[str, Any]:
        """The settings whose value differs from the default."""
        out = {}
        for f in dataclasses.fields(self):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
            value = getattr(self, f.name)
            if value != default:
                out[f.name] = value
        return out

    # -------------------------------------------------------------------------------- resuming
    @classmethod
    def resumed_from(cls, path: str | os.PathLike, **given: Any) -> "TrainConfig":
        """The settings of the run saved in checkpoint ``path``, with the settings in ``given`` on top.

        This is the one place where a resumed run gets its settings; the command line calls it with the
        flags given (command line over ``--config``), and :class:`~ssdfast.engine.Trainer` calls it for
        a ``TrainConfig(resume=...)`` built in Python with every setting that differs from its default
        (:meth:`inherit_resumed`). Precedence: ``given`` > the checkpoint's settings > the defaults.
        Settings that describe where and how a run executes (device, workers, console, log level:
        ``Flag.inherit`` False) are never taken from the checkpoint.

        A file without training settings (a pytorch-ssd ``.pth``, an ssdfast model without training
        state) gives only ``given``: such a resume loads the weights and trains from epoch 0.

        Raises :class:`~ssdfast.errors.ModelFileError` naming ``--resume`` when the file is missing
        or unreadable. The file is read once: the config hands it to the run (:meth:`resume_file`).
        """
        from ..model_files import read_model_file

        resume = read_model_file(path, flag="--resume", mmap=False)  # whole: the run keeps its optimizer state
        saved = resume.saved_settings
        inherited = {f.name: saved[f.name] for f in dataclasses.fields(cls)
                     if f.name in saved and flag_of_field(f).inherit}
        config = cls(**{**inherited, **given, "resume": os.fspath(path)})
        config._settings_resumed_from = os.fspath(path)  # type: ignore[attr-defined]
        config._resume_file = resume  # type: ignore[attr-defined]
        return config

    def resume_file(self) -> "ModelFile | None":
        """The ``--resume`` file, read whole (:func:`~ssdfast.model_files.read_model_file`); None without
        ``resume``. The file :meth:`resumed_from` read for the settings is handed over, once (the run's
        start and its settings share one read; the config does not keep it for the run's length)."""
        if not self.resume:
            return None
        kept = self.__dict__.pop("_resume_file", None)
        if kept is not None and kept.path == os.fspath(self.resume):
            return kept
        from ..model_files import read_model_file

        return read_model_file(self.resume, flag="--resume", mmap=False)

    def inherit_resumed(self) -> "TrainConfig":
        """This config with the resumed run's settings where this one has the default (Python API rule:
        a setting left at its default is inherited; one set to anything else wins). Use
        :meth:`resumed_from` with explicit keywords to force a default value over a saved one.
        Returns ``self`` when there is nothing to resume or it was already applied."""
        if not self.resume or getattr(self, "_settings_resumed_from", None) == os.fspath(self.resume):
            return self
        given = self.changed_settings()
        given.pop("resume", None)
        return type(self).resumed_from(self.resume, **given)


def flag_of_field(f: dataclasses.Field) -> Flag:
    """The :class:`Flag` of a :class:`TrainConfig` field."""
    return f.metadata["flag"]


def flag_of(name: str) -> str:
    """The command-line flag of setting ``name`` (``"batch_size"`` -> ``"--batch-size"``)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return flag_of_field(f).name or "--" + name.replace("_", "-")
    raise KeyError(name)

