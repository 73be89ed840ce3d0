"""The one error of :mod:`ssdfast.model_files`: a model file that cannot be used."""
from __future__ import annotations

import os

from ..io.errors import FileError

__all__ = ["ModelFileError", "model_file_error"]


class ModelFileError(FileError, ValueError):
    """A model file (checkpoint, pytorch-ssd ``.pth``, base net, training folder) that is missing,
    unreadable, not what it should be, or does not fit: one line naming the file, and the flag that
    gave it when there is one. A :class:`~ssdfast.io.FileError`, so the command lines print it as
    one ``error:`` line; a ValueError too, as a bad value given to a function."""


def model_file_error(path: str | os.PathLike, problem: str, flag: str | None = None) -> ModelFileError:
    """``--pretrained-ssd models/x.pth: <problem>`` (``models/x.pth: <problem>`` without a flag): every
    message of a :class:`ModelFileError` is made here."""
    where = os.fspath(path)
    return ModelFileError(f"{flag} {where}: {problem}" if flag else f"{where}: {problem}")
