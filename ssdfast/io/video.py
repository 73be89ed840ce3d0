"""Video files and cameras, read and written through maintained libraries.

- PyAV (``pip install av``, the ``video`` extra): FFmpeg's decoders and encoders; MP4 / MOV / MKV
  are written as H.264, AVI as MJPEG, WebM as VP9.
- OpenCV (``pip install opencv-python-headless``, or ``opencv-python`` for ``--show`` windows):
  FFmpeg as OpenCV builds it; MP4 / MOV written as MPEG-4 part 2 (``mp4v``), AVI / MKV as MJPEG.
  Cameras are read with OpenCV.
- Animated GIF: Pillow (always installed), with each frame's own duration.

``backend="auto"`` takes PyAV when installed (exact timestamps, H.264 output), else OpenCV; a video
that needs a library when neither is installed raises :class:`~ssdfast.errors.MissingPackageError`
saying what to install; a file that cannot be read or written, :class:`~ssdfast.errors.DataError`.
The libraries are imported when first needed, so ssdfast works without them.

A reader yields :class:`Frame` ``(pixels uint8 [H, W, 3] RGB, time in seconds from the first
frame)``, rotated as the file says it is displayed (phone videos). Writers take the same arrays;
encoders of 4:2:0 video need even sides, so an odd last row / column is cropped.

Long file: the readers and writers of the three backends (each a page) share the backend choice,
the frame type and the closing protocol; split apart they would import each other.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Iterator, NamedTuple

import numpy as np

from ..errors import DataError, MissingPackageError, first_line

__all__ = [
    "VIDEO_EXTENSIONS",
    "BACKENDS",
    "INSTALL_HINT",
    "Frame",
    "VideoReader",
    "VideoWriter",
    "available_backends",
    "resolve_backend",
    "is_video",
    "output_extension",
    "open_video",
    "open_camera",
    "create_video_writer",
]

#: File extensions read as video (an animated ``.gif`` is a video, a still one an image).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".3gp", ".gif")
#: The video libraries, in the order ``auto`` tries them.
BACKENDS = ("pyav", "opencv")
#: What to install to read and write video.
INSTALL_HINT = "pip install av (or pip install opencv-python-headless)"
_PACKAGES = {"pyav": ("av", "PyAV", "pip install av"),
             "opencv": ("cv2", "OpenCV", "pip install opencv-python-headless")}
_WRITABLE = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
_DEFAULT_FPS = 25.0


class Frame(NamedTuple):
    """A decoded frame: ``pixels`` uint8 ``[H, W, 3]`` RGB; ``time`` in seconds from the first frame."""

    pixels: np.ndarray
    time: float


def _library(backend: str) -> Any:
    """The module of ``backend`` (``av`` or ``cv2``), or None when it is not installed."""
    module = _PACKAGES[backend][0]
    if module == "cv2":
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # our own messages say what failed
    try:
        return __import__(module)
    except ImportError:
        return None


def available_backends() -> list[str]:
    """The video libraries installed here, in the order ``auto`` uses them (``[]`` when none)."""
    return [b for b in BACKENDS if _library(b) is not None]


def resolve_backend(backend: str, path: str, *, writing: bool = False, flag: str | None = None) -> str:
    """The library that reads (or writes) video ``path``: ``"pyav"``, ``"opencv"`` or ``"pillow"`` (GIF).

    ``backend``: ``auto``, ``pyav`` or ``opencv``. Raises :class:`~ssdfast.errors.MissingPackageError`
    naming ``path`` (and ``flag``, the option that gave it) and the package to install when the library
    needed is missing.
    """
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend should be auto, pyav or opencv, got {backend!r}")
    ext = os.path.splitext(str(path))[1].lower()
    if ext == ".gif":
        return "pillow"
    if backend != "auto":
        _module, name, install = _PACKAGES[backend]
        if _library(backend) is None:
            raise MissingPackageError.about(path, f"{name} is not installed ({install})", flag)
        return backend
    found = available_backends()
    if not found:
        verb = "writing" if writing else "reading"
        what = f"{verb} {ext or 'this'} video needs PyAV or OpenCV: {INSTALL_HINT}"
        raise MissingPackageError.about(path, what, flag)
    return found[0]


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as a video: a video extension, or an animated GIF."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        from PIL import Image

        try:
            with Image.open(path) as im:
                return getattr(im, "n_frames", 1) > 1
        except Exception:  # unreadable: the image reader names the problem
            return False
    return ext in VIDEO_EXTENSIONS


def output_extension(source: str) -> str:
    """Extension of the annotated copy of video ``source``: the same container when it is written
    here (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm``, ``.m4v``, ``.gif``), else ``.mp4``."""
    ext = os.path.splitext(source)[1].lower()
    return ext if ext in _WRITABLE + (".gif",) else ".mp4"


def _even(n: int) -> int:  # 4:2:0 chroma needs even sides
    return max(2, int(n) // 2 * 2)


class _Closing:
    """``close()``, and ``with`` closing."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ readers
class VideoReader(_Closing):
    """Frames of a video file or camera: iterate for :class:`Frame` s; ``close()`` (or use ``with``).

    Attributes: ``path`` (file, or ``camera:N``), ``backend``, ``fps`` (25 when the file does not
    say), ``width``, ``height`` (as displayed), ``frame_count`` (None when unknown).
    """

    path: str
    backend: str
    fps: float = _DEFAULT_FPS
    width: int = 0
    height: int = 0
    frame_count: int | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError


class _PyAVReader(VideoReader):
    backend = "pyav"

    def __init__(self, path: str):
        av = _library("pyav")
        self.path = path
        try:
            self._container = av.open(path)
        except Exception as exc:  # av.error.* for missing, unreadable or unknown files
            raise DataError(f"{path}: cannot open video ({first_line(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DataError(f"{path}: no video stream in this file")
        self._stream = stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else _DEFAULT_FPS
        self.frame_count = int(stream.frames) or None
        self._frames = self._decode()
        try:  # the first frame now: a file that does not decode fails here, and gives the displayed size
            self._first: Frame | None = next(self._frames)
        except StopIteration:
            self._first = None
        except DataError:
            self._container.close()
            raise
        if self._first is not None:
            self.height, self.width = self._first.pixels.shape[:2]
        else:
            self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)

    def _decode(self) -> Iterator[Frame]:
        first = None
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                pixels = frame.to_ndarray(format="rgb24")
                turns = int(round(getattr(frame, "rotation", 0) or 0)) // 90 % 4  # counter-clockwise
                if turns:
                    pixels = np.ascontiguousarray(np.rot90(pixels, k=turns))
                if frame.time is None:
                    t = index / self.fps
                else:
                    first = frame.time if first is None else first
                    t = frame.time - first
                index += 1
                yield Frame(pixels, float(t))
        except Exception as exc:  # av.error.InvalidDataError on a damaged stream
            raise DataError(f"{self.path}: cannot decode frame {index} ({first_line(exc)})") from None

    def __iter__(self) -> Iterator[Frame]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def close(self) -> None:
        self._container.close()


class _OpenCVReader(VideoReader):
    backend = "opencv"

    def __init__(self, source: str | int):
        cv2 = _library("opencv")
        self._cv2 = cv2
        self._live = isinstance(source, int) or str(source).startswith("/dev/video")
        self.path = f"camera:{source}" if isinstance(source, int) else str(source)
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            what = f"camera {source}" if isinstance(source, int) else f"{source}: cannot open video"
            raise DataError(f"{what} (OpenCV could not open it)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0) or _DEFAULT_FPS
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not self._live else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        # (OpenCV rotates the frames of a rotated video as displayed, and reports the sizes so)

    def __iter__(self) -> Iterator[Frame]:
        import time

        cv2, start, last, index = self._cv2, None, -1.0, 0
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            if self._live:
                start = time.perf_counter() if start is None else start
                t = time.perf_counter() - start
            else:  # the timestamp of the frame just read; index / fps when the file gives none
                msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0)
                start = msec if start is None else start
                t = (msec - start) / 1000.0
                if index and t <= last:
                    t = index / self.fps
            last = t
            index += 1
            yield Frame(np.ascontiguousarray(frame[:, :, ::-1]), float(t))  # BGR -> RGB

    def close(self) -> None:
        self._cap.release()


class _GifReader(VideoReader):
    backend = "pillow"

    def __init__(self, path: str):
        from PIL import Image

        self.path = path
        try:
            self._image = Image.open(path)
        except Exception as exc:
            raise DataError(f"{path}: cannot open ({first_line(exc)})") from None
        self.width, self.height = self._image.size
        self.frame_count = int(getattr(self._image, "n_frames", 1))
        self.fps = 1000.0 / (self._image.info.get("duration") or 100)

    def __iter__(self) -> Iterator[Frame]:
        from PIL import ImageSequence

        t = 0.0
        for frame in ImageSequence.Iterator(self._image):
            yield Frame(np.array(frame.convert("RGB")), t)
            t += (frame.info.get("duration") or 1000.0 / self.fps) / 1000.0

    def close(self) -> None:
        self._image.close()


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """A :class:`VideoReader` of the video file (or stream URL) ``path``; see :func:`resolve_backend`.

    Raises :class:`~ssdfast.errors.DataError` naming the file when it cannot be opened
    (:class:`~ssdfast.errors.MissingPackageError` when no library reads it).
    """
    path = os.fspath(path)
    chosen = resolve_backend(backend, path)
    if chosen == "pillow":
        return _GifReader(path)
    if "://" not in path and not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    return _PyAVReader(path) if chosen == "pyav" else _OpenCVReader(path)


def open_camera(index: int) -> VideoReader:
    """Frames of camera ``index`` (``/dev/video<index>`` on Linux) through OpenCV.

    Raises :class:`~ssdfast.errors.MissingPackageError` when OpenCV is not installed,
    :class:`~ssdfast.errors.DataError` when the camera does not open."""
    if _library("opencv") is None:
        raise MissingPackageError(f"camera {index}: reading a camera needs OpenCV: pip install opencv-python-headless")
    return _OpenCVReader(int(index))


# ------------------------------------------------------------------------------------------ writers
class VideoWriter(_Closing):
    """Writes RGB uint8 ``[H, W, 3]`` frames: ``write(pixels)``, then ``close()`` (or use ``with``).

    Attributes: ``path``, ``backend``, ``fps``, ``width``, ``height`` (of the file; even for
    4:2:0 codecs), ``codec``.
    """

    path: str
    backend: str
    codec: str
    fps: float
    width: int
    height: int

    def write(self, pixels: np.ndarray) -> None:
        raise NotImplementedError

    def _fit(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"frames should be uint8 [H, W, 3], got {pixels.dtype} {tuple(pixels.shape)}")
        if pixels.shape[0] < self.height or pixels.shape[1] < self.width:
            raise DataError(f"{self.path}: frame of {pixels.shape[1]}x{pixels.shape[0]}, expected "
                            f"{self.width}x{self.height}")
        return np.ascontiguousarray(pixels[: self.height, : self.width])


class _PyAVWriter(VideoWriter):
    backend = "pyav"
    #: codecs tried in order for each container (the first this FFmpeg build has wins)
    _CODECS = {".avi": ("mjpeg",), ".webm": ("libvpx-vp9", "libvpx")}
    _DEFAULT_CODECS = ("libx264", "h264", "mpeg4")

    def __init__(self, path: str, fps: float, width: int, height: int):
        av = _library("pyav")
        self._av = av
        self.path, self.fps = path, float(fps) if fps > 0 else _DEFAULT_FPS
        ext = os.path.splitext(path)[1].lower()
        try:
            self._container = av.open(path, "w")
        except Exception as exc:
            raise DataError(f"{path}: cannot write video ({first_line(exc)})") from None
        rate = Fraction(self.fps).limit_denominator(1001)
        self.width, self.height = _even(width), _even(height)
        error: Exception | None = None
        for codec in self._CODECS.get(ext, self._DEFAULT_CODECS):
            try:
                self._stream = self._container.add_stream(codec, rate=rate)
                break
            except Exception as exc:  # a codec this FFmpeg build lacks
                error = exc
        else:
            self._container.close()
            raise DataError(f"{path}: PyAV cannot write {ext} video here ({first_line(error)})")
        self._stream.width, self._stream.height = self.width, self.height
        self.codec = self._stream.codec_context.name
        self._stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"

    def write(self, pixels: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(self._fit(pixels), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():  # flush the encoder
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None


class _OpenCVWriter(VideoWriter):
    backend = "opencv"
    _FOURCC = {".avi": "MJPG", ".mkv": "MJPG", ".webm": "VP80"}

    def __init__(self, path: str, fps: float, width: int, height: int):
        cv2 = _library("opencv")
        ext = os.path.splitext(path)[1].lower()
        self.path, self.fps = path, float(fps) if fps > 0 else _DEFAULT_FPS
        self.width, self.height = _even(width), _even(height)
        self.codec = self._FOURCC.get(ext, "mp4v")
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.codec), self.fps, (self.width, self.height))
        if not self._writer.isOpened():
            raise DataError(f"{path}: OpenCV cannot write {ext} video here")

    def write(self, pixels: np.ndarray) -> None:
        self._writer.write(np.ascontiguousarray(self._fit(pixels)[:, :, ::-1]))  # RGB -> BGR

    def close(self) -> None:
        self._writer.release()


class _GifWriter(VideoWriter):
    """Animated GIF through Pillow; frames are kept until ``close`` (for short clips)."""

    backend = "pillow"
    codec = "gif"

    def __init__(self, path: str, fps: float, width: int, height: int):
        self.path, self.fps = path, float(fps) if fps > 0 else 10.0
        self.width, self.height = int(width), int(height)
        self._frames: list[Any] = []

    def write(self, pixels: np.ndarray) -> None:
        from PIL import Image

        self._frames.append(Image.fromarray(self._fit(pixels)))

    def close(self) -> None:
        if self._frames:
            duration = int(round(1000.0 / self.fps))
            self._frames[0].save(self.path, save_all=True, append_images=self._frames[1:], duration=duration, loop=0)
            self._frames = []


def create_video_writer(path: str | os.PathLike, fps: float, width: int, height: int,
                        backend: str = "auto") -> VideoWriter:
    """A :class:`VideoWriter` of ``width`` x ``height`` frames at ``fps`` to ``path``; the
    container follows the extension (see the module docstring for the codecs).

    Raises :class:`~ssdfast.errors.MissingPackageError` naming the file when no installed library
    writes it, :class:`~ssdfast.errors.DataError` when it cannot be written.
    """
    path = os.fspath(path)
    chosen = resolve_backend(backend, path, writing=True)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if chosen == "pillow":
        return _GifWriter(path, fps, width, height)
    if chosen == "pyav":
        return _PyAVWriter(path, fps, width, height)
    return _OpenCVWriter(path, fps, width, height)
