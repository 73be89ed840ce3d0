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
from typing import Any

__all__ = ["StopRequest"]

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
