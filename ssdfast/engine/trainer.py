"""The SSD training loop.

The loop, in :meth:`Trainer.fit`, reads in a page::

    for each epoch:
        for batch in the epoch's loader:                     # order = f(seed, epoch)
            train_step(...)                                  # forward, loss, backward, step
            after_step hooks, log, maybe a mid-epoch checkpoint, stop here on Ctrl-C / SIGTERM
        end_epoch(): validate (loss + mAP), write last.pth / best.pth, after_epoch hooks

Beside it: settings (:mod:`.settings`), optimizer and schedule (:mod:`.optim`), sampling and RNG
states (:mod:`.sampling`), data, network and weights (:mod:`.build`), the run folder
(:mod:`.run_folder`), warnings (:mod:`.notes`), log lines and records (:mod:`.reporting`), validation
(:mod:`.validation`). Extension points: :class:`Hook` objects (``before_train``, ``after_step``,
``after_epoch``, ``after_train``), and methods to override in a subclass: :meth:`Trainer.compute_loss`,
:meth:`Trainer.train_step`, :meth:`Trainer.validate`.

Exact resume: everything random in an epoch is a function of ``(seed, epoch)``; a checkpoint stores the
optimizer, scheduler, grad-scaler and RNG states and the position ``(epoch, step in it)``, so a resumed
run gives the uninterrupted run's losses (on CPU, exactly). Checkpoints are written at every epoch's
end, every ``checkpoint_every_steps`` steps, and when Ctrl-C or SIGTERM stops the run.
"""
from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..device import resolve_device
from . import build, sampling, stopping
from . import distributed as dist_utils
from .hooks import Hook, StepOutput
from .memory_format import training_memory_format
from .notes import RunNotes
from .optim import LrSchedule, build_optimization, build_param_groups, make_sgd
from .reporting import RunningMeans, RunReport
from .run_folder import new_run_id, prepare_run_folder
from .run_logs import close_logger, setup_logger
from .sampling import EpochSampler, SeededSamples, get_rng_state, set_rng_state
from .settings import TrainConfig
from .stopping import NonFiniteLossError, TrainingInterrupted
from .validation import validation_loss, validation_metrics

if TYPE_CHECKING:
    from ..model_files import ModelFile

__all__ = ["Trainer", "train", "TrainConfig", "Hook", "StepOutput", "NonFiniteLossError",
           "TrainingInterrupted", "LrSchedule", "EpochSampler", "SeededSamples", "build_param_groups", "make_sgd",
           "get_rng_state", "set_rng_state"]


class Trainer:
    """Builds data, model, optimizer and scheduler from a :class:`TrainConfig`, and runs :meth:`fit`.

    ``config.resume`` continues a run: settings left at their defaults come from the checkpoint
    (:meth:`TrainConfig.inherit_resumed`). ``train_dataset`` / ``val_dataset`` / ``model`` may be given
    to bypass building them from the config (the datasets must then follow the ``ssdfast.data``
    contract and already carry their transforms).
    """

    def __init__(self, config: TrainConfig, *, hooks: Sequence[Hook] = (), model: nn.Module | None = None,
                 train_dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> None:
        from ..threads import available_cores, default_num_workers

        config = config.inherit_resumed()
        if train_dataset is None:
            config.check()
        self.config = config
        self.hooks = list(hooks)
        self.dist, self.device = dist_utils.init_distributed(resolve_device(config.device, config.use_cuda))
        self.is_main = self.dist.is_main
        self.folder = Path(config.checkpoint_folder)
        start = build.read_start_files(config)  # each file read once; one refused stops here, before any is written
        resume = start.resume
        self.resumed = resume is not None and resume.continues_run
        self.run_id = (resume.run_id if self.resumed and resume is not None else None) or new_run_id()
        folder_lines = prepare_run_folder(self.folder, config, resume) if self.is_main else []
        self.log = setup_logger(self.folder, self.is_main, config.log_level)
        for level, line in folder_lines:
            self.log.log(level, line)
        self.notes = RunNotes(self.log, records=self.is_main)

        self.cores = available_cores()
        self.num_workers = default_num_workers() if config.num_workers is None else int(config.num_workers)
        self.threads = self._threads_before = torch.get_num_threads()  # planned by fit()
        sampling.seed_everything(config.seed)

        with self.notes.capture():
            self.data = build.build_data(config, train_dataset=train_dataset, val_dataset=val_dataset)
        self.train_set, self.val_set = self.data.train_set, self.data.val_set
        self.class_names, self.category_ids = self.data.class_names, self.data.category_ids
        length = build.run_length(config, len(self.train_set), self.dist.world_size)  # type: ignore[arg-type]
        self.steps_per_epoch, self.num_epochs, self.max_steps = (length.steps_per_epoch, length.num_epochs,
                                                                 length.max_steps)
        self.drop_last = length.drop_last

        given = model is not None
        model = model if given else build.build_model(config, len(self.class_names), start)
        self.data.set_transforms(model.config, config.zoom_out_max)  # type: ignore[attr-defined]
        self.log.info(build.init_weights(model, config, self.class_names, start, notes=self.notes, given=given))
        model.to(self.device)
        self.memory_format = training_memory_format(model, config, self.device, self.log)
        model.to(memory_format=self.memory_format)
        self.model = model  # the plain module: saved, validated
        self.param_groups = build_param_groups(model, config)
        self.train_model = build.wrap_for_training(model, self.dist.enabled, self.device, compile=config.compile)
        self.criterion = build.build_criterion(model, self.device)
        self.optimization = opt = build_optimization(self.param_groups, config, self.device,
                                                     steps_per_epoch=self.steps_per_epoch,
                                                     num_epochs=self.num_epochs, max_steps=self.max_steps)
        self.optimizer, self.lr_schedule, self.scheduler = opt.optimizer, opt.schedule, opt.scheduler
        self.amp_dtype, self.scaler = opt.amp_dtype, opt.scaler

        self.epoch = 0            # the epoch being trained (0-based)
        self.epoch_step = 0       # steps done inside it
        self.step = 0             # global steps done
        self.history: list[dict] = []
        self.best_map = -math.inf
        self.nonfinite_in_row = 0
        self.skipped_steps = 0
        self.saved_at: tuple[int, int, int] | None = None  # (epoch, epoch_step, step) of the last last.pth
        if self.resumed and resume is not None:
            self._restore(resume)
        else:  # per-process RNG for anything random outside the data (dropout), same on every run
            sampling.seed_everything(sampling.derive_seed(config.seed, 1 << 20, self.dist.rank))
        self.report = RunReport(self.log, self.folder, is_main=self.is_main,
                                resume_step=self.step if self.resumed else None)
        self.notes.epoch, self.notes.step = self.epoch, self.step
        if self.is_main:
            self.notes.attach_metrics(self.report.metrics)
            self.notes.dataset("training", self.train_set)
            if self.val_set is not None:
                self.notes.dataset("validation", self.val_set, self.data.validation_source)
            from ..io import write_label_file

            write_label_file(self.class_names, self.folder / "labels.txt")

    # -------------------------------------------------------------------------------- state
    def train_state(self) -> dict:
        """Everything besides the weights that a resumed run needs (plain types and tensors)."""
        best = None if self.best_map == -math.inf else self.best_map
        return {**self.optimization.state_dict(), "epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step,
                "rng": get_rng_state(), "metrics": {"history": list(self.history), "best_map": best},
                "args": self.config.to_dict(), "run_id": self.run_id}

    def _restore(self, resume: "ModelFile") -> None:
        state = resume.train_state
        assert state is not None
        self.optimization.load_state_dict(state, step=int(state["step"]), where=resume.path)
        self.epoch, self.epoch_step, self.step = (int(state["epoch"]), int(state.get("epoch_step", 0)),
                                                  int(state["step"]))
        self.saved_at = (self.epoch, self.epoch_step, self.step)
        metrics = state.get("metrics") or {}
        self.history = list(metrics.get("history") or [])
        best = metrics.get("best_map")
        self.best_map = float(best) if best is not None else -math.inf
        if state.get("rng") and self.dist.world_size == 1:
            set_rng_state(state["rng"])
        else:  # other ranks' RNG streams were not saved: reseed them from the position
            sampling.seed_everything(sampling.derive_seed(self.config.seed, self.step, self.dist.rank))
        self.log.info(f"Resumed from {resume.path}: epoch {self.epoch}, step {self.step}")

    def save(self, name: str = "last.pth") -> Path | None:
        """Write a checkpoint (weights + :meth:`train_state`) in the checkpoint folder (rank 0 only)."""
        if not self.is_main:
            return None
        from ..model_files import save_checkpoint

        path = self.folder / name
        save_checkpoint(path, self.model, self.class_names, category_ids=self.category_ids,
                        train_state=self.train_state())
        if name == "last.pth":
            self.saved_at = (self.epoch, self.epoch_step, self.step)
        return path

    # ------------------------------------------------------------------------------- the loop
    def epoch_loader(self, epoch: int, start_step: int = 0) -> DataLoader:
        """This rank's batches of ``epoch``, from batch ``start_step`` on."""
        cfg = self.config
        return sampling.epoch_loader(self.train_set, epoch=epoch, seed=cfg.seed, batch_size=cfg.batch_size,
                                     start=start_step * cfg.batch_size, num_replicas=self.dist.world_size,
                                     rank=self.dist.rank, num_workers=self.num_workers, drop_last=self.drop_last,
                                     pin_memory=self.device.type == "cuda")

    def fit(self) -> dict:
        """Train to ``num_epochs`` (or ``iterations``) and return a summary dict.

        Threads (:func:`ssdfast.threads.plan_cpu`): on CPU the network takes every core (the data
        workers idle most of a CPU step), never more than were set before; the count set before comes
        back at the end."""
        from ..threads import plan_cpu

        self._threads_before = torch.get_num_threads()
        self.threads = plan_cpu(self.num_workers, self.device.type, limit=self._threads_before, busy_workers=False)
        if self.step >= self.max_steps:
            self.report.finished(self.config, self.num_epochs, self.max_steps)
            self._finish()
            return self.summary()
        self.report.start(self)
        self._call_hooks("before_train")
        try:
            with self.notes.capture(), stopping.StopRequest() as self._stop:
                while self.step < self.max_steps:
                    self.train_epoch()
                    finished_epoch = self.epoch_step >= self.steps_per_epoch
                    if finished_epoch or self.step >= self.max_steps:
                        self.end_epoch(finished_epoch)
                    if self._stop_agreed():
                        self._stop_here()
        except KeyboardInterrupt as exc:
            if not isinstance(exc, TrainingInterrupted) and self.is_main:
                command = stopping.resume_command(self.folder, self.config.device)
                self.log.warning(stopping.interrupted_message(self.saved_at, self.step, self.steps_per_epoch,
                                                              self.folder, command))
            raise
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
        self._epoch_means, self._epoch_start, self._epoch_images = RunningMeans(), time.perf_counter(), 0
        self._epoch_skipped, self._epoch_warned = 0, 0
        self.report.reset_window()
        bar = tqdm(total=self.steps_per_epoch, initial=self.epoch_step,
                   desc=f"Epoch: {self.epoch} (of 0-{self.num_epochs - 1})",
                   disable=not (self.is_main and cfg.progress and sys.stderr.isatty()), dynamic_ncols=True,
                   leave=False, file=sys.stderr)
        try:
            for batch in sampling.batches(loader):
                if self.step >= self.max_steps:
                    break
                self._note_batch(batch)
                out = self.train_step(batch.images, batch.gt_boxes, batch.gt_labels)
                self.step += 1
                self.epoch_step += 1
                self.notes.step = self.step
                self._epoch_means.add(out)
                self._epoch_images += out.batch_size * self.dist.world_size
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{out.lr:.2g}",
                                img_s=f"{self._epoch_images / max(time.perf_counter() - self._epoch_start, 1e-9):.1f}")
                self.report.step(self, out)
                self._call_hooks("after_step", out)
                if (cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0
                        and self.epoch_step < self.steps_per_epoch and self.step < self.max_steps):
                    self.save("last.pth")
                if self._stop_agreed():
                    self._stop_here()
        finally:
            bar.close()

    def _note_batch(self, batch: Any) -> None:
        self._epoch_skipped += int(batch.skipped)
        self._epoch_warned += len(batch.notes) - int(batch.skipped)
        self.notes.batch(batch.notes)

    def compute_loss(self, images: torch.Tensor, gt_boxes: torch.Tensor,
                     gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass and MultiBox loss -> ``(regression_loss, classification_loss)`` scalars.

        ``images`` [B,3,S,S] normalized; ``gt_boxes`` [B,G,4] normalized xyxy; ``gt_labels`` [B,G] (-1 pads).
        """
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            confidences, locations = self.train_model(images)
        return self.criterion(confidences.float(), locations.float(), gt_boxes, gt_labels)

    def train_step(self, images: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> StepOutput:
        """One optimisation step; a non-finite loss (or a batch whose images were all unreadable) skips
        it on every process, with a warning."""
        cfg = self.config
        lr = self.optimizer.param_groups[-1]["lr"]
        empty = images.shape[0] == 0
        if empty:  # no forward pass: a NaN loss makes every process skip the step
            loss = regression_loss = classification_loss = torch.full((), math.nan, device=self.device)
        else:
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            regression_loss, classification_loss = self.compute_loss(
                images, gt_boxes.to(self.device, non_blocking=True), gt_labels.to(self.device, non_blocking=True))
            loss = regression_loss + classification_loss
        values = torch.stack([loss.detach(), regression_loss.detach(), classification_loss.detach(),
                              torch.full((), float(empty), device=loss.device)]).float()
        dist_utils.all_reduce_sum(values)  # a NaN on any rank makes every rank skip the step
        # The one host sync of a step: the loss must be known to be finite before it touches the weights.
        total, reg, cls, any_empty = (v / self.dist.world_size for v in values.tolist())
        out = StepOutput(total, reg, cls, int(images.shape[0]), lr)

        self.optimizer.zero_grad(set_to_none=True)
        if any_empty:
            out.skipped = True
            self.log.warning(f"step {self.step + 1} (epoch {self.epoch}) skipped: none of its images could be read")
        elif not math.isfinite(total):
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
        self.log.warning(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): loss={out.loss} "
                         f"(regression {out.regression_loss}, classification {out.classification_loss}); step skipped "
                         f"[{self.nonfinite_in_row}/{cfg.max_nonfinite_steps} in a row]")
        if self.nonfinite_in_row >= cfg.max_nonfinite_steps:
            amp = cfg.amp if self.amp_dtype is not None else None
            raise NonFiniteLossError(stopping.nonfinite_message(self.nonfinite_in_row, self.step + 1, cfg.lr, amp,
                                                                self.folder / "last.pth"))

    def end_epoch(self, finished: bool) -> dict:
        """Validate when due, write the epoch record and the checkpoints, call ``after_epoch`` hooks."""
        epoch = self.epoch
        train_means = self._reduced_epoch_means()
        if finished:
            self.epoch += 1
            self.epoch_step = 0
        done = self.step >= self.max_steps
        elapsed = time.perf_counter() - self._epoch_start
        record: dict[str, Any] = {
            "kind": "epoch", "epoch": epoch, "epoch_end": self.epoch + self.epoch_step / self.steps_per_epoch,
            "step": self.step, "train_loss": train_means[0], "train_regression_loss": train_means[1],
            "train_classification_loss": train_means[2], "lr": self.optimizer.param_groups[-1]["lr"],
            "time_s": elapsed, "images_per_s": self._epoch_images / max(elapsed, 1e-9),
            "skipped_steps": self.skipped_steps, "skipped_images": self._epoch_skipped,
            "images_with_warnings": self._epoch_warned,
        }
        if self.val_set is not None and ((epoch + 1) % self.config.validation_epochs == 0 or done):
            record.update(self.validate())
        improved = record.get("mAP") is not None and record["mAP"] > self.best_map
        if improved:
            self.best_map = float(record["mAP"])
        self.history.append({k: v for k, v in record.items() if isinstance(v, (int, float, str)) or v is None})
        self.notes.epoch = self.epoch
        if self.is_main:
            self.report.epoch(record)
            self.save("last.pth")
            if improved:
                self.save("best.pth")
        dist_utils.barrier()
        self._call_hooks("after_epoch", record)
        return record

    def _reduced_epoch_means(self) -> tuple[float, float, float]:
        avg = self._epoch_means
        t = torch.tensor([*avg.sums, float(avg.n)], dtype=torch.float64)
        dist_utils.all_reduce_sum(t)
        n = t[3].item()
        return tuple((t[:3] / n).tolist()) if n else (float("nan"),) * 3  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Validation loss and mAP on the validation set (computed on rank 0; others get nothing).

        mAP is VOC's (``metric`` voc) or COCO's AP@[.5:.95] (``metric`` coco; its AP50 etc. are also
        returned); ``auto`` picks COCO for ``--dataset-type coco`` and VOC otherwise.
        """
        result: dict[str, Any] = {}
        if self.is_main and self.val_set is not None:
            t0 = time.perf_counter()
            result.update(self.validation_loss())
            result.update(validation_metrics(self.model, self.val_set, self.config, self.device,
                                             num_workers=self.num_workers, progress=self.config.progress,
                                             notes=self.notes))
            result["val_time_s"] = time.perf_counter() - t0
            self.model.train()
        self.train_model.train()
        return result

    def validation_loss(self) -> dict:
        """Mean regression / classification loss over the validation set (the plain model, eval mode)."""
        assert self.val_set is not None
        return validation_loss(self.model, self.val_set, self.criterion, self.config, self.device,
                               num_workers=self.num_workers, amp_dtype=self.amp_dtype, notes=self.notes,
                               memory_format=self.memory_format)

    # ------------------------------------------------------------------------------ stopping
    def _stop_agreed(self) -> bool:
        """Whether a stop was requested (on any process, when several train together)."""
        requested = getattr(self, "_stop", None) is not None and self._stop.requested
        if not self.dist.enabled:
            return requested
        flag = torch.tensor([float(requested)], device=self.device)
        return dist_utils.all_reduce_sum(flag).item() > 0

    def _stop_here(self) -> None:
        signum = self._stop.signal_number or signal.SIGINT
        path = self.save("last.pth")
        message = stopping.stopped_message(signum, (self.epoch, self.epoch_step, self.step), self.steps_per_epoch,
                                           path, stopping.resume_command(self.folder, self.config.device))
        self.log.warning(message)
        raise TrainingInterrupted(message, signal_number=int(signum), checkpoint=str(path) if path else None)

    # --------------------------------------------------------------------------------- output
    def _call_hooks(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self, *args)

    def _finish(self) -> None:
        self.report.finish(self.config.net, self.folder)
        if torch.get_num_threads() != self._threads_before:
            torch.set_num_threads(self._threads_before)
        close_logger()

    def summary(self) -> dict:
        """Where the run ended: epoch, step, best mAP, the last epoch record, checkpoint paths."""
        best = self.folder / "best.pth"
        return {"epoch": self.epoch, "step": self.step,
                "best_map": None if self.best_map == -math.inf else self.best_map,
                "last": self.history[-1] if self.history else None, "checkpoint": str(self.folder / "last.pth"),
                "best_checkpoint": str(best) if best.exists() else None, "folder": str(self.folder),
                "run_id": self.run_id}


def train(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict:
    """Build a :class:`Trainer` from ``config``, run it, leave the process group; return its summary."""
    try:
        trainer = Trainer(config, hooks=hooks)
        return trainer.fit()
    finally:
        dist_utils.cleanup_distributed()
