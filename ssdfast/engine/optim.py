"""Optimisation: pytorch-ssd's parameter groups, the fused SGD, the learning-rate schedule, AMP.

:func:`build_optimization` turns the settings into the optimizer, the ``LambdaLR`` scheduler (stepped
every iteration, following :class:`LrSchedule`) and the mixed-precision setup the training step uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SettingsError
from .settings import TrainConfig

__all__ = ["LrSchedule", "build_param_groups", "make_sgd", "Optimization", "build_optimization", "amp_dtype"]


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
            raise SettingsError(f"--freeze-base-net: {config.net} has no base_net to freeze")
        base.requires_grad_(False)
    head_ids = {id(p) for h in heads for p in h.parameters()}
    if config.freeze_net:
        for p in model.parameters():
            if id(p) not in head_ids:
                p.requires_grad_(False)
    base_ids = {id(p) for p in base.parameters()} if base is not None else set()
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


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


@dataclass
class Optimization:
    """What :func:`build_optimization` makes: the optimizer, its schedule (``schedule`` is the
    ``scheduler``'s lambda), the autocast dtype (None: full precision) and the fp16 grad scaler."""

    optimizer: torch.optim.SGD
    schedule: LrSchedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    amp_dtype: torch.dtype | None
    scaler: Any

    def state_dict(self) -> dict:
        """The optimizer's, scheduler's and grad scaler's states (a checkpoint's ``train_state`` holds them)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict, *, step: int, where: str) -> None:
        """Continue from ``state`` (of :meth:`state_dict`) at global step ``step``, keeping this run's
        schedule (a resumed run may extend ``--num-epochs`` / ``--t-max``). ``where`` names the file."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # other parameter groups: different --freeze-* flags
            raise SettingsError(f"--resume {where}: its optimizer state does not fit this run ({exc}); "
                                "pass the --freeze-base-net / --freeze-net flags of the interrupted run") from None
        wanted = dict(vars(self.schedule))
        self.scheduler.load_state_dict(state["scheduler"])
        # load_state_dict copied the saved schedule's attributes into ours: put this run's back
        self.schedule.__dict__.update(wanted)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * self.schedule(step)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def build_optimization(param_groups: list[dict], config: TrainConfig, device: torch.device, *,
                       steps_per_epoch: int, num_epochs: int, max_steps: int) -> Optimization:
    """SGD over ``param_groups``, the schedule of ``config`` for a run of ``num_epochs`` epochs of
    ``steps_per_epoch`` steps (``max_steps`` in all), and the AMP setup for ``device``."""
    optimizer = make_sgd(param_groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    per_epoch = config.iterations is None
    total = num_epochs if per_epoch else max_steps
    milestones = config.milestone_list()
    if milestones is None:  # pytorch-ssd's 80,100 of 120 epochs, scaled to this run
        milestones = [max(1, round(total * 2 / 3)), max(1, round(total * 5 / 6))]
    schedule = LrSchedule(
        kind=config.scheduler, steps_per_epoch=steps_per_epoch if per_epoch else 0,
        milestones=milestones, gamma=config.gamma, t_max=float(config.t_max or total), warmup=config.warmup,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Optimization(optimizer, schedule, scheduler, dtype, scaler)


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device`` (``auto``: fp16 on CUDA, bf16 elsewhere), None without AMP."""
    amp = config.amp if config.amp not in (None, "none") else None
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "bf16"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
