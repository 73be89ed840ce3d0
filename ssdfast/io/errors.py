"""The one exception type of :mod:`ssdfast.io`."""
from __future__ import annotations

__all__ = ["FileError"]


class FileError(Exception):
    """A user's file (image, label file, video) that cannot be used; the message names the file."""
