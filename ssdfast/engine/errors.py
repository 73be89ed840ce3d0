"""The errors a training run raises for its caller (the command line turns each into one line)."""
from __future__ import annotations

__all__ = ["ConfigError", "NonFiniteLossError", "TrainingInterrupted"]


class ConfigError(ValueError):
    """A mistake in the training settings that the user can fix (the CLI prints it as one line)."""


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive steps whose loss was NaN or infinite."""


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
