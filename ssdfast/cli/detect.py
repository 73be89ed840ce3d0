"""``ssdfast-detect``: run a trained SSD on images, folders, globs, video files or a camera.

Prints one JSON line per image (or video frame) on stdout::

    {"file": "street.jpg", "width": 640, "height": 480, "boxes": [[x1, y1, x2, y2], ...],
     "scores": [...], "labels": ["car", ...], "label_ids": [7, ...]}

(video frames add ``"frame"`` and ``"time"`` in seconds), writes annotated copies to ``--output``
and reports images/s on stderr.

Video: read and written with OpenCV (``pip install opencv-python``) or PyAV (``pip install av``)
when one is installed. Without either, MJPEG ``.avi`` and animated ``.gif`` files are still read
and written (pure Python + Pillow), and any other format is a clear error naming the package.
``--camera N`` needs OpenCV.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import struct
import sys
import time
from typing import Any, Iterator, Sequence

import numpy as np

from ._common import UsageError, add_argument, make_parser, resolve_device, run_main

__all__ = ["main", "build_parser", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".3gp", ".gif")
_BUILTIN_VIDEO = (".avi", ".gif")
_VIDEO_HINT = "install OpenCV (pip install opencv-python) or PyAV (pip install av)"

_EPILOG = """\
examples:
  ssdfast-detect models/best.pth photo.jpg                        # JSON lines on stdout
  ssdfast-detect models/best.pth images/ "more/*.png" --output annotated/
  ssdfast-detect models/best.pth clip.mp4 --output out/ --threshold 0.5
  ssdfast-detect models/best.pth --camera 0 --show                 # needs OpenCV

video formats: with OpenCV or PyAV installed, whatever they read; without them MJPEG .avi and .gif
"""


class _VideoError(Exception):
    """A video that cannot be opened, read or written (the message says what to install)."""


def _one_line(exc: BaseException) -> str:
    """The first line of an error message (usage errors print as one line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ------------------------------------------------------------------------------------ backends
def _cv2():
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # our own messages say what failed
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _av():
    try:
        import av
    except ImportError:
        return None
    return av


def _video_backend(requested: str, ext: str, what: str) -> str:
    """Which backend reads / writes a video of extension ``ext``: opencv, pyav or builtin."""
    if requested == "opencv":
        if _cv2() is None:
            raise UsageError("--video-backend opencv: OpenCV is not installed (pip install opencv-python)")
        return "opencv"
    if requested == "pyav":
        if _av() is None:
            raise UsageError("--video-backend pyav: PyAV is not installed (pip install av)")
        return "pyav"
    if requested == "builtin" or (_cv2() is None and _av() is None):
        if ext not in _BUILTIN_VIDEO:
            raise UsageError(
                f"{what}: {ext or 'this'} video needs a video library: {_VIDEO_HINT}; "
                "without one ssdfast reads and writes only MJPEG .avi and .gif"
            )
        return "builtin"
    if ext == ".gif":
        return "builtin"  # Pillow reads GIF frames and durations exactly
    return "opencv" if _cv2() is not None else "pyav"


# ------------------------------------------------------------------------------------ MJPEG AVI
def _avi_chunks(f: Any, start: int, end: int) -> Iterator[tuple[bytes, int, int, bool]]:
    """Walk RIFF chunks in ``[start, end)``: ``(fourcc or list type, data offset, size, is_list)``,
    descending into lists. A zero or too large size (an unfinished file) runs to ``end``."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return
        fourcc, size = head[:4], struct.unpack("<I", head[4:])[0]
        body = pos + 8
        if fourcc in (b"RIFF", b"LIST"):
            if size < 4 or body + size > end:
                size = end - body
            f.seek(body)
            kind = f.read(4)
            yield kind, body + 4, size - 4, True
            yield from _avi_chunks(f, body + 4, body + size)
        else:
            if body + size > end:  # truncated last chunk
                return
            yield fourcc, body, size, False
        pos = body + size + (size & 1)


class _MjpegAviReader:
    """Frames of an MJPEG ``.avi`` decoded with Pillow (RGB ``uint8 [H, W, 3]``)."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "rb")
        head = self._f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
            self._f.close()
            raise _VideoError(f"{path}: not an AVI file")
        self._size = os.path.getsize(path)
        self.fps, self.width, self.height, self.frame_count = 25.0, 0, 0, None
        self._stream, compression, usec, rated = None, b"", 0, False
        stream_no, current_is_video = -1, False
        for fourcc, offset, size, is_list in _avi_chunks(self._f, 12, self._size):
            if is_list and fourcc == b"movi":
                break
            if is_list and fourcc == b"strl":
                stream_no += 1
                current_is_video = False
            elif fourcc == b"avih" and size >= 40:
                self._f.seek(offset)
                fields = struct.unpack("<10I", self._f.read(40))
                usec, self.frame_count, self.width, self.height = fields[0], fields[4] or None, fields[8], fields[9]
            elif fourcc == b"strh" and size >= 36 and self._stream is None:
                self._f.seek(offset)
                data = self._f.read(36)
                if data[:4] == b"vids":
                    current_is_video = True
                    self._stream = b"%02d" % stream_no
                    scale, rate = struct.unpack("<II", data[20:28])
                    length = struct.unpack("<I", data[32:36])[0]
                    if scale and rate:
                        self.fps, rated = rate / scale, True
                    if length:
                        self.frame_count = length
            elif fourcc == b"strf" and current_is_video and size >= 20:
                self._f.seek(offset)
                data = self._f.read(20)
                self.width, self.height = struct.unpack("<ii", data[4:12])
                self.height = abs(self.height)
                compression = data[16:20]
                current_is_video = False
        if self._stream is None:
            self._f.close()
            raise _VideoError(f"{path}: no video stream in this AVI file")
        if not rated and usec:
            self.fps = 1e6 / usec
        if compression.upper() not in (b"MJPG", b"JPEG", b"AVRN", b"MJPA", b"JPGL"):
            self._f.close()
            codec = compression.decode("latin-1", "replace").strip("\x00") or "uncompressed"
            raise _VideoError(f"{path}: {codec} video; the built-in reader reads only MJPEG .avi: {_VIDEO_HINT}")

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import Image

        tags = (self._stream + b"dc", self._stream + b"db")
        for fourcc, offset, size, is_list in _avi_chunks(self._f, 12, self._size):
            if is_list or fourcc not in tags or size == 0:
                continue
            self._f.seek(offset)
            data = self._f.read(size)
            try:
                with Image.open(io.BytesIO(data)) as im:
                    yield np.array(im.convert("RGB"))
            except Exception as exc:
                raise _VideoError(f"{self.path}: cannot decode a frame at byte {offset} ({exc})") from None

    def close(self) -> None:
        self._f.close()


class _MjpegAviWriter:
    """Write RGB frames as an MJPEG ``.avi`` (JPEG frames by Pillow, an ``idx1`` index): plays in
    VLC / ffmpeg / OpenCV. Limited to 4 GiB by the AVI 1.0 format."""

    _HEADER = 224  # bytes before the first frame chunk

    def __init__(self, path: str, fps: float, width: int, height: int, quality: int = 90):
        self.path, self.width, self.height, self.quality = path, int(width), int(height), int(quality)
        rate_scale = (max(1, round(float(fps) * 1000)), 1000)
        self._f = open(path, "wb")
        self._index: list[tuple[int, int]] = []
        self._max_chunk = 0
        usec = int(round(1e6 / float(fps))) if fps > 0 else 40000
        avih = struct.pack("<14I", usec, 0, 0, 0x10, 0, 0, 1, 0, self.width, self.height, 0, 0, 0, 0)
        strh = struct.pack("<4s4sIHHIIIIIIiI4h", b"vids", b"MJPG", 0, 0, 0, 0, rate_scale[1], rate_scale[0], 0, 0, 0,
                           -1, 0, 0, 0, self.width, self.height)
        strf = struct.pack("<IiiHH4sIiiII", 40, self.width, self.height, 1, 24, b"MJPG", self.width * self.height * 3,
                           0, 0, 0, 0)
        strl = b"strl" + b"strh" + struct.pack("<I", len(strh)) + strh + b"strf" + struct.pack("<I", len(strf)) + strf
        hdrl = b"hdrl" + b"avih" + struct.pack("<I", len(avih)) + avih + b"LIST" + struct.pack("<I", len(strl)) + strl
        header = b"RIFF" + b"\0\0\0\0" + b"AVI " + b"LIST" + struct.pack("<I", len(hdrl)) + hdrl + b"LIST\0\0\0\0movi"
        assert len(header) == self._HEADER
        self._f.write(header)

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        if frame.shape[0] != self.height or frame.shape[1] != self.width:
            raise _VideoError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]}, expected {self.width}x{self.height}")
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buf, "JPEG", quality=self.quality)
        data = buf.getvalue()
        offset = self._f.tell()
        if offset + len(data) + 16 * (len(self._index) + 2) > 0xFFFFFFF0:
            raise _VideoError(f"{self.path}: over 4 GiB, the limit of an AVI written without a video library: {_VIDEO_HINT}")
        self._f.write(b"00dc" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b""))
        self._index.append((offset - (self._HEADER - 4), len(data)))  # relative to the "movi" fourcc
        self._max_chunk = max(self._max_chunk, len(data))

    def close(self) -> None:
        if self._f.closed:
            return
        f = self._f
        idx_start = f.tell()
        f.write(b"idx1" + struct.pack("<I", 16 * len(self._index)))
        for offset, size in self._index:
            f.write(b"00dc" + struct.pack("<III", 0x10, offset, size))
        end = f.tell()
        n = len(self._index)
        for pos, value in ((4, end - 8), (48, n), (60, self._max_chunk + 8), (140, n), (144, self._max_chunk + 8),
                           (216, idx_start - (self._HEADER - 4))):
            f.seek(pos)
            f.write(struct.pack("<I", value))
        f.close()


# ------------------------------------------------------------------------------------ GIF
class _GifReader:
    def __init__(self, path: str):
        from PIL import Image

        self.path = path
        try:
            self._im = Image.open(path)
        except Exception as exc:
            raise _VideoError(f"{path}: cannot open ({exc})") from None
        self.width, self.height = self._im.size
        self.frame_count = getattr(self._im, "n_frames", 1)
        duration = self._im.info.get("duration") or 100
        self.fps = 1000.0 / duration

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import ImageSequence

        for frame in ImageSequence.Iterator(self._im):
            yield np.array(frame.convert("RGB"))

    def close(self) -> None:
        self._im.close()


class _GifWriter:
    """Animated GIF through Pillow (frames kept in memory until ``close``: for short clips)."""

    def __init__(self, path: str, fps: float, width: int, height: int):
        self.path, self.fps, self._frames = path, fps, []

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        self._frames.append(Image.fromarray(np.ascontiguousarray(frame)))

    def close(self) -> None:
        if self._frames:
            duration = int(round(1000.0 / self.fps)) if self.fps > 0 else 100
            self._frames[0].save(self.path, save_all=True, append_images=self._frames[1:], duration=duration, loop=0)
            self._frames = []


# ------------------------------------------------------------------------------------ OpenCV / PyAV
class _Cv2Reader:
    def __init__(self, source: str | int):
        cv2 = _cv2()
        self.path = source
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            what = f"camera {source}" if isinstance(source, int) else str(source)
            raise _VideoError(f"cannot open {what} with OpenCV")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0) or 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not isinstance(source, int) else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            yield np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB

    def close(self) -> None:
        self._cap.release()


class _Cv2Writer:
    def __init__(self, path: str, fps: float, width: int, height: int):
        cv2 = _cv2()
        ext = os.path.splitext(path)[1].lower()
        fourcc = {".avi": "MJPG", ".mkv": "MJPG", ".webm": "VP80"}.get(ext, "mp4v")
        self.path = path
        self._w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps) if fps > 0 else 25.0,
                                  (int(width), int(height)))
        if not self._w.isOpened():
            raise _VideoError(f"{path}: OpenCV cannot write {ext} video here")

    def write(self, frame: np.ndarray) -> None:
        self._w.write(np.ascontiguousarray(frame[:, :, ::-1]))

    def close(self) -> None:
        self._w.release()


class _AvReader:
    def __init__(self, path: str):
        av = _av()
        self.path = path
        try:
            self._c = av.open(path)
            self._s = self._c.streams.video[0]
        except Exception as exc:
            raise _VideoError(f"{path}: PyAV cannot open it ({exc})") from None
        self._s.thread_type = "AUTO"
        rate = self._s.average_rate or self._s.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.frame_count = int(self._s.frames) or None
        self.width, self.height = int(self._s.codec_context.width), int(self._s.codec_context.height)

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self._c.decode(self._s):
            yield frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._c.close()


class _AvWriter:
    def __init__(self, path: str, fps: float, width: int, height: int):
        from fractions import Fraction

        av = _av()
        self.path = path
        ext = os.path.splitext(path)[1].lower()
        codecs = {".avi": ["mjpeg"], ".webm": ["libvpx-vp9", "libvpx"], ".gif": ["gif"]}.get(ext, ["libx264", "h264", "mpeg4"])
        self._c = av.open(path, "w")
        rate = Fraction(float(fps) if fps > 0 else 25.0).limit_denominator(1001)
        self._even = ext not in (".avi", ".gif")  # yuv420p needs even sides
        self.width, self.height = (width // 2 * 2, height // 2 * 2) if self._even else (width, height)
        last: Exception | None = None
        for codec in codecs:
            try:
                self._s = self._c.add_stream(codec, rate=rate)
                break
            except Exception as exc:  # codec not in this ffmpeg build
                last = exc
        else:
            self._c.close()
            raise _VideoError(f"{path}: PyAV cannot write {ext} video ({last})")
        self._s.width, self._s.height = self.width, self.height
        self._s.pix_fmt = {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(self._s.codec_context.name, "yuv420p")

    def write(self, frame: np.ndarray) -> None:
        av = _av()
        frame = np.ascontiguousarray(frame[: self.height, : self.width])
        for packet in self._s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._c.mux(packet)

    def close(self) -> None:
        for packet in self._s.encode():
            self._c.mux(packet)
        self._c.close()


def _open_reader(path: str, backend: str) -> Any:
    ext = os.path.splitext(path)[1].lower()
    chosen = _video_backend(backend, ext, path)
    if chosen == "opencv":
        return _Cv2Reader(path)
    if chosen == "pyav":
        return _AvReader(path)
    return _GifReader(path) if ext == ".gif" else _MjpegAviReader(path)


def _open_writer(path: str, fps: float, width: int, height: int, backend: str) -> Any:
    ext = os.path.splitext(path)[1].lower()
    chosen = _video_backend(backend, ext, f"--output {path}")
    if ext == ".gif":
        return _GifWriter(path, fps, width, height)
    if chosen == "opencv":
        return _Cv2Writer(path, fps, width, height)
    if chosen == "pyav":
        return _AvWriter(path, fps, width, height)
    return _MjpegAviWriter(path, fps, width, height)


# ------------------------------------------------------------------------------------ inputs
def _is_video(path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":  # an animated GIF is a video, a still one an image
        try:
            from PIL import Image

            with Image.open(path) as im:
                return getattr(im, "n_frames", 1) > 1
        except Exception:
            return False
    return ext in VIDEO_EXTENSIONS


def _expand_inputs(inputs: Sequence[str], recursive: bool) -> list[str]:
    """Files, folders (their images and videos) and glob patterns -> file list, in order, no duplicates."""
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
                raise UsageError(f"{item}: no images or videos in this folder{'' if recursive else ' (try --recursive)'}")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise UsageError(f"{item}: no file matches this pattern")
            files += found
        else:
            raise UsageError(f"{item}: no such file or folder")
    return list(dict.fromkeys(files))


def _read_image(path: str):
    """uint8 ``[3, H, W]`` RGB, EXIF orientation applied; Pillow for what torchvision cannot decode."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except Exception:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            arr = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class _ImageFiles:
    """Dataset of image files for a DataLoader: ``(path, uint8 [3, H, W] or None, error or None)``."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            return path, _read_image(path), None
        except Exception as exc:
            text = str(exc).strip().splitlines()
            return path, None, text[-1] if text else type(exc).__name__


def _list_collate(batch: list) -> list:
    return batch


# ------------------------------------------------------------------------------------ outputs
def _record(file: str, det: Any, width: int, height: int, **extra: Any) -> dict[str, Any]:
    boxes = [[round(float(v), 2) for v in box] for box in det.boxes.tolist()]
    return {
        "file": file,
        **extra,
        "width": int(width),
        "height": int(height),
        "boxes": boxes,
        "scores": [round(float(s), 4) for s in det.scores.tolist()],
        "labels": list(det.label_names),
        "label_ids": [int(v) for v in det.labels.tolist()],
    }


class _Outputs:
    """Where annotated files go: ``--output DIR`` (created), or one file name for a single input."""

    def __init__(self, output: str | None, files: list[str], camera: bool):
        self.output = output
        self.single: str | None = None
        self._used: set[str] = set()
        if output is None:
            return
        ext = os.path.splitext(output)[1].lower()
        if ext in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and not os.path.isdir(output) and len(files) + int(camera) == 1:
            source_is_video = camera or _is_video(files[0])
            if source_is_video != (ext in VIDEO_EXTENSIONS):
                kind = "a video" if source_is_video else "an image"
                raise UsageError(f"--output {output}: the input is {kind}; give a matching file name or a folder")
            self.single = output
            parent = os.path.dirname(output)
            if parent:
                os.makedirs(parent, exist_ok=True)
        else:
            if os.path.isfile(output):
                raise UsageError(f"--output {output}: a file exists there; give a folder for several inputs")
            os.makedirs(output, exist_ok=True)

    def path_for(self, source: str, video_ext: str | None = None) -> str | None:
        if self.output is None:
            return None
        if self.single is not None:
            return self.single
        stem, ext = os.path.splitext(os.path.basename(source.replace(":", "")))
        ext = video_ext if video_ext is not None else (ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") else ".jpg")
        name = stem + ext
        k = 1
        while name in self._used:  # same file name from two folders
            name = f"{stem}_{k}{ext}"
            k += 1
        self._used.add(name)
        return os.path.join(self.output, name)


def _video_output_ext(source: str, backend: str) -> str:
    """Same container as the input when the writer can make it, else MJPEG .avi."""
    ext = os.path.splitext(source)[1].lower() if not source.startswith("camera:") else ".mp4"
    if ext == ".gif":
        return ".gif"
    if backend == "builtin" or (backend == "auto" and _cv2() is None and _av() is None):
        return ".avi"
    return ext if ext in (".mp4", ".avi", ".mov", ".mkv", ".m4v") else ".mp4"


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-detect`` argument parser."""
    p = make_parser("ssdfast-detect", "Detect objects with a trained SSD in images, folders, videos or a camera.", _EPILOG)
    add_argument(p, "checkpoint", metavar="CHECKPOINT", help="an ssdfast checkpoint (ssdfast-train's best.pth / last.pth)")
    add_argument(p, "inputs", nargs="*", metavar="INPUT",
                 help="image or video files, folders (their images and videos), or glob patterns such as 'imgs/*.jpg'")
    add_argument(p, "--output", "-o", default=None, metavar="PATH",
                 help="write annotated images / videos to this folder (or this file, for a single input)")
    add_argument(p, "--threshold", "--score-threshold", type=float, default=0.4,
                 help="lowest class probability shown as a detection")
    add_argument(p, "--iou-threshold", "--nms-iou-threshold", type=float, default=0.45, help="NMS IoU threshold within a class")
    add_argument(p, "--max-detections", "--top-k", type=int, default=100, help="most detections kept per image")
    add_argument(p, "--batch-size", type=int, default=8, help="images (or video frames) per forward pass")
    add_argument(p, "--device", default="auto", help="device: auto, cpu, cuda, cuda:1 ...")
    add_argument(p, "--num-workers", "--workers", type=int, default=2, help="image decoding worker processes")
    add_argument(p, "--recursive", "-r", action="store_true", help="look for images in sub-folders too")
    add_argument(p, "--camera", type=int, default=None, metavar="INDEX",
                 help="read frames from this camera (OpenCV), as pytorch-ssd's run_ssd_live_demo.py")
    add_argument(p, "--show", action="store_true", help="show annotated video / camera frames in a window (OpenCV; q quits)")
    add_argument(p, "--max-frames", type=int, default=None, metavar="N", help="stop each video / the camera after N frames")
    add_argument(p, "--video-backend", default="auto", choices=("auto", "opencv", "pyav", "builtin"),
                 help="video library: OpenCV, PyAV, or the built-in MJPEG .avi / .gif reader and writer")
    add_argument(p, "--line-width", type=int, default=None, help="box line width in pixels (default: scales with the image)")
    add_argument(p, "--quiet", "-q", action="store_true", help="no progress on stderr (the JSON lines still go to stdout)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold should be in [0, 1], got {args.threshold}")
    if not 0.0 <= args.iou_threshold <= 1.0:
        raise UsageError(f"--iou-threshold should be in [0, 1], got {args.iou_threshold}")
    for flag, value in (("--batch-size", args.batch_size), ("--max-detections", args.max_detections)):
        if value < 1:
            raise UsageError(f"{flag} should be at least 1, got {value}")
    if args.num_workers < 0:
        raise UsageError(f"--num-workers should be >= 0, got {args.num_workers}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames should be at least 1, got {args.max_frames}")
    if not args.inputs and args.camera is None:
        raise UsageError("give images, folders, globs or videos to detect in, or --camera INDEX")
    if args.camera is not None and _cv2() is None:
        raise UsageError("--camera needs OpenCV: pip install opencv-python")
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"{args.checkpoint}: no such checkpoint file")


class _Run:
    """The detector, the outputs and the counters of one invocation."""

    def __init__(self, args: argparse.Namespace, detector: Any, outputs: _Outputs):
        self.args, self.detector, self.outputs = args, detector, outputs
        self.images = 0
        self.failed: list[str] = []
        self._window = args.show
        self.stop = False

    def emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        self.images += 1

    def draw(self, image: Any, det: Any) -> Any:
        from ..visualize import annotate

        return annotate(image, det, width=self.args.line_width)

    def show(self, title: str, frame_rgb: np.ndarray) -> None:
        if not self._window:
            return
        cv2 = _cv2()
        if cv2 is None:
            print("warning: --show needs OpenCV (pip install opencv-python); not showing frames", file=sys.stderr)
            self._window = False
            return
        try:
            cv2.imshow(title, np.ascontiguousarray(frame_rgb[:, :, ::-1]))
            if cv2.waitKey(1) & 0xFF == ord("q"):
                self.stop = True
        except cv2.error:  # a headless OpenCV build, or no display
            print("warning: --show: this OpenCV cannot open windows (opencv-python-headless, or no display); "
                  "going on without", file=sys.stderr)
            self._window = False

    # ---------------------------------------------------------------- images
    def images_from(self, paths: list[str]) -> None:
        from torch.utils.data import DataLoader

        from ..visualize import save_image

        loader = DataLoader(_ImageFiles(paths), batch_size=self.args.batch_size, shuffle=False,
                            num_workers=min(self.args.num_workers, len(paths)), collate_fn=_list_collate)
        for batch in loader:
            good = []
            for path, image, error in batch:
                if image is None:
                    print(f"warning: skipping {path}: unreadable image ({error})", file=sys.stderr)
                    self.failed.append(path)
                else:
                    good.append((path, image))
            if not good:
                continue
            dets = self.detector([image for _, image in good])
            for (path, image), det in zip(good, dets):
                self.emit(_record(path, det, image.shape[-1], image.shape[-2]))
                out = self.outputs.path_for(path)
                if out is not None:
                    save_image(self.draw(image, det), out)
            sys.stdout.flush()

    # ---------------------------------------------------------------- video and camera
    def video(self, source: str, reader: Any) -> None:
        writer = None
        out = self.outputs.path_for(source, _video_output_ext(source, self.args.video_backend))
        name = source
        index = 0
        per_batch = 1 if source.startswith("camera:") else self.args.batch_size  # live: no waiting for a batch
        try:
            frames = iter(reader)
            done = False
            while not done and not self.stop:
                batch: list[np.ndarray] = []
                while len(batch) < per_batch:
                    if self.args.max_frames is not None and index + len(batch) >= self.args.max_frames:
                        done = True
                        break
                    frame = next(frames, None)
                    if frame is None:
                        done = True
                        break
                    batch.append(frame)
                if not batch:
                    break
                dets = self.detector(batch)
                for frame_rgb, det in zip(batch, dets):
                    self.emit(_record(name, det, frame_rgb.shape[1], frame_rgb.shape[0], frame=index,
                                      time=round(index / reader.fps, 3)))
                    if out is not None or self._window:
                        drawn = self.draw(frame_rgb, det).permute(1, 2, 0).numpy()
                        if out is not None:
                            if writer is None:
                                writer = _open_writer(out, reader.fps, drawn.shape[1], drawn.shape[0],
                                                      self.args.video_backend)
                            writer.write(drawn)
                        self.show(name, drawn)
                    index += 1
                sys.stdout.flush()
        except _VideoError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            self.failed.append(source)
        finally:
            reader.close()
            if writer is not None:
                writer.close()
        if index == 0 and source not in self.failed:
            print(f"warning: {source}: no frame could be read", file=sys.stderr)
            self.failed.append(source)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    files = _expand_inputs(args.inputs, args.recursive)
    videos = [f for f in files if _is_video(f)]
    for v in videos:  # fail early on a format nothing here can read
        _video_backend(args.video_backend, os.path.splitext(v)[1].lower(), v)
    outputs = _Outputs(args.output, files, args.camera is not None)
    if outputs.single is not None and os.path.splitext(outputs.single)[1].lower() in VIDEO_EXTENSIONS:
        _video_backend(args.video_backend, os.path.splitext(outputs.single)[1].lower(), f"--output {outputs.single}")
    device = resolve_device(args.device)

    from ..detector import Detector
    from ..checkpoint import CheckpointError

    try:
        detector = Detector.from_checkpoint(args.checkpoint, device=device, score_threshold=args.threshold,
                                            iou_threshold=args.iou_threshold, max_detections=args.max_detections)
    except CheckpointError as exc:
        raise UsageError(_one_line(exc)) from None
    run = _Run(args, detector, outputs)
    from .. import ops

    ops.backend()  # load the kernels now, not inside the timed first batch
    start = time.perf_counter()
    video_set = set(videos)
    images = [f for f in files if f not in video_set]
    if images:
        run.images_from(images)
    for path in videos:
        if run.stop:
            break
        try:
            reader = _open_reader(path, args.video_backend)
        except _VideoError as exc:
            print(f"warning: skipping {exc}", file=sys.stderr)
            run.failed.append(path)
            continue
        run.video(path, reader)
    if args.camera is not None and not run.stop:
        try:
            reader = _Cv2Reader(args.camera)
        except _VideoError as exc:
            raise UsageError(f"--camera {args.camera}: {exc}") from None
        if not args.quiet:
            print(f"camera {args.camera}: {reader.width}x{reader.height}; Ctrl-C{' or q' if args.show else ''} stops",
                  file=sys.stderr)
        try:
            run.video(f"camera:{args.camera}", reader)
        except KeyboardInterrupt:
            pass
    seconds = time.perf_counter() - start
    if not args.quiet:
        rate = run.images / seconds if seconds > 0 else float("inf")
        where = f"; annotated files in {args.output}" if args.output else ""
        print(f"{run.images} images in {seconds:.2f} s: {rate:.1f} images/s on {device}{where}", file=sys.stderr)
    if args.show and _cv2() is not None:
        try:
            _cv2().destroyAllWindows()
        except Exception:
            pass
    if run.failed:
        print(f"{len(run.failed)} inputs could not be read: {', '.join(run.failed[:5])}"
              f"{' ...' if len(run.failed) > 5 else ''}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-detect``; returns the exit code (2 for a usage error, 1 when an input could not be read)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
