"""Extension points of the training loop: :class:`Hook` and what a step reports, :class:`StepOutput`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Hook", "StepOutput"]


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
