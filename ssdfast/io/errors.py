"""The one exception type of :mod:`ssdfast.io`."""
from __future__ import annotations

__all__ = ["FileError", "first_line"]


class FileError(Exception):
    """A user's file (image, label file, video) that cannot be used; the message names the file."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, stripped (its type's name when it has
    none): how a library's error is quoted in a message of one line."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
