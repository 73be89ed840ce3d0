"""How a run stops before its end: on Ctrl-C (SIGINT) or SIGTERM, cleanly, or when its losses are
no longer finite. Neither is a mistake in the user's input (:mod:`ssdfast.errors`): the command line
gives each its own exit status (128 + the signal; 1).

While :class:`StopRequest` is active, the first signal only sets :attr:`StopRequest.signal_number`:
the loop finishes the step it is in (so weights, optimizer and counters agree), writes ``last.pth``
and stops, printing the command that resumes the run. A second signal stops at once
(``KeyboardInterrupt``); the last checkpoint written is then the one to resume from. Forked
processes (data workers) inherit the handler but leave the decision to the main process.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["StopRequest", "TrainingInterrupted", "NonFiniteLossError", "nonfinite_message", "resume_command",
           "stopped_message",
           "interrupted_message"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on SIGINT (Ctrl-C) or SIGTERM at a step boundary, after saving ``last.pth``.

    ``signal_number`` is the signal received; ``checkpoint`` the file to resume from; the message
    (``str(exc)``) says how to resume.
    """

    def __init__(self, message: str, *, signal_number: int, checkpoint: str | None) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive steps whose loss was NaN or infinite: the run
    diverged (a learning rate too high for the data, fp16 overflow), which no input check could tell."""


class StopRequest:
    """Context manager turning SIGINT / SIGTERM into a request to stop at the next step boundary.

    Outside the main thread (where Python cannot install signal handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def __enter__(self) -> "StopRequest":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked data worker: the main process stops the run
            return
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signum
        name = signal.Signals(signum).name
        # os.write: printing from a signal handler could re-enter a stream that holds its lock
        os.write(2, f"\n{name}: stopping after this step and saving last.pth "
                    "(send it again to stop at once)\n".encode())


def nonfinite_message(in_row: int, step: int, lr: float, amp: str | None, last_checkpoint: Path) -> str:
    """The message of :class:`NonFiniteLossError` after ``in_row`` such steps up to ``step`` (1-based): the
    likely causes, each with the flag to try (``amp``: the ``--amp`` in use, None without AMP)."""
    amp_hint = f" or AMP overflow (--amp {amp}; try --amp bf16 or no --amp)" if amp is not None else ""
    return (f"the loss was NaN or infinite for {in_row} steps in a row (up to step {step}); stopping. Likely "
            f"causes: a learning rate too high (--lr {lr}: try it 10x lower, or --warmup 500, or --grad-clip 10), "
            f"bad boxes in the data (empty, inverted or outside the image: check with `ssdfast-data validate`)"
            f"{amp_hint}. The last good checkpoint is {last_checkpoint}.")


def resume_command(folder: str | Path, device: str | None = None) -> str:
    """The command that continues the run whose checkpoints are in ``folder`` (its settings are in the
    checkpoint; the device is not, so a chosen one is repeated)."""
    extra = "" if device in (None, "", "auto") else f" --device {device}"
    return f"ssdfast-train --resume {Path(folder) / 'last.pth'}{extra}"


def stopped_message(signum: int, position: tuple[int, int, int], steps_per_epoch: int, saved: Any, command: str) -> str:
    """What a run stopped by ``signum`` at ``position`` (epoch, step in it, global step) says."""
    epoch, epoch_step, step = position
    return (f"{signal.Signals(signum).name}: stopped at epoch {epoch}, step {epoch_step}/{steps_per_epoch} "
            f"(global step {step}) and saved {saved}; continue with: {command}")


def interrupted_message(saved_at: tuple[int, int, int] | None, step: int, steps_per_epoch: int, folder: str | Path,
                        command: str) -> str:
    """What a run stopped at once (global step ``step``) says about its last checkpoint (``saved_at``)."""
    if saved_at is None:
        return f"Interrupted at global step {step}, before the first checkpoint: nothing to resume from"
    epoch, epoch_step, saved_step = saved_at
    return (f"Interrupted at global step {step}; the last checkpoint, {Path(folder) / 'last.pth'}, holds epoch "
            f"{epoch}, step {epoch_step}/{steps_per_epoch} (global step {saved_step}); continue with: {command}")
