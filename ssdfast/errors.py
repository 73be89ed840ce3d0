"""The errors a user can fix, one class per concern, and how an error is quoted on one line.

Each is raised where the problem is known, with a message of one line naming the file, flag or
setting (``--pretrained-ssd models/x.pth: no such file``), and travels up unchanged: the command
lines print it once, as ``error: <message>`` with exit status 2 (:func:`ssdfast.cli._common.run_main`).

- :class:`DataError`: a file of data that cannot be used: an image, a video or camera, an annotation
  file, a label file, a data set folder.
- :class:`ModelFileError`: a model file: a checkpoint, a pytorch-ssd ``.pth``, a base net, a training
  folder, a TensorRT engine and its sidecar.
- :class:`SettingsError`: a flag or setting value, or a combination of them, that cannot work.
- :class:`MissingPackageError`: an optional package a step needs is not installed.

What is not the user's input to fix keeps its own type: a training run whose losses stopped being
finite (:class:`ssdfast.engine.NonFiniteLossError`), an export that computes other numbers than
PyTorch (:class:`ssdfast.export.CheckError`), and bugs (any other exception, with its traceback).
"""
from __future__ import annotations

import os
import re
from typing import TypeVar

__all__ = ["UserError", "DataError", "ModelFileError", "SettingsError", "MissingPackageError",
           "first_line", "one_line"]

_E = TypeVar("_E", bound="UserError")


class UserError(Exception):
    """A problem the user can fix; the message is one line naming the file, flag or setting."""

    @classmethod
    def about(cls: type[_E], where: str | os.PathLike, problem: str, flag: str | None = None) -> _E:
        """``--flag where: problem`` (``where: problem`` without a flag): the shape of every message
        about a file or a flag's value."""
        place = os.fspath(where)
        return cls(f"{flag} {place}: {problem}" if flag else f"{place}: {problem}")


class DataError(UserError):
    """A file of data (image, video, annotation, label file, data set folder) that cannot be used."""


class ModelFileError(UserError, ValueError):
    """A model file (checkpoint, pytorch-ssd ``.pth``, base net, training folder, TensorRT engine) that is
    missing, unreadable, not what it should be, or does not fit; a ValueError too, as a bad value given
    to a function."""


class SettingsError(UserError, ValueError):
    """A flag or setting value, or a combination of them, that cannot work; a ValueError too."""


class MissingPackageError(UserError, ImportError):
    """An optional package a step needs is not installed; the message says what to install."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, stripped (its type's name when it has
    none): how a library's error is quoted in a message of one line."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def one_line(exc: BaseException, limit: int | None = 400) -> str:
    """An exception's whole message on one line (its lines joined), cut at ``limit`` characters (None:
    whole): how a message listing many keys (torch's ``load_state_dict``) is quoted, and how the command
    lines print an error. An error re-raised by a DataLoader worker carries the worker's traceback in
    its message: only the original message (the traceback's last line) is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
        kind, _, message = lines[-1].partition(": ")
        lines = [message] if message and re.fullmatch(r"[\w.]+(Error|Exception)", kind) else lines[-1:]
    text = " ".join(lines) or type(exc).__name__
    return text[:limit] + " ..." if limit is not None and len(text) > limit else text
