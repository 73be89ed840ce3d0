"""Reading and writing the files users bring: images (the one reader every path uses) and label
files; video readers and writers live in :mod:`ssdfast.io.video`.

Everything here raises :class:`FileError` (or a subclass) with a message that names the file.
"""
from __future__ import annotations

from .errors import FileError
from .images import IMAGE_EXTENSIONS, ImageError, ImageWarning, LoadedImage, load_image, read_image
from .labels import BACKGROUND, read_label_file, write_label_file

__all__ = [
    "FileError",
    "ImageError",
    "ImageWarning",
    "LoadedImage",
    "IMAGE_EXTENSIONS",
    "load_image",
    "read_image",
    "BACKGROUND",
    "read_label_file",
    "write_label_file",
]
