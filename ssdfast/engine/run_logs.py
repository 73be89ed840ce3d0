"""The files a training run leaves behind to read, and their formats: ``train.log`` (the ``ssdfast.train``
logger), ``metrics.jsonl``, ``curves.png``, TensorBoard events (when ``tensorboard`` is installed).

What goes into them is decided elsewhere: :mod:`ssdfast.engine.reporting` words the progress lines and
makes the records, :mod:`ssdfast.engine.notes` sends every warning once.

Records in ``metrics.jsonl`` are one JSON object per line with a ``kind``:

- ``"train"``: every ``--debug-steps`` steps: ``epoch`` (0-based), ``epoch_float`` (epochs done, with
  the fraction), ``step`` (global, 1-based), ``loss``, ``regression_loss``, ``classification_loss``
  (averages since the previous record, skipped steps left out), ``lr`` (of the heads), ``images_per_s``;
- ``"epoch"``: at the end of each epoch: ``epoch``, ``epoch_end`` (epochs done), ``step``,
  ``train_loss`` (and its parts), ``lr``, ``time_s``, ``images_per_s``, ``skipped_steps`` (non-finite
  losses, whole run), ``skipped_images`` (unreadable images left out this epoch),
  ``images_with_warnings`` (used with a warning, e.g. truncated, this epoch); after a validation also
  ``val_loss`` (and its parts), ``mAP``, ``per_class_AP``, ``val_skipped_images`` and, for COCO, the
  12 COCOeval numbers (``AP``, ``AP50``, ...);
- ``"data"``: at the start, one per dataset (``role`` training / validation): ``images``, ``source``
  (how the validation set was chosen), ``stats`` (boxes clipped, zero-area boxes dropped, bad
  annotation files...) and ``notes`` (the dataset's parse notes);
- ``"warning"``: every warning the console shows, each once: ``source`` (``data``: a batch's note
  such as a truncated image used or an unreadable one skipped; ``dataset``: a parse note;
  ``python``: a Python warning; ``log``: a warning logged by ``ssdfast.data``; ``weights``: the
  weights the run was to start from are missing, e.g. jetson-inference's default pretrained file),
  ``message``, ``epoch``, ``step``.

Epochs count from 0 everywhere: the progress bar, ``train.log`` (``Epoch: 0``, as pytorch-ssd's log)
and these records.

NaN and infinite values are written as ``null``.

Only the main process (rank 0) creates any of these.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

__all__ = ["LOGGER_NAME", "log_level", "setup_logger", "close_logger", "MetricsLog", "read_metrics", "plot_curves",
           "TensorBoardLog"]

LOGGER_NAME = "ssdfast.train"


class _ConsoleHandler(logging.StreamHandler):
    """Writes through ``tqdm.write``, which lifts an active progress bar above the line and redraws it
    below, so log lines never end up glued to the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never stop a run
            self.handleError(record)


def log_level(value: int | str) -> int:
    """``"info"`` / ``"WARNING"`` / ``logging.DEBUG`` -> the ``logging`` level number."""
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {value!r}")
    return level


def setup_logger(folder: str | Path | None, is_main: bool = True, level: int | str = logging.INFO) -> logging.Logger:
    """The ``ssdfast.train`` logger: messages to stderr and to ``folder/train.log`` (appended), both at
    ``level`` (``--log-level``).

    On processes other than rank 0 only errors are shown and no file is written. Calling it again
    (a second run in the same Python process) replaces the handlers of the first call.
    """
    level = log_level(level)
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(level if is_main else max(level, logging.ERROR))
    stream = _ConsoleHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(stream)
    if is_main and folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(folder) / "train.log", mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    return logger


def close_logger() -> None:
    """Close the file handler of :func:`setup_logger` (so the log file is complete and unlocked)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()


def _plain(value: Any) -> Any:
    """JSON-safe numbers: tensors and numpy scalars become floats, NaN/inf become None."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a half-written last line is ignored)."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume, drops records written after the checkpoint.

    ``resume_step``: the global step of the checkpoint a run resumes from. Records beyond it were
    written by the interrupted run after its last checkpoint and are replayed by the resumed run.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
            self.records: list[dict] = []
        else:
            kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            self.records = kept
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict) -> None:
        record = _plain(record)
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class TensorBoardLog:
    """Scalars to TensorBoard event files when ``torch.utils.tensorboard`` imports; silent otherwise."""

    def __init__(self, folder: str | Path, purge_step: int | None = None) -> None:
        self.writer = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed (or broken): TensorBoard is optional
            return
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def write(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _series(records: Iterable[dict], kind: str, key: str, x: str = "epoch") -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if r.get("kind") == kind and r.get(key) is not None and r.get(x) is not None:
            xs.append(r[x])
            ys.append(r[key])
    return xs, ys


def plot_curves(records: list[dict], path: str | Path, title: str | None = None) -> Path | None:
    """A PNG with the loss curves (train per logged step, train and validation per epoch) and the
    validation mAP per epoch. The x axis is epochs (a step record sits at its fractional epoch).
    Returns the path, or None when there is nothing to plot.
    """
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs, ys = _series(records, "train", "loss", "epoch_float")
    if xs:
        ax_loss.plot(xs, ys, color="tab:blue", alpha=0.35, linewidth=1, label="train (steps)")
    for key, style, label in (("train_loss", "o-", "train (epoch)"), ("val_loss", "s-", "validation")):
        ex, ey = _series(records, "epoch", key, "epoch_end")
        if ex:
            ax_loss.plot(ex, ey, style, markersize=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (regression + classification)")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend()

    mx, my = _series(records, "epoch", "mAP", "epoch_end")
    if mx:
        ax_map.plot(mx, my, "o-", color="tab:green", markersize=3, label="validation mAP")
        best = max(range(len(my)), key=lambda i: my[i])
        ax_map.annotate(f"{my[best]:.3f}", (mx[best], my[best]), textcoords="offset points", xytext=(0, 6), ha="center")
        ax_map.legend()
    else:
        ax_map.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_map.transAxes)
    ax_map.set_xlabel("epoch")
    ax_map.set_ylabel("mAP")
    ax_map.set_ylim(0, 1)
    ax_map.set_title("validation mAP")
    ax_map.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
