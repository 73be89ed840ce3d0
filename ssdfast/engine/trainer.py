"""The SSD training loop.

The loop, in :meth:`Trainer.fit`, reads in a page::

    for each epoch:
        for images, boxes, labels in the epoch's loader:     # order = f(seed, epoch)
            train_step(...)                                  # forward, loss, backward, step
            after_step hooks, log, maybe a mid-epoch checkpoint
        end_epoch(): validate (loss + mAP), write last.pth / best.pth, after_epoch hooks

Extension points, for code that uses the trainer from Python:

- :class:`Hook` objects (``Trainer(config, hooks=[...])``): ``before_train``, ``after_step``,
  ``after_epoch``, ``after_train``;
- methods to override in a subclass: :meth:`Trainer.compute_loss` (the model's forward and the loss),
  :meth:`Trainer.train_step` (one optimisation step), :meth:`Trainer.validate`.

Exact resume. Everything random in an epoch is a function of ``(seed, epoch)``: the sampler's order is
seeded with ``seed + epoch`` (as :class:`~torch.utils.data.DistributedSampler` does), and each sample's
augmentation runs under RNGs seeded from ``(seed, epoch, sample index)``, whatever the number of data
workers. A checkpoint stores the optimizer, scheduler, grad-scaler and global RNG states and the
position ``(epoch, step within the epoch)``, so a resumed run replays the same batches with the same
augmentation and gives the same losses as the uninterrupted run (to float rounding: on CPU, exactly).
Checkpoints are written at the end of every epoch and, with ``checkpoint_every_steps``, every N steps,
so a killed run loses at most the work since the last of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as dist_utils
from .logging import MetricsLog, TensorBoardLog, close_logger, plot_curves, setup_logger

__all__ = [
    "TrainConfig",
    "Trainer",
    "make_sgd",
    "Hook",
    "StepOutput",
    "ConfigError",
    "NonFiniteLossError",
    "LrSchedule",
    "EpochSampler",
    "build_param_groups",
    "train",
]

DATASET_TYPES = ("voc", "coco", "open_images", "synthetic")
SCHEDULERS = ("multi-step", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "none")


class ConfigError(ValueError):
    """A mistake in the training settings that the user can fix (the CLI prints it as one line)."""


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive steps whose loss was NaN or infinite."""


# --------------------------------------------------------------------------------------- settings
@dataclass
class TrainConfig:
    """Every training setting; the field names are the ``ssdfast-train`` flag names (``--net`` -> ``net``).

    ``num_epochs`` or ``iterations`` sets the length. With ``iterations``, ``milestones``, ``t_max``
    count iterations; otherwise they count epochs (as in pytorch-ssd). ``warmup`` counts iterations.
    """

    # data
    dataset_type: str = "voc"
    datasets: list[str] = field(default_factory=list)
    validation_dataset: str | None = None
    balance_data: bool = False
    label_file: str | None = None
    # network
    net: str = "vgg16-ssd"
    mb2_width_mult: float = 1.0
    resolution: int | None = None
    zoom_out_max: float = 4.0
    base_net: str | None = None
    pretrained_ssd: str | None = None
    resume: str | None = None
    freeze_base_net: bool = False
    freeze_net: bool = False
    # optimisation
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    base_net_lr: float | None = None
    extra_layers_lr: float | None = None
    scheduler: str = "multi-step"
    milestones: list[int] | str | None = None
    gamma: float = 0.1
    t_max: float | None = None
    warmup: int = 0
    grad_clip: float | None = None
    batch_size: int = 32
    num_epochs: int | None = 120
    iterations: int | None = None
    # running
    num_workers: int = 4
    validation_epochs: int = 5
    debug_steps: int = 100
    checkpoint_folder: str = "models"
    checkpoint_every_steps: int | None = None
    device: str | None = None
    amp: str | None = None
    compile: bool = False
    channels_last: bool = True  # 1.2-1.7x faster CPU training steps; cuDNN's fast layout for AMP
    seed: int = 0
    max_nonfinite_steps: int = 10
    metric: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag for settings that cannot work."""
        if self.dataset_type not in DATASET_TYPES:
            raise ConfigError(f"--dataset-type should be one of {', '.join(DATASET_TYPES)}, got {self.dataset_type!r}")
        if not self.datasets:
            raise ConfigError("--datasets: give at least one dataset folder (or file)")
        for path in self.datasets:
            if not Path(path).exists():
                raise ConfigError(f"--datasets: {path} does not exist")
        if self.validation_dataset is not None and not Path(self.validation_dataset).exists():
            raise ConfigError(f"--validation-dataset: {self.validation_dataset} does not exist")
        for flag, path in (("--label-file", self.label_file), ("--base-net", self.base_net),
                           ("--pretrained-ssd", self.pretrained_ssd), ("--resume", self.resume)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{flag}: {path} is not a file")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler should be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.amp is not None and self.amp not in AMP_MODES:
            raise ConfigError(f"--amp should be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.metric not in ("auto", "voc", "coco"):
            raise ConfigError(f"--metric should be auto, voc or coco, got {self.metric!r}")
        positive = {"--batch-size": self.batch_size, "--validation-epochs": self.validation_epochs,
                    "--debug-steps": self.debug_steps, "--max-nonfinite-steps": self.max_nonfinite_steps}
        for flag, value in positive.items():
            if value is None or value < 1:
                raise ConfigError(f"{flag} should be at least 1, got {value}")
        if self.iterations is None and (self.num_epochs is None or self.num_epochs < 1):
            raise ConfigError(f"--num-epochs should be at least 1, got {self.num_epochs}")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"--iterations should be at least 1, got {self.iterations}")
        if self.lr <= 0:
            raise ConfigError(f"--lr should be positive, got {self.lr}")
        if self.num_workers < 0:
            raise ConfigError(f"--num-workers should be 0 or more, got {self.num_workers}")
        if self.seed < 0:
            raise ConfigError(f"--seed should be 0 or more, got {self.seed}")
        if self.t_max is not None and self.t_max <= 0:
            raise ConfigError(f"--t-max should be positive, got {self.t_max}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"--grad-clip should be positive, got {self.grad_clip}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ConfigError(f"--checkpoint-every-steps should be at least 1, got {self.checkpoint_every_steps}")
        if self.zoom_out_max < 1:
            raise ConfigError(f"--zoom-out-max should be at least 1 (no zoom-out), got {self.zoom_out_max}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup should be 0 or more, got {self.warmup}")
        self.milestone_list()  # raises on a malformed list

    def milestone_list(self) -> list[int] | None:
        """``milestones`` as a sorted list of ints (``"80,100"`` -> ``[80, 100]``), or None."""
        value = self.milestones
        if value is None or value == "":
            return None
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
        elif isinstance(value, (int, float)):
            parts = [value]
        else:
            parts = list(value)
        try:
            out = sorted(int(p) for p in parts)
        except (TypeError, ValueError):
            raise ConfigError(f"--milestones should be comma-separated integers such as 80,100, got {value!r}") from None
        if any(m < 0 for m in out):
            raise ConfigError(f"--milestones should not be negative, got {value!r}")
        return out

    def to_dict(self) -> dict:
        """Plain types only (what goes in a checkpoint's ``train_state["args"]``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: dict) -> "TrainConfig":
        """Build from a dict (or ``vars(argparse_namespace)``); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# ------------------------------------------------------------------------------------ schedules
@dataclass
class LrSchedule:
    """Learning-rate factor for global step ``step`` (a ``LambdaLR`` lambda, stepped every iteration).

    ``steps_per_epoch`` > 0: ``milestones`` and ``t_max`` count epochs (multi-step changes at epoch
    boundaries, cosine follows the fractional epoch); 0: they count iterations. ``warmup`` ramps the
    factor linearly over the first iterations. Plain attributes only, so ``LambdaLR.state_dict()``
    stays loadable with ``torch.load(weights_only=True)``.
    """

    kind: str = "constant"
    steps_per_epoch: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    t_max: float = 1.0
    warmup: int = 0

    def __call__(self, step: int) -> float:
        if self.kind == "multi-step":
            t = step // self.steps_per_epoch if self.steps_per_epoch else step
            factor = self.gamma ** sum(1 for m in self.milestones if t >= m)
        elif self.kind == "cosine":
            t = step / self.steps_per_epoch if self.steps_per_epoch else float(step)
            factor = 0.5 * (1.0 + math.cos(math.pi * min(t, self.t_max) / self.t_max))
        else:
            factor = 1.0
        if self.warmup and step < self.warmup:
            factor *= (step + 1) / self.warmup
        return factor


def build_param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """pytorch-ssd's parameter groups: base net at ``base_net_lr``, extra layers at ``extra_layers_lr``,
    the heads at ``lr``. ``freeze_base_net`` freezes the base net; ``freeze_net`` everything but the heads.
    """
    heads = [getattr(model, n) for n in ("classification_headers", "regression_headers") if hasattr(model, n)]
    base = getattr(model, "base_net", None)
    if config.freeze_base_net or config.freeze_net:
        if base is None:
            raise ConfigError(f"--freeze-base-net: {config.net} has no base_net to freeze")
        base.requires_grad_(False)
    if config.freeze_net:
        head_ids = {id(p) for h in heads for p in h.parameters()}
        for p in model.parameters():
            if id(p) not in head_ids:
                p.requires_grad_(False)
    base_ids = {id(p) for p in base.parameters()} if base is not None else set()
    head_ids = {id(p) for h in heads for p in h.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"base_net": [], "extra_layers": [], "heads": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = "base_net" if id(p) in base_ids else "heads" if id(p) in head_ids else "extra_layers"
        groups[key].append(p)
    lrs = {
        "base_net": config.base_net_lr if config.base_net_lr is not None else config.lr,
        "extra_layers": config.extra_layers_lr if config.extra_layers_lr is not None else config.lr,
        "heads": config.lr,
    }
    return [{"params": ps, "lr": lrs[name], "name": name} for name, ps in groups.items() if ps]


# ------------------------------------------------------------------------- reproducible data order
def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from a few non-negative integers (numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


@contextlib.contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with torch, ``random`` and numpy seeded from ``seed``, then put the old states back."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _SeededSamples(Dataset):
    """Wraps a dataset so ``self[(index, seed)]`` loads ``dataset[index]`` under RNGs seeded with ``seed``.

    This makes a sample's augmentation independent of which worker loads it and of what was loaded
    before, which is what lets a run resume in the middle of an epoch exactly.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with _isolated_rng(seed):
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """:class:`DistributedSampler` for one epoch that can start part-way and seeds every sample.

    The order is DistributedSampler's (``seed + epoch``, padded so every rank gets the same count,
    rank ``r`` taking every ``world_size``-th index); ``start`` skips this rank's first ``start``
    indices (a resumed epoch). Yields ``(index, sample_seed)`` with ``sample_seed`` a function of
    ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Dataset, *, epoch: int, seed: int, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0, start: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        for index in indices:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


# ------------------------------------------------------------------------------------ RNG states
def get_rng_state() -> dict:
    """torch, python ``random``, numpy (and CUDA) RNG states as tensors / lists / numbers, so a
    checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": [int(x) for x in py_state], "gauss_next": gauss},
        "numpy": {"kind": str(np_kind), "keys": np_keys.tolist(), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(x) for x in py["state"]), py["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------- the trainer
@dataclass
class StepOutput:
    """What one training step did: losses (float, averaged over processes), whether it was skipped."""

    loss: float
    regression_loss: float
    classification_loss: float
    batch_size: int
    lr: float
    skipped: bool = False


class Hook:
    """Extension point: subclass, override what you need, pass ``Trainer(config, hooks=[...])``."""

    def before_train(self, trainer: "Trainer") -> None:
        """After setup (and resume), before the first step."""

    def after_step(self, trainer: "Trainer", output: StepOutput) -> None:
        """After every step; ``trainer.step`` is the number of steps done so far."""

    def after_epoch(self, trainer: "Trainer", record: dict) -> None:
        """After an epoch's validation and checkpoint; ``record`` is its metrics.jsonl record."""

    def after_train(self, trainer: "Trainer") -> None:
        """At the end of :meth:`Trainer.fit` (also when it stops on an error)."""


class _Average:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sums = [0.0, 0.0, 0.0]

    def add(self, out: StepOutput) -> None:
        if out.skipped:
            return
        self.n += 1
        for i, v in enumerate((out.loss, out.regression_loss, out.classification_loss)):
            self.sums[i] += v

    def means(self) -> tuple[float, float, float]:
        if self.n == 0:
            return (float("nan"),) * 3  # type: ignore[return-value]
        return tuple(s / self.n for s in self.sums)  # type: ignore[return-value]


class _DeferredTransform:
    """A transform set after the dataset is built (the model, which fixes size/mean/std, needs the
    dataset's class count first)."""

    def __init__(self) -> None:
        self.transform = None

    def __call__(self, *args):
        if self.transform is None:
            raise RuntimeError("the training transform was used before it was set")
        return self.transform(*args)


def _worker_init(worker_id: int) -> None:
    """Data workers run one thread each: they are the parallelism (and must not starve the model)."""
    torch.set_num_threads(1)


def _canonical_net(name: str) -> str:
    """``MB2_SSD_Lite`` -> ``mb2-ssd-lite`` (create_model accepts both spellings)."""
    return name.strip().lower().replace("_", "-")


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_sgd(params: Any, **options: Any) -> torch.optim.SGD:
    """``torch.optim.SGD`` with its fused implementation (one kernel over every parameter: ~2.5x
    faster steps than the per-parameter loop on CPU) where the parameters allow it, else the
    default one. Same updates, same state dict (checkpoints resume either way).

    ``params``: tensors or param-group dicts, as ``torch.optim.SGD`` takes them."""
    groups = []
    for p in params:
        if isinstance(p, dict):
            inner = p["params"]
            groups.append({**p, "params": [inner] if isinstance(inner, Tensor) else list(inner)})
        else:
            groups.append(p)
    tensors = [t for g in groups for t in (g["params"] if isinstance(g, dict) else [g])]

    def fresh() -> list:  # SGD fills in param groups in place: give each attempt its own dicts
        return [dict(g) if isinstance(g, dict) else g for g in groups]

    if all(t.device.type in ("cpu", "cuda") and t.dtype in _FUSED_DTYPES for t in tensors):
        try:
            return torch.optim.SGD(fresh(), fused=True, **options)
        except (RuntimeError, ValueError, TypeError):  # e.g. a torch build without the fused kernel
            pass
    return torch.optim.SGD(fresh(), **options)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Trainer:
    """Builds data, model, optimizer and scheduler from a :class:`TrainConfig`, and runs :meth:`fit`.

    ``train_dataset`` / ``val_dataset`` / ``model`` may be given to bypass building them from the
    config (the datasets must then follow the ``ssdfast.data`` contract and already carry their
    transforms).
    """

    def __init__(self, config: TrainConfig, *, hooks: Sequence[Hook] = (),
                 model: nn.Module | None = None, train_dataset: Dataset | None = None,
                 val_dataset: Dataset | None = None) -> None:
        self.config = config
        self.hooks = list(hooks)
        if train_dataset is None:
            config.validate()
        device = _resolve_device(config.device)
        self.dist, self.device = dist_utils.init_distributed(device)
        self.is_main = self.dist.is_main
        self.folder = Path(config.checkpoint_folder)
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.log = setup_logger(self.folder, self.is_main)
        seed_everything(config.seed)

        resume_ckpt = self._load_resume_checkpoint() if config.resume else None
        self._build_data(train_dataset, val_dataset)
        self._build_model(model, resume_ckpt)
        self._build_optimization()

        self.epoch = 0            # the epoch being trained (0-based)
        self.epoch_step = 0       # steps done inside it
        self.step = 0             # global steps done
        self.history: list[dict] = []
        self.best_map = -math.inf
        self.nonfinite_in_row = 0
        self.skipped_steps = 0
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        else:
            # Per-process RNG for anything random outside the data (dropout), same on every run.
            seed_everything(derive_seed(config.seed, 1 << 20, self.dist.rank))

        self.metrics = MetricsLog(self.folder / "metrics.jsonl", resume_step=self.step if resume_ckpt else None) if self.is_main else None
        self.tensorboard = TensorBoardLog(self.folder / "tensorboard", purge_step=self.step if resume_ckpt else None) if self.is_main else None
        if self.is_main:
            self._write_labels()

    # ------------------------------------------------------------------------------- building
    def _load_resume_checkpoint(self) -> dict:
        from ..checkpoint import CheckpointError, load_checkpoint

        path = self.config.resume
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            raise ConfigError(f"--resume: {exc}") from None
        if ckpt.get("train_state") is None:
            raise ConfigError(f"--resume {path}: this checkpoint has no training state (use --pretrained-ssd to start from its weights)")
        if ckpt.get("net") != _canonical_net(self.config.net):
            raise ConfigError(
                f"--resume {path} is a {ckpt.get('net')} checkpoint but --net is {self.config.net}; "
                f"pass --net {ckpt.get('net')} or start a new run"
            )
        return ckpt

    def _build_data(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> None:
        cfg = self.config
        self.train_transform = _DeferredTransform()
        self.val_transform = _DeferredTransform()
        if train_dataset is None:
            from ..data import build_dataset

            train_dataset = build_dataset(cfg.dataset_type, list(cfg.datasets), split="train",
                                          transform=self.train_transform, label_file=cfg.label_file,
                                          balance=cfg.balance_data)
            if val_dataset is None and cfg.validation_dataset:
                val_dataset = build_dataset(cfg.dataset_type, [cfg.validation_dataset], split="test",
                                            transform=self.val_transform, label_file=cfg.label_file)
        if len(train_dataset) == 0:  # type: ignore[arg-type]
            raise ConfigError(f"--datasets {' '.join(cfg.datasets)}: no training images found")
        self.train_set = train_dataset
        self.val_set = val_dataset
        self.class_names = list(train_dataset.class_names)  # type: ignore[attr-defined]
        self.category_ids = getattr(train_dataset, "category_ids", None)
        if val_dataset is not None and list(val_dataset.class_names) != self.class_names:  # type: ignore[attr-defined]
            raise ConfigError(
                f"--validation-dataset {cfg.validation_dataset}: its classes {list(val_dataset.class_names)[1:]} "  # type: ignore[attr-defined]
                f"differ from the training classes {self.class_names[1:]}"
            )
        n = len(self.train_set)  # type: ignore[arg-type]
        per_rank = math.ceil(n / self.dist.world_size)
        # A last batch of one image breaks BatchNorm on 1x1 feature maps: drop it.
        self.drop_last = per_rank % cfg.batch_size == 1 and per_rank > 1
        self.steps_per_epoch = per_rank // cfg.batch_size if self.drop_last else math.ceil(per_rank / cfg.batch_size)
        if cfg.iterations is not None:
            self.max_steps = cfg.iterations
            self.num_epochs = math.ceil(cfg.iterations / self.steps_per_epoch)
        else:
            self.num_epochs = int(cfg.num_epochs)  # type: ignore[arg-type]
            self.max_steps = self.num_epochs * self.steps_per_epoch

    def _build_model(self, model: nn.Module | None, resume_ckpt: dict | None) -> None:
        cfg = self.config
        if model is None:
            from ..models import create_model, list_models

            if _canonical_net(cfg.net) not in list_models():
                raise ConfigError(f"--net {cfg.net!r} is not a known network; choose one of {', '.join(list_models())}")
            try:
                options = {}
                if resume_ckpt is not None:  # the run's variant (conv4_3_norm, backbone), as its checkpoint says
                    from ..models import SSDConfig

                    options = SSDConfig.from_dict(resume_ckpt["config"]).options
                model = create_model(cfg.net, len(self.class_names), width_mult=cfg.mb2_width_mult, image_size=cfg.resolution,
                                     **options)
            except ValueError as exc:  # e.g. a width multiplier for a network without one, a tiny resolution
                raise ConfigError(f"--net {cfg.net}: {exc}") from None
        model_cfg = model.config  # type: ignore[attr-defined]
        from ..data.transforms import EvalTransform, TrainTransform

        self.train_transform.transform = TrainTransform(model_cfg.image_size, model_cfg.mean, model_cfg.std,
                                                        zoom_out_max=cfg.zoom_out_max)
        self.val_transform.transform = EvalTransform(model_cfg.image_size, model_cfg.mean, model_cfg.std)

        if resume_ckpt is not None:
            self._check_compatible(resume_ckpt, model)
            try:
                model.load_state_dict(resume_ckpt["model"])
            except RuntimeError as exc:
                raise ConfigError(f"--resume {cfg.resume}: its weights do not fit this network ({str(exc).splitlines()[0]})") from None
        elif cfg.base_net or cfg.pretrained_ssd:
            from ..models import load_base_net, load_pretrained_ssd

            flag, path, load = (("--base-net", cfg.base_net, load_base_net) if cfg.base_net
                                else ("--pretrained-ssd", cfg.pretrained_ssd, load_pretrained_ssd))
            try:
                report = load(model, path)
            except (ValueError, OSError) as exc:  # another network's file, not a weight file...
                raise ConfigError(f"{flag} {path}: {exc}") from None
            self.log.info(f"Init from {flag} {path}: {report}")
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: saved, validated
        self.param_groups = build_param_groups(model, cfg)
        wrapped: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        self.train_model = wrapped  # what the training step calls

        from ..loss import MultiBoxLoss

        priors = model.priors.to(self.device)  # type: ignore[attr-defined]
        self.criterion = MultiBoxLoss(priors, iou_threshold=0.5, neg_pos_ratio=3, variances=tuple(model_cfg.variances))

    def _check_compatible(self, ckpt: dict, model: nn.Module) -> None:
        path = self.config.resume
        if list(ckpt.get("class_names", [])) != self.class_names:
            raise ConfigError(
                f"--resume {path}: its classes {list(ckpt.get('class_names', []))[1:]} differ from the "
                f"dataset's {self.class_names[1:]}"
            )
        saved = ckpt.get("config") or {}
        mine = dataclasses.asdict(model.config) if dataclasses.is_dataclass(model.config) else {}  # type: ignore[attr-defined]
        for key, flag in (("width_mult", "--mb2-width-mult"), ("image_size", "--resolution")):
            if key in saved and key in mine and saved[key] != mine[key]:
                raise ConfigError(f"--resume {path} was trained with {key}={saved[key]}, but this run has {key}={mine[key]}; pass {flag} {saved[key]}")

    def _build_optimization(self) -> None:
        cfg = self.config
        self.optimizer = make_sgd(self.param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        per_epoch = cfg.iterations is None
        total = self.num_epochs if per_epoch else self.max_steps
        milestones = cfg.milestone_list()
        if milestones is None:  # pytorch-ssd's 80,100 of 120 epochs, scaled to this run
            milestones = [max(1, round(total * 2 / 3)), max(1, round(total * 5 / 6))]
        self.lr_schedule = LrSchedule(
            kind=cfg.scheduler, steps_per_epoch=self.steps_per_epoch if per_epoch else 0,
            milestones=milestones, gamma=cfg.gamma, t_max=float(cfg.t_max or total), warmup=cfg.warmup,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_schedule)

        amp = cfg.amp if cfg.amp not in (None, "none") else None
        if amp == "auto":
            amp = "fp16" if self.device.type == "cuda" else "bf16"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None

    def _write_labels(self) -> None:
        from ..io import write_label_file

        write_label_file(self.class_names, self.folder / "labels.txt")

    # -------------------------------------------------------------------------------- state
    def train_state(self) -> dict:
        """Everything besides the weights that a resumed run needs (plain types and tensors)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "step": self.step,
            "rng": get_rng_state(),
            "metrics": {"history": list(self.history), "best_map": None if self.best_map == -math.inf else self.best_map},
            "args": self.config.to_dict(),
        }

    def _restore(self, ckpt: dict) -> None:
        state = ckpt["train_state"]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # other parameter groups: different --freeze-* flags
            raise ConfigError(f"--resume {self.config.resume}: its optimizer state does not fit this run ({exc}); "
                              "pass the --freeze-base-net / --freeze-net flags of the interrupted run") from None
        wanted = dataclasses.asdict(self.lr_schedule)
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule follows this run's flags (a resumed run may extend --num-epochs / --t-max):
        # load_state_dict copied the saved schedule's attributes into ours; put this run's back.
        self.lr_schedule.__dict__.update(wanted)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * self.lr_schedule(int(state["step"]))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.epoch_step = int(state.get("epoch_step", 0))
        self.step = int(state["step"])
        metrics = state.get("metrics") or {}
        self.history = list(metrics.get("history") or [])
        best = metrics.get("best_map")
        self.best_map = float(best) if best is not None else -math.inf
        if state.get("rng") and self.dist.world_size == 1:
            set_rng_state(state["rng"])
        else:  # other ranks' RNG streams were not saved: reseed them from the position
            seed_everything(derive_seed(self.config.seed, self.step, self.dist.rank))
        self.log.info(f"Resumed from {self.config.resume}: epoch {self.epoch}, step {self.step}")

    def save(self, name: str = "last.pth") -> Path | None:
        """Write a checkpoint (weights + :meth:`train_state`) in the checkpoint folder (rank 0 only)."""
        if not self.is_main:
            return None
        from ..checkpoint import save_checkpoint

        path = self.folder / name
        save_checkpoint(path, self.model, self.class_names, category_ids=self.category_ids, train_state=self.train_state())
        return path

    # ------------------------------------------------------------------------------- the loop
    def epoch_loader(self, epoch: int, start_step: int = 0) -> DataLoader:
        """This rank's batches of ``epoch``, from batch ``start_step`` on."""
        from ..data import collate_detection

        sampler = EpochSampler(self.train_set, epoch=epoch, seed=self.config.seed, shuffle=True,
                               num_replicas=self.dist.world_size, rank=self.dist.rank,
                               start=start_step * self.config.batch_size)
        generator = torch.Generator()
        generator.manual_seed(derive_seed(self.config.seed, epoch, 1 << 40))
        return DataLoader(
            _SeededSamples(self.train_set), batch_size=self.config.batch_size, sampler=sampler,
            num_workers=self.config.num_workers, collate_fn=collate_detection, drop_last=self.drop_last,
            generator=generator, pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if self.config.num_workers > 0 else None,
        )

    def fit(self) -> dict:
        """Train to ``num_epochs`` (or ``iterations``) and return a summary dict."""
        self._log_start()
        self._call_hooks("before_train")
        try:
            while self.step < self.max_steps:
                self.train_epoch()
                finished_epoch = self.epoch_step >= self.steps_per_epoch
                if finished_epoch or self.step >= self.max_steps:
                    self.end_epoch(finished_epoch)
        finally:
            self._call_hooks("after_train")
            self._finish()
        return self.summary()

    def train_epoch(self) -> None:
        """Run the rest of the current epoch (all of it, unless resumed part-way) or until max_steps."""
        from tqdm import tqdm

        cfg = self.config
        self.train_model.train()
        loader = self.epoch_loader(self.epoch, self.epoch_step)
        self._epoch_avg = _Average()
        window = _Average()
        window_images, window_start = 0, time.perf_counter()
        self._epoch_start = time.perf_counter()
        self._epoch_images = 0
        bar = tqdm(total=self.steps_per_epoch, initial=self.epoch_step, desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
                   disable=True if not (self.is_main and cfg.progress) else None, dynamic_ncols=True,
                   leave=False, file=sys.stderr)
        try:
            for images, gt_boxes, gt_labels, _indices, _skipped, _notes in loader:
                if self.step >= self.max_steps:
                    break
                out = self.train_step(images, gt_boxes, gt_labels)
                self.step += 1
                self.epoch_step += 1
                self._epoch_avg.add(out)
                window.add(out)
                window_images += out.batch_size * self.dist.world_size
                self._epoch_images += out.batch_size * self.dist.world_size
                elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{out.lr:.2g}", img_s=f"{self._epoch_images / elapsed:.1f}")
                self._call_hooks("after_step", out)
                if self.step % cfg.debug_steps == 0 or self.epoch_step == self.steps_per_epoch:
                    span = max(time.perf_counter() - window_start, 1e-9)
                    self._log_window(window, window_images / span, out.lr)
                    window.reset()
                    window_images, window_start = 0, time.perf_counter()
                if (cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0
                        and self.epoch_step < self.steps_per_epoch and self.step < self.max_steps):
                    self.save("last.pth")
        finally:
            bar.close()

    def compute_loss(self, images: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass and MultiBox loss -> ``(regression_loss, classification_loss)`` scalars.

        ``images`` [B,3,S,S] normalized; ``gt_boxes`` [B,G,4] normalized xyxy; ``gt_labels`` [B,G] (-1 pads).
        """
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            confidences, locations = self.train_model(images)
        return self.criterion(confidences.float(), locations.float(), gt_boxes, gt_labels)

    def train_step(self, images: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> StepOutput:
        """One optimisation step; a non-finite loss skips it (on every process) with a warning."""
        cfg = self.config
        images = images.to(self.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        gt_boxes = gt_boxes.to(self.device, non_blocking=True)
        gt_labels = gt_labels.to(self.device, non_blocking=True)
        lr = self.optimizer.param_groups[-1]["lr"]

        regression_loss, classification_loss = self.compute_loss(images, gt_boxes, gt_labels)
        loss = regression_loss + classification_loss
        values = torch.stack([loss.detach(), regression_loss.detach(), classification_loss.detach()]).float()
        dist_utils.all_reduce_sum(values)  # a NaN on any rank makes every rank skip the step
        # The one host sync of a step: the loss must be known to be finite before it touches the weights.
        total, reg, cls = (v / self.dist.world_size for v in values.tolist())
        out = StepOutput(total, reg, cls, int(images.shape[0]), lr)

        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(total):
            self._skip_step(out)
        else:
            self.nonfinite_in_row = 0
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
        with warnings.catch_warnings():  # a skipped first step (NaN, or fp16 overflow) is expected here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        return out

    def _skip_step(self, out: StepOutput) -> None:
        out.skipped = True
        self.nonfinite_in_row += 1
        self.skipped_steps += 1
        cfg = self.config
        msg = (f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): loss={out.loss} "
               f"(regression {out.regression_loss}, classification {out.classification_loss}); step skipped "
               f"[{self.nonfinite_in_row}/{cfg.max_nonfinite_steps} in a row]")
        self.log.warning(msg)
        if self.nonfinite_in_row >= cfg.max_nonfinite_steps:
            amp_hint = f" or AMP overflow (--amp {cfg.amp}; try --amp bf16 or no --amp)" if self.amp_dtype is not None else ""
            raise NonFiniteLossError(
                f"the loss was NaN or infinite for {self.nonfinite_in_row} steps in a row (up to step {self.step + 1}); "
                f"stopping. Likely causes: a learning rate too high (--lr {cfg.lr}: try it 10x lower, or --warmup 500, "
                f"or --grad-clip 10), bad boxes in the data (empty, inverted or outside the image: check with "
                f"`ssdfast-data validate`){amp_hint}. The last good checkpoint is {self.folder / 'last.pth'}."
            )

    def end_epoch(self, finished: bool) -> dict:
        """Validate when due, write the epoch record and the checkpoints, call ``after_epoch`` hooks."""
        cfg = self.config
        epoch = self.epoch
        train_means = self._reduced_epoch_means()
        if finished:
            self.epoch += 1
            self.epoch_step = 0
        done = self.step >= self.max_steps
        record: dict[str, Any] = {
            "kind": "epoch", "epoch": epoch, "epoch_end": self.epoch + self.epoch_step / self.steps_per_epoch,
            "step": self.step, "train_loss": train_means[0], "train_regression_loss": train_means[1],
            "train_classification_loss": train_means[2], "lr": self.optimizer.param_groups[-1]["lr"],
            "time_s": time.perf_counter() - self._epoch_start,
            "images_per_s": self._epoch_images / max(time.perf_counter() - self._epoch_start, 1e-9),
            "skipped_steps": self.skipped_steps,
        }
        if self.val_set is not None and ((epoch + 1) % cfg.validation_epochs == 0 or done):
            record.update(self.validate())
        improved = record.get("mAP") is not None and record["mAP"] > self.best_map
        if improved:
            self.best_map = float(record["mAP"])
        self.history.append({k: v for k, v in record.items() if isinstance(v, (int, float, str)) or v is None})
        if self.is_main:
            self._log_epoch(record)
            self.save("last.pth")
            if improved:
                self.save("best.pth")
        dist_utils.barrier()
        self._call_hooks("after_epoch", record)
        return record

    def _reduced_epoch_means(self) -> tuple[float, float, float]:
        avg = self._epoch_avg
        t = torch.tensor([*avg.sums, float(avg.n)], dtype=torch.float64)
        dist_utils.all_reduce_sum(t)
        n = t[3].item()
        return tuple((t[:3] / n).tolist()) if n else (float("nan"),) * 3  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Validation loss and mAP on the validation set (computed on rank 0; others get NaN/None).

        mAP is VOC's (``metric`` voc) or COCO's AP@[.5:.95] (``metric`` coco; its AP50 etc. are also
        returned); ``auto`` picks COCO for ``--dataset-type coco`` and VOC otherwise.
        """
        result: dict[str, Any] = {}
        if self.is_main:
            t0 = time.perf_counter()
            result.update(self.validation_loss())
            from ..evaluation import evaluate

            metric = self.config.metric
            if metric == "auto":
                metric = "coco" if self.config.dataset_type == "coco" else "voc"
            self.model.eval()
            with torch.no_grad():
                metrics = evaluate(self.model, self.val_set, batch_size=self.config.batch_size,
                                   device=self.device, metric=metric, num_workers=self.config.num_workers,
                                   progress=self.config.progress and sys.stderr.isatty())
            result["mAP"] = float(metrics["mAP"])
            if metric == "coco":
                from ..evaluation import COCO_STAT_NAMES

                result.update({name: float(metrics[name]) for name in COCO_STAT_NAMES if name in metrics})
            result["per_class_AP"] = {str(k): float(v) for k, v in (metrics.get("per_class_AP") or {}).items()}
            result["val_time_s"] = time.perf_counter() - t0
            self.model.train()
        self.train_model.train()
        return result

    @torch.no_grad()
    def validation_loss(self) -> dict:
        """Mean regression / classification loss over the validation set (the plain model, eval mode)."""
        from ..data import collate_detection

        loader = DataLoader(self.val_set, batch_size=self.config.batch_size, shuffle=False,
                            num_workers=self.config.num_workers, collate_fn=collate_detection)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        batches = 0
        for images, gt_boxes, gt_labels, _indices, _skipped, _notes in loader:
            if images.shape[0] == 0:
                continue
            images = images.to(self.device)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                confidences, locations = self.model(images)
            reg, cls = self.criterion(confidences.float(), locations.float(), gt_boxes.to(self.device), gt_labels.to(self.device))
            sums += torch.stack([reg + cls, reg, cls]).double().cpu()
            batches += 1
        if batches == 0:
            return {}
        means = (sums / batches).tolist()
        return {"val_loss": means[0], "val_regression_loss": means[1], "val_classification_loss": means[2]}

    # --------------------------------------------------------------------------------- output
    def _call_hooks(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self, *args)

    def _log_start(self) -> None:
        cfg = self.config
        if not self.is_main:
            return
        n_params = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        world = f", {self.dist.world_size} processes" if self.dist.enabled else ""
        self.log.info(
            f"Training {cfg.net} ({n_params / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trainable) on "
            f"{self.device}{world}: {len(self.class_names) - 1} classes, {len(self.train_set)} training images"  # type: ignore[arg-type]
            + (f", {len(self.val_set)} validation images" if self.val_set is not None else "")  # type: ignore[arg-type]
        )
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "off")  # type: ignore[arg-type]
        length = (f"{cfg.iterations} iterations" if cfg.iterations
                  else f"{self.num_epochs} epoch{'s' if self.num_epochs != 1 else ''}")
        self.log.info(f"{length} of {self.steps_per_epoch} steps (batch {cfg.batch_size}), scheduler {cfg.scheduler}, "
                      f"lr {cfg.lr}, amp {amp}; checkpoints in {self.folder}")

    def _log_window(self, window: _Average, images_per_s: float, lr: float) -> None:
        if not self.is_main:
            return
        loss, reg, cls = window.means()
        remaining = self.max_steps - self.step
        per_step = self.config.batch_size * self.dist.world_size / max(images_per_s, 1e-9)
        self.log.info(
            f"Epoch: {self.epoch}, Step: {self.epoch_step}/{self.steps_per_epoch}, Avg Loss: {loss:.4f}, "
            f"Avg Regression Loss {reg:.4f}, Avg Classification Loss: {cls:.4f}, lr {lr:.3g}, "
            f"{images_per_s:.1f} img/s, ETA {_format_seconds(remaining * per_step)}"
        )
        record = {"kind": "train", "epoch": self.epoch, "epoch_float": self.epoch + self.epoch_step / self.steps_per_epoch,
                  "step": self.step, "loss": loss, "regression_loss": reg, "classification_loss": cls, "lr": lr,
                  "images_per_s": images_per_s}
        assert self.metrics is not None and self.tensorboard is not None
        self.metrics.write(record)
        self.tensorboard.write("train", record, self.step)

    def _log_epoch(self, record: dict) -> None:
        parts = [f"Epoch: {record['epoch']}", f"Train Loss: {record['train_loss']:.4f}"]
        if "val_loss" in record:
            parts.append(f"Validation Loss: {record['val_loss']:.4f}")
        if "mAP" in record:
            parts.append(f"Validation mAP: {record['mAP']:.4f}")
        parts.append(f"{record['time_s']:.1f} s")
        self.log.info(", ".join(parts))
        assert self.metrics is not None and self.tensorboard is not None
        self.metrics.write(record)
        self.tensorboard.write("epoch", {k: v for k, v in record.items() if k not in ("epoch", "kind")}, self.step)

    def _finish(self) -> None:
        if self.is_main:
            try:
                if self.metrics is not None:
                    plot_curves(self.metrics.records, self.folder / "curves.png", title=self.config.net)
            except Exception as exc:  # a plot must never lose a finished run
                self.log.warning(f"could not write curves.png: {exc}")
            if self.tensorboard is not None:
                self.tensorboard.close()
        close_logger()

    def summary(self) -> dict:
        """Where the run ended: epoch, step, best mAP, the last epoch record, checkpoint paths."""
        best = self.folder / "best.pth"
        return {
            "epoch": self.epoch, "step": self.step,
            "best_map": None if self.best_map == -math.inf else self.best_map,
            "last": self.history[-1] if self.history else None,
            "checkpoint": str(self.folder / "last.pth"),
            "best_checkpoint": str(best) if best.exists() else None,
            "folder": str(self.folder),
        }


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def train(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict:
    """Build a :class:`Trainer` from ``config``, run it, leave the process group; return its summary."""
    try:
        trainer = Trainer(config, hooks=hooks)
        return trainer.fit()
    finally:
        dist_utils.cleanup_distributed()
