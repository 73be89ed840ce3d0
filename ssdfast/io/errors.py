"""The one exception type of :mod:`ssdfast.io`."""
from __future__ import annotations

__all__ = ["FileError", "first_line", "one_line"]


class FileError(Exception):
    """A user's file (image, label file, video) that cannot be used; the message names the file."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, stripped (its type's name when it has
    none): how a library's error is quoted in a message of one line."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's whole message on one line (its lines joined), cut at ``limit`` characters: how a
    message listing many keys (the weight loaders', torch's ``load_state_dict``) is quoted in one line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return (text[:limit] + " ...") if len(text) > limit else (text or type(exc).__name__)
