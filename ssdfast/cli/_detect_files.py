"""The files of ``ssdfast-detect``: which inputs it reads (files, folders, globs, cameras given the
way jetson-inference's detectnet takes them), where annotated copies go (``--output``), and the JSON
record it prints per image or video frame."""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Sequence

from ..errors import DataError, SettingsError
from ..io import IMAGE_EXTENSIONS
from ..io.video import VIDEO_EXTENSIONS, is_video, output_extension

__all__ = ["expand_inputs", "camera_index", "is_stream", "Outputs", "detection_record"]

_CAMERA = re.compile(r"^(?:v4l2://)?/dev/video(\d+)$")


def camera_index(item: str) -> int | None:
    """``/dev/video1`` or ``v4l2:///dev/video1`` (detectnet's spellings) -> 1; else None.

    A Jetson CSI camera (``csi://0``) needs GStreamer's nvarguscamerasrc: a SettingsError saying so."""
    if item.startswith("csi://"):
        raise SettingsError(f"{item}: CSI cameras need jetson-inference's GStreamer input (detectnet); "
                            "ssdfast-detect reads V4L2 / USB cameras: /dev/videoN or --camera N")
    match = _CAMERA.match(item)
    return int(match.group(1)) if match else None


def is_stream(item: str) -> bool:
    """A network stream URL (``rtsp://``, ``http://`` ...), read as a video."""
    return "://" in item and camera_index(item) is None


def expand_inputs(inputs: Sequence[str], recursive: bool) -> list[str]:
    """Files, folders (their images and videos) and glob patterns -> file list, in order, without
    duplicates; stream URLs are kept as given. A DataError names an input that gives nothing."""
    wanted = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            if recursive:
                found = [os.path.join(d, n) for d, _, names in os.walk(item) for n in names]
            else:
                found = [os.path.join(item, n) for n in os.listdir(item)]
            found = sorted(p for p in found if os.path.isfile(p) and os.path.splitext(p)[1].lower() in wanted)
            if not found:
                hint = "" if recursive else " (try --recursive)"
                raise DataError(f"{item}: no images or videos in this folder{hint}")
            files += found
        elif os.path.isfile(item) or is_stream(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise DataError(f"{item}: no file matches this pattern")
            files += found
        else:
            raise DataError(f"{item}: no such file or folder")
    return list(dict.fromkeys(files))


def detection_record(file: str, det: Any, width: int, height: int, **extra: Any) -> dict[str, Any]:
    """The JSON line of one image or frame: file, ``extra`` (frame, time), size, boxes (pixels
    ``xyxy``), scores, label names and label ids."""
    return {
        "file": file,
        **extra,
        "width": int(width),
        "height": int(height),
        "boxes": [[round(float(v), 2) for v in box] for box in det.boxes.tolist()],
        "scores": [round(float(s), 4) for s in det.scores.tolist()],
        "labels": list(det.label_names),
        "label_ids": [int(v) for v in det.labels.tolist()],
    }


class Outputs:
    """Where annotated files go: ``--output DIR`` (created), or one file name for a single input."""

    _KEEP_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

    def __init__(self, output: str | None, files: list[str], camera: bool):
        self.output = output
        self.single: str | None = None
        self._used: set[str] = set()
        if output is None:
            return
        ext = os.path.splitext(output)[1].lower()
        if ext in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and not os.path.isdir(output) and len(files) + int(camera) == 1:
            source_is_video = camera or is_stream(files[0]) or is_video(files[0])
            if source_is_video != (ext in VIDEO_EXTENSIONS):
                kind = "a video" if source_is_video else "an image"
                raise SettingsError(f"--output {output}: the input is {kind}; give a matching file name or a folder")
            self.single = output
            parent = os.path.dirname(output)
            if parent:
                os.makedirs(parent, exist_ok=True)
        else:
            if os.path.isfile(output):
                raise SettingsError(f"--output {output}: a file exists there; give a folder for several inputs")
            os.makedirs(output, exist_ok=True)

    def path_for(self, source: str, video: bool = False) -> str | None:
        """The annotated copy of ``source`` (None without ``--output``); two sources of the same
        name get ``name_1``, ``name_2`` ..."""
        if self.output is None:
            return None
        if self.single is not None:
            return self.single
        stem, ext = os.path.splitext(os.path.basename(source.rstrip("/").replace(":", "")))
        if video:
            ext = output_extension(source) if not source.startswith("camera") else ".mp4"
        else:
            ext = ext.lower() if ext.lower() in self._KEEP_EXT else ".jpg"
        name = stem + ext
        k = 1
        while name in self._used:  # same file name from two folders
            name = f"{stem}_{k}{ext}"
            k += 1
        self._used.add(name)
        return os.path.join(self.output, name)
