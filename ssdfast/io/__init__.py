"""Reading and writing the files users bring: images (the one reader every path uses) and label
files; video files and cameras through PyAV or OpenCV (:mod:`ssdfast.io.video`).

A file that cannot be used raises :class:`ssdfast.errors.DataError` with a message that names it.
"""
from __future__ import annotations

from .images import IMAGE_EXTENSIONS, ImageWarning, LoadedImage, image_size, load_image, read_image
from .labels import BACKGROUND, class_count, read_label_file, write_label_file
from .video import VIDEO_EXTENSIONS, create_video_writer, is_video, open_camera, open_video

__all__ = [
    "ImageWarning",
    "LoadedImage",
    "IMAGE_EXTENSIONS",
    "load_image",
    "read_image",
    "image_size",
    "BACKGROUND",
    "class_count",
    "read_label_file",
    "write_label_file",
    "VIDEO_EXTENSIONS",
    "open_video",
    "open_camera",
    "create_video_writer",
    "is_video",
]
