"""Building a run from its settings: the datasets (and which one validates), the run's length, the
network and the weights it starts from.

Validation data: ``--validation-dataset PATH`` (its test split); ``none``: no validation; not given:
the training dataset's own test split when it has one (VOC ``ImageSets/Main/test.txt``, COCO val,
Open Images test), as jetson-inference's ``train_ssd.py`` validates; a dataset without one trains
without validation. :attr:`Data.validation_source` says which, for the log.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import DataError, SettingsError, one_line
from ..io.labels import class_count
from .settings import JETSON_PRETRAINED, JETSON_PRETRAINED_URL, TrainConfig

if TYPE_CHECKING:
    from ..model_files import ModelFile

__all__ = ["Data", "build_data", "RunLength", "run_length", "StartFiles", "read_start_files",
           "build_criterion", "build_model", "variant_options", "wrap_for_training", "init_weights",
           "missing_default_warning", "check_compatible"]


@dataclass
class Data:
    """The datasets of a run. ``validation_source``: how the validation set was chosen (for the log);
    ``built``: whether they were built here from the settings (then without a transform until
    :meth:`set_transforms`) or given (with their own)."""

    train_set: Dataset
    val_set: Dataset | None
    validation_source: str
    class_names: list[str]
    category_ids: list[int] | None
    built: bool

    def set_transforms(self, model_config: Any, zoom_out_max: float) -> None:
        """The transforms of the datasets built here, once the model that fixes their size, mean and std
        exists (it needs the datasets' class count first): the SSD training augmentation, and the
        evaluation transform for validation. Given datasets keep theirs."""
        from ..data.transforms import EvalTransform, TrainTransform

        if not self.built:
            return
        size, mean, std = model_config.image_size, model_config.mean, model_config.std
        self.train_set.transform = TrainTransform(  # type: ignore[attr-defined]
            size, mean, std, zoom_out_max=zoom_out_max)
        if self.val_set is not None:
            self.val_set.transform = EvalTransform(  # type: ignore[attr-defined]
                size, mean, std, antialias=getattr(model_config, "antialias", True))


def build_data(config: TrainConfig, *, train_dataset: Dataset | None = None,
               val_dataset: Dataset | None = None) -> Data:
    """The training and validation datasets of ``config``, their transforms set by
    :meth:`Data.set_transforms` (or the ones given, which must carry their transforms already)."""
    source = "given" if val_dataset is not None else "none"
    built = train_dataset is None
    if train_dataset is None:
        from ..data import build_dataset

        train_dataset = build_dataset(config.dataset_type, list(config.datasets), split="train",
                                      balance=config.balance_data, label_file=config.label_file, strict=config.strict)
        if val_dataset is None:
            val_dataset, source = _validation_set(config)
    if len(train_dataset) == 0:  # type: ignore[arg-type]
        raise DataError(f"--datasets {' '.join(config.datasets)}: no training images found")
    class_names = list(train_dataset.class_names)  # type: ignore[attr-defined]
    if val_dataset is not None and list(val_dataset.class_names) != class_names:  # type: ignore[attr-defined]
        raise DataError(
            f"--validation-dataset {config.validation_dataset or source}: its classes "
            f"{list(val_dataset.class_names)[1:]} differ from the training classes {class_names[1:]}"  # type: ignore[attr-defined]
        )
    return Data(train_dataset, val_dataset, source, class_names, getattr(train_dataset, "category_ids", None), built)


def _validation_set(config: TrainConfig) -> tuple[Dataset | None, str]:
    from ..data import build_dataset

    common = dict(split="test", label_file=config.label_file, strict=config.strict)
    if config.validation_off:
        return None, "no validation (--validation-dataset none)"
    if config.validation_dataset:
        return (build_dataset(config.dataset_type, [config.validation_dataset], **common),
                f"--validation-dataset {config.validation_dataset}")
    from ..data import find_test_split

    splits = [split for split in (find_test_split(config.dataset_type, root) for root in config.datasets) if split]
    if not splits:
        return None, ("no validation: no --validation-dataset given and the training data has no test split "
                      f"({', '.join(config.datasets)})")
    listings = ", ".join(split.listing for split in splits)
    dataset = build_dataset(config.dataset_type, [split.root for split in splits], **common)
    if len(dataset) == 0:  # type: ignore[arg-type]
        return None, f"no validation: the test split of the training data is empty ({listings})"
    return dataset, "the training data's test split: " + listings


@dataclass
class RunLength:
    """How long a run is: ``steps_per_epoch`` (per process), ``num_epochs``, ``max_steps``, and whether
    the last batch of an epoch is dropped (a batch of one image breaks BatchNorm on 1x1 maps)."""

    steps_per_epoch: int
    num_epochs: int
    max_steps: int
    drop_last: bool


def run_length(config: TrainConfig, num_images: int, world_size: int) -> RunLength:
    """The length of a run over ``num_images`` training images split between ``world_size`` processes."""
    per_rank = math.ceil(num_images / world_size)
    drop_last = per_rank % config.batch_size == 1 and per_rank > 1
    steps = per_rank // config.batch_size if drop_last else math.ceil(per_rank / config.batch_size)
    if config.iterations is not None:
        return RunLength(steps, math.ceil(config.iterations / steps), config.iterations, drop_last)
    return RunLength(steps, int(config.num_epochs), int(config.num_epochs) * steps, drop_last)  # type: ignore[arg-type]


@dataclass
class StartFiles:
    """The weight files a run starts from (None where not given), each read once: :func:`read_start_files`."""

    resume: "ModelFile | None" = None
    pretrained_ssd: "ModelFile | None" = None
    base_net: "ModelFile | None" = None


def read_start_files(config: TrainConfig) -> StartFiles:
    """The weight files ``config`` starts from, read once each (:func:`~ssdfast.model_files.read_model_file`,
    memory-mapped): ``--resume`` (kept by the config, :meth:`TrainConfig.resume_file`), else
    ``--pretrained-ssd`` (or jetson-inference's default file) and ``--base-net``. A file that cannot be
    used is a :class:`~ssdfast.errors.ModelFileError` of one line naming its flag."""
    from ..model_files import read_model_file

    if config.resume:
        return StartFiles(resume=config.resume_file())
    pretrained, base = config.pretrained_file, config.base_net
    return StartFiles(pretrained_ssd=read_model_file(pretrained, flag="--pretrained-ssd") if pretrained else None,
                      base_net=read_model_file(base, flag="--base-net") if base else None)


def build_criterion(model: nn.Module, device: torch.device) -> nn.Module:
    """The MultiBox loss on ``model``'s priors and variances (IoU 0.5, 3 negatives per positive)."""
    from ..loss import MultiBoxLoss

    return MultiBoxLoss(model.priors.to(device), iou_threshold=0.5, neg_pos_ratio=3,  # type: ignore[attr-defined]
                        variances=tuple(model.config.variances))  # type: ignore[attr-defined]


def build_model(config: TrainConfig, num_classes: int, start: StartFiles | None = None) -> nn.Module:
    """The network of ``config`` for ``num_classes`` classes (background included), randomly initialised,
    in the variant :func:`variant_options` gives (``start``: the files read; read here when not given)."""
    from ..models import canonical_name, create_model, list_models

    if canonical_name(config.net) not in list_models():
        raise SettingsError(f"--net {config.net!r} is not a known network; choose one of {', '.join(list_models())}")
    try:
        return create_model(config.net, num_classes, width_mult=config.mb2_width_mult, image_size=config.resolution,
                            **variant_options(config, start))
    except (ValueError, TypeError) as exc:  # e.g. a width multiplier for a network without one, a tiny resolution
        raise SettingsError(f"--net {config.net}: {exc}") from None


def variant_options(config: TrainConfig, start: StartFiles | None = None) -> dict[str, str]:
    """The network variant (``conv4_3_norm``, ``backbone``) to build: the flags given, else the variant
    of the file the run starts from (``--resume``, else ``--pretrained-ssd``) when it holds the same
    network, else the network's default (pytorch-ssd's). ``start``: the files read (read here when not
    given)."""
    from ..models import model_options

    allowed = model_options(config.net)
    start = read_start_files(config) if start is None else start
    source = start.resume or start.pretrained_ssd
    found = _file_variant(config.net, source) if source is not None else {}
    given = {k: getattr(config, k) for k in ("conv4_3_norm", "backbone") if getattr(config, k) is not None}
    return {k: v for k, v in {**found, **given}.items() if k in allowed}


def _file_variant(net: str, model_file: "ModelFile") -> dict[str, str]:
    """The variant options of a weights file's network when it is ``net`` ({} otherwise, or unknown)."""
    from ..models import SSDConfig, canonical_name, identify_pytorch_ssd

    ckpt = model_file.checkpoint
    try:
        if ckpt is not None:
            if ckpt["net"] != canonical_name(net):
                return {}
            return dict(SSDConfig.from_dict(ckpt["config"]).options)
        name, options = identify_pytorch_ssd(model_file.state_dict)
    except (ValueError, TypeError, KeyError):
        return {}
    if name != canonical_name(net):
        return {}
    return {k: v for k, v in options.items() if k in ("conv4_3_norm", "backbone")}


def wrap_for_training(model: nn.Module, distributed: bool, device: torch.device, *, compile: bool = False) -> nn.Module:
    """What the training step calls: ``model`` in DistributedDataParallel (several processes) and/or
    ``torch.compile``; the plain ``model`` stays what is saved and validated."""
    wrapped: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
    return wrapped


def init_weights(model: nn.Module, config: TrainConfig, class_names: list[str], start: StartFiles | None = None, *,
                 notes: Any = None, given: bool = False) -> str:
    """Load the weights a run starts from into ``model``; returns the start-up line saying where they
    come from (``Weights: ...``: the file and what loaded, or from scratch). ``start``: the files read
    (read here when not given).

    ``--resume`` continuing a run: its weights (after checking that network, classes, width and size
    match). ``--resume`` of a weights-only file: all of its weights, heads included (they must fit the
    classes), as pytorch-ssd's ``--resume``. Otherwise ``--base-net`` or ``--pretrained-ssd``. ``given``:
    the model was passed in (its own weights, unless a file is given). When jetson-inference's default
    start applies (:attr:`TrainConfig.jetson_default`) and its file is missing, the run starts from
    scratch with a warning through ``notes`` (a :class:`~ssdfast.engine.notes.RunNotes`: console,
    ``train.log``, ``metrics.jsonl``; a Python warning without it). A file that does not fit is a
    :class:`~ssdfast.errors.ModelFileError` naming its flag.
    """
    from ..model_files import load_weights

    start = read_start_files(config) if start is None else start
    resume = start.resume
    if resume is not None and resume.continues_run:
        check_compatible(resume, model, class_names, config)
        try:
            model.load_state_dict(resume.checkpoint["model"])  # type: ignore[index]
        except RuntimeError as exc:
            raise resume.error(f"its weights do not fit this network ({one_line(exc)})") from None
        return f"Weights: --resume {resume.path}, with its training state (its run continues)"
    if resume is not None:
        if resume.checkpoint is not None:
            check_compatible(resume, model, class_names, config)
        report = load_weights(model, resume)
        heads = [k for k in report.reinitialized + report.not_in_file
                 if k.startswith(("classification_", "regression_"))]
        if heads:
            raise resume.error(f"its prediction heads do not fit the dataset's {class_count(len(class_names))}; "
                               "use --pretrained-ssd to start from its other weights")
        what = "an ssdfast model" if resume.kind == "ssdfast" else "a pytorch-ssd model"
        return (f"Weights: --resume {resume.path}: {what} without training state: loaded all its weights "
                f"({len(report.loaded)} tensors); training starts at epoch 0")
    for model_file, base_net in ((start.base_net, True), (start.pretrained_ssd, False)):
        if model_file is not None:
            report = load_weights(model, model_file, base_net=base_net)
            default = " (jetson-inference default)" if not base_net and config.pretrained_ssd is None else ""
            return f"Weights: {model_file.flag} {model_file.path}{default}: {report.summary()}"
    if given:
        return "Weights: those of the model given (no --pretrained-ssd, --base-net or --resume)"
    if config.jetson_default:  # and its file is missing, else pretrained_file would have named it
        _warn(notes, missing_default_warning())
        return f"Weights: from scratch ({JETSON_PRETRAINED} is missing)"
    if config.pretrained_ssd is not None:
        return f"Weights: from scratch (--pretrained-ssd {config.pretrained_ssd})"
    return "Weights: from scratch (no --pretrained-ssd, --base-net or --resume given)"


def missing_default_warning() -> str:
    """The warning of a run that starts from scratch because jetson-inference's default file is missing."""
    where = os.path.abspath(JETSON_PRETRAINED)
    return (f"{JETSON_PRETRAINED} not found ({where}): training starts from scratch, which needs far more epochs "
            f"for a good model. jetson-inference's train_ssd.py starts mb1-ssd from this file; its \"Re-training "
            f"SSD-Mobilenet\" tutorial downloads it with: wget {JETSON_PRETRAINED_URL} -O {JETSON_PRETRAINED} "
            "(in the folder you train from). --pretrained-ssd FILE starts from another file; --pretrained-ssd none "
            "from scratch, without this warning")


def _warn(notes: Any, message: str) -> None:
    if notes is not None:
        notes.warn(message, "weights")
    else:
        warnings.warn(message, stacklevel=3)


def check_compatible(resume: "ModelFile", model: nn.Module, class_names: list[str], config: TrainConfig) -> None:
    """A resumed checkpoint must be of this network, classes, width and input size (ModelFileError
    naming ``--resume``)."""
    from ..models import canonical_name

    ckpt = resume.ssdfast_checkpoint()
    if ckpt.get("net") != canonical_name(config.net):
        raise resume.error(f"a {ckpt.get('net')} checkpoint but --net is {config.net}; "
                           f"pass --net {ckpt.get('net')} or start a new run")
    if list(ckpt.get("class_names", [])) != class_names:
        raise resume.error(f"its classes {list(ckpt.get('class_names', []))[1:]} differ from the "
                           f"dataset's {class_names[1:]}")
    saved = ckpt.get("config") or {}
    mine = dataclasses.asdict(model.config) if dataclasses.is_dataclass(model.config) else {}  # type: ignore[attr-defined]
    for key, flag in (("width_mult", "--mb2-width-mult"), ("image_size", "--resolution")):
        if key in saved and key in mine and saved[key] != mine[key]:
            raise resume.error(f"trained with {key}={saved[key]}, but this run has {key}={mine[key]}; "
                               f"pass {flag} {saved[key]}")
