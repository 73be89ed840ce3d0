"""Reading and writing the files users bring: images (the one reader every path uses) and label
files; video files and cameras through PyAV or OpenCV (:mod:`ssdfast.io.video`).

Everything here raises :class:`FileError` (or a subclass) with a message that names the file.
"""
from __future__ import annotations

from .errors import FileError
from .images import IMAGE_EXTENSIONS, ImageError, ImageWarning, LoadedImage, image_size, load_image, read_image
from .labels import BACKGROUND, class_count, read_label_file, write_label_file
from .video import VIDEO_EXTENSIONS, VideoError, create_video_writer, is_video, open_camera, open_video

__all__ = [
    "FileError",
    "ImageError",
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
    "VideoError",
    "open_video",
    "open_camera",
    "create_video_writer",
    "is_video",
]
