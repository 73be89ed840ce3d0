"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

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
from types import FrameType
from pathlib import Path
from typing import Any

__all__ = ["StopRequest", "resume_command", "stopped_message", "interrupted_message"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
