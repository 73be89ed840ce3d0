"""Every warning of a training run, on the console, in ``train.log`` and in ``metrics.jsonl``, once.

Where warnings come from:

- batches: ``DetectionBatch.notes`` (an image used although truncated, an unreadable image skipped),
  made in the data workers and carried to the main process with the batch;
- datasets: their parse notes (``dataset.notes``: boxes clipped to the image, zero-area boxes dropped,
  unknown classes, unreadable annotation files, each with a count) and counts (``dataset.stats``);
- the ``ssdfast.data`` logger and Python ``warnings`` (e.g. ``ImageWarning``) in the main process.

:class:`RunNotes` sends each to the train logger (console and ``train.log``) and writes a
``{"kind": "warning"}`` record to ``metrics.jsonl``; a message about the same file is reported once per
run (an unreadable image is skipped every epoch, but said once). In data workers, the
``ssdfast.data`` logger is quiet during a run: what it would say arrives with the batch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from typing import Any, Iterator, Sequence

__all__ = ["RunNotes", "dataset_stats_notes"]

_DATA_LOGGER = "ssdfast.data"
# "skipped <path>: ..." (a batch note) and "skipping <path>: ..." (the data logger) say the same thing
_VERB = re.compile(r"^(skipped|skipping)\s+", re.IGNORECASE)
_STAT_TEXT = {
    "clipped_boxes": "boxes clipped to their image",
    "zero_area_boxes": "boxes of zero area dropped",
    "unknown_class_boxes": "boxes of classes not in the label file dropped",
    "bad_annotations": "annotation files unreadable and skipped",
}


def dataset_stats_notes(dataset: Any) -> list[str]:
    """One line per problem counted in ``dataset.stats`` (used when the dataset has no ``notes``)."""
    stats = getattr(dataset, "stats", None) or {}
    lines = [f"{int(stats[key])} {text}" for key, text in _STAT_TEXT.items() if stats.get(key)]
    bad = list(getattr(dataset, "bad_files", []) or [])
    if bad:
        lines.append("unreadable annotation files: " + ", ".join(bad[:5])
                     + (f" ... ({len(bad) - 5} more)" if len(bad) > 5 else ""))
    return lines


class RunNotes:
    """Reports a run's warnings to ``log`` and ``metrics.jsonl`` (see the module docstring).

    Records made before :meth:`attach_metrics` (the datasets are read before the metrics file is
    opened) are kept and written then. ``epoch`` and ``step`` locate each record.
    """

    def __init__(self, log: logging.Logger, *, records: bool = True) -> None:
        self.log = log
        self.records = records  # False on processes that write no metrics (DDP ranks other than 0)
        self.metrics: Any = None
        self.epoch = 0
        self.step = 0
        self.count = 0
        self._seen: set[str] = set()
        self._pending: list[dict] = []

    def attach_metrics(self, metrics: Any) -> None:
        """Write records to ``metrics`` (a :class:`~ssdfast.engine.run_logs.MetricsLog`) from now on."""
        self.metrics = metrics
        for record in self._pending:
            record.setdefault("epoch", self.epoch)
            record["step"] = max(int(record.get("step", 0)), self.step)
            metrics.write(record)
        self._pending.clear()

    def record(self, record: dict) -> None:
        """Write a metrics record now, or when the metrics file is attached."""
        if not self.records:
            return
        if self.metrics is None:
            self._pending.append(record)
        else:
            self.metrics.write(record)

    def warn(self, message: str, source: str) -> bool:
        """Report ``message`` unless it was reported before; True when reported."""
        message = " ".join(str(message).split())
        key = _VERB.sub("", message)
        if not message or key in self._seen:
            return False
        self._seen.add(key)
        self.count += 1
        self.log.warning(message)
        self.record({"kind": "warning", "source": source, "message": message, "epoch": self.epoch, "step": self.step})
        return True

    def batch(self, notes: Sequence[str]) -> None:
        """The notes of a batch (``DetectionBatch.notes``)."""
        for note in notes:
            self.warn(note, "data")

    def dataset(self, role: str, dataset: Any, source: str | None = None) -> None:
        """Report a dataset: its size and counts as a ``{"kind": "data"}`` record, its notes as warnings."""
        notes = list(getattr(dataset, "notes", None) or [])
        if not hasattr(dataset, "notes"):  # datasets without parse notes: say what their counts show
            notes = dataset_stats_notes(dataset)
        stats = {k: int(v) for k, v in (getattr(dataset, "stats", None) or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        record: dict[str, Any] = {"kind": "data", "role": role, "images": len(dataset), "stats": stats, "notes": notes}
        if source:
            record["source"] = source
        self.record(record)
        for note in notes:
            self.warn(f"{role} data: {note}", "dataset")

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Route Python warnings and the ``ssdfast.data`` logger of this process to :meth:`warn` inside
        the block (their records below WARNING go to the log only); quiet them in forked workers."""
        pid = os.getpid()
        data_logger = logging.getLogger(_DATA_LOGGER)
        handler = _Forward(self, pid)
        previous_propagate = data_logger.propagate
        data_logger.addHandler(handler)
        data_logger.propagate = False
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                            line: Any = None) -> None:
                if os.getpid() != pid:
                    shown(message, category, filename, lineno, file, line)
                    return
                self.warn(f"{category.__name__}: {message}", "python")

            warnings.showwarning = showwarning
            try:
                yield
            finally:
                data_logger.removeHandler(handler)
                data_logger.propagate = previous_propagate


class _Forward(logging.Handler):
    """``ssdfast.data`` records -> :meth:`RunNotes.warn` (WARNING and above) or the train log."""

    def __init__(self, notes: RunNotes, pid: int) -> None:
        super().__init__(logging.DEBUG)
        self.notes = notes
        self.pid = pid

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self.pid:  # a data worker: its notes travel with the batch
            return
        try:
            message = " ".join(record.getMessage().split())
            if record.levelno >= logging.WARNING:
                self.notes.warn(message, "log")
            else:
                self.notes.log.log(record.levelno, message)
        except Exception:
            self.handleError(record)
