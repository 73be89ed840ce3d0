"""Reading and writing the files users bring: label files (and, in their own modules, images and video).

Everything here raises :class:`FileError` (or a subclass) with a message that names the file.
"""
from __future__ import annotations

from .errors import FileError
from .labels import BACKGROUND, read_label_file, write_label_file

__all__ = ["FileError", "BACKGROUND", "read_label_file", "write_label_file"]
