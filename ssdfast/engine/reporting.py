"""What a run tells its user: the lines of the console and ``train.log`` (pytorch-ssd's wording, epochs
counted from 0) and the records of ``metrics.jsonl`` / TensorBoard, through :class:`RunReport`; the files
themselves are :mod:`ssdfast.engine.run_logs`', the warnings :mod:`ssdfast.engine.notes`'."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..io.labels import class_count
from .hooks import StepOutput
from .run_logs import MetricsLog, TensorBoardLog, plot_curves

if TYPE_CHECKING:
    from .settings import TrainConfig
    from .trainer import Trainer

__all__ = ["RunningMeans", "RunReport", "format_seconds"]


class RunningMeans:
    """Means of (loss, regression loss, classification loss) over the steps added (skipped ones left out)."""

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


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``, ``65`` -> ``"1:05"``; ``"?"`` when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunReport:
    """Writes a run's log lines and metrics records (main process only; elsewhere it does nothing)."""

    def __init__(self, log: logging.Logger, folder: Path, *, is_main: bool, resume_step: int | None) -> None:
        self.log = log
        self.is_main = is_main
        self.metrics = MetricsLog(folder / "metrics.jsonl", resume_step=resume_step) if is_main else None
        self.tensorboard = TensorBoardLog(folder / "tensorboard", purge_step=resume_step) if is_main else None
        self.window = RunningMeans()
        self.window_images = 0
        self.window_start = time.perf_counter()

    def start(self, t: "Trainer") -> None:
        """The lines that open a run: what trains on what, for how long, with which CPU plan."""
        if not self.is_main:
            return
        cfg = t.config
        n_params = sum(p.numel() for p in t.model.parameters())
        n_train = sum(p.numel() for p in t.model.parameters() if p.requires_grad)
        world = f", {t.dist.world_size} processes" if t.dist.enabled else ""
        self.log.info(
            f"Training {cfg.net} ({n_params / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trainable) on "
            f"{t.device}{world}: {class_count(len(t.class_names))}, {len(t.train_set)} training images"  # type: ignore[arg-type]
            + (f", {len(t.val_set)} validation images" if t.val_set is not None else "")  # type: ignore[arg-type]
        )
        self.log.info(f"Validation: {t.data.validation_source}")
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(t.amp_dtype, "off")  # type: ignore[arg-type]
        length = (f"{cfg.iterations} iterations" if cfg.iterations
                  else f"{t.num_epochs} epoch{'s' if t.num_epochs != 1 else ''} (0-{t.num_epochs - 1})")
        self.log.info(f"{length} of {t.steps_per_epoch} steps (batch {cfg.batch_size}), scheduler {cfg.scheduler}, "
                      f"lr {cfg.lr}, amp {amp}; checkpoints in {t.folder} (run {t.run_id})")
        self.log.info(f"CPU: {t.threads} compute thread{'s' if t.threads != 1 else ''} and {t.num_workers} data "
                      f"worker{'s' if t.num_workers != 1 else ''} on {t.cores} core{'s' if t.cores != 1 else ''}")
        self.reset_window()

    def reset_window(self) -> None:
        self.window.reset()
        self.window_images, self.window_start = 0, time.perf_counter()

    def step(self, t: "Trainer", out: StepOutput) -> None:
        """Every step: averages; every ``--debug-steps`` steps (and at an epoch's end) a line and a record."""
        self.window.add(out)
        self.window_images += out.batch_size * t.dist.world_size
        if not (t.step % t.config.debug_steps == 0 or t.epoch_step == t.steps_per_epoch):
            return
        images_per_s = self.window_images / max(time.perf_counter() - self.window_start, 1e-9)
        if self.is_main:
            loss, reg, cls = self.window.means()
            per_step = t.config.batch_size * t.dist.world_size / max(images_per_s, 1e-9)
            self.log.info(
                f"Epoch: {t.epoch}, Step: {t.epoch_step}/{t.steps_per_epoch}, Avg Loss: {loss:.4f}, "
                f"Avg Regression Loss {reg:.4f}, Avg Classification Loss: {cls:.4f}, lr {out.lr:.3g}, "
                f"{images_per_s:.1f} img/s, ETA {format_seconds((t.max_steps - t.step) * per_step)}"
            )
            record = {"kind": "train", "epoch": t.epoch, "epoch_float": t.epoch + t.epoch_step / t.steps_per_epoch,
                      "step": t.step, "loss": loss, "regression_loss": reg, "classification_loss": cls,
                      "lr": out.lr, "images_per_s": images_per_s}
            self._write("train", record, t.step)
        self.reset_window()

    def epoch(self, record: dict) -> None:
        """The end of an epoch: pytorch-ssd's line, the record."""
        if not self.is_main:
            return
        parts = [f"Epoch: {record['epoch']}", f"Train Loss: {record['train_loss']:.4f}"]
        if "val_loss" in record:
            parts.append(f"Validation Loss: {record['val_loss']:.4f}")
        if "mAP" in record:
            parts.append(f"Validation mAP: {record['mAP']:.4f}")
        parts.append(f"{record['time_s']:.1f} s")
        self.log.info(", ".join(parts))
        skipped = record.get("skipped_images", 0) + record.get("val_skipped_images", 0)
        if skipped or record.get("images_with_warnings"):
            self.log.warning(f"Epoch: {record['epoch']}: {skipped} unreadable images skipped, "
                             f"{record.get('images_with_warnings', 0)} used with a warning (each file is named once, "
                             "when first met)")
        self._write("epoch", {k: v for k, v in record.items() if k not in ("epoch", "kind")}, record["step"], record)

    def finished(self, config: "TrainConfig", num_epochs: int, max_steps: int) -> None:
        """A resumed run that has nothing left to do says so."""
        flag, count, unit = (("--iterations", max_steps, "iterations") if config.iterations
                             else ("--num-epochs", num_epochs, "epochs"))
        self.log.info(f"{config.resume} already finished all {count} {unit} of its run; raise {flag} to train further")

    def write(self, record: dict) -> None:
        """Any other record (main process)."""
        if self.metrics is not None:
            self.metrics.write(record)

    def _write(self, prefix: str, scalars: dict, step: int, record: dict | None = None) -> None:
        assert self.metrics is not None and self.tensorboard is not None
        self.metrics.write(record if record is not None else scalars)
        self.tensorboard.write(prefix, scalars, step)

    def finish(self, title: str, folder: Path) -> None:
        """curves.png from the records; TensorBoard closed."""
        if not self.is_main:
            return
        try:
            if self.metrics is not None:
                plot_curves(self.metrics.records, folder / "curves.png", title=title)
        except Exception as exc:  # a plot must never lose a finished run
            self.log.warning(f"could not write curves.png: {exc}")
        if self.tensorboard is not None:
            self.tensorboard.close()

