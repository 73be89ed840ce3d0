"""ssdfast.io.video: files written by PyAV and OpenCV themselves, read back through ssdfast by the
other library (cross-checks), rotation, GIF through Pillow, and what happens without the libraries.

The library tests skip where PyAV / OpenCV are not installed (``pip install av
opencv-python-headless``, the ``test`` extra, runs them)."""
from __future__ import annotations

import struct
import sys
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from ssdfast.errors import DataError, MissingPackageError
from ssdfast.io import create_video_writer, is_video, open_camera, open_video
from ssdfast.io.video import INSTALL_HINT, available_backends, output_extension, resolve_backend

W, H, N, FPS = 96, 72, 6, 10.0


def _frames(n: int = N, w: int = W, h: int = H) -> list[np.ndarray]:
    """Frames that codecs keep close: a bright bar moving right over a dark gradient."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 2] = np.linspace(0, 120, w, dtype=np.uint8)[None, :]
        x = (i * w) // n
        f[:, x: x + w // n, :2] = 230
        out.append(f)
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < 6


def _read(path, backend):
    with open_video(path, backend) as reader:
        frames = list(reader)
    return reader, frames


def _pyav_write(path, frames, codec, fps=FPS, pix_fmt="yuv420p"):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def _opencv_write(path, frames, fourcc, fps=FPS):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()


@pytest.fixture
def no_video_library(monkeypatch):
    """As on a machine without PyAV and OpenCV: ``import av`` / ``import cv2`` fail."""
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "cv2", None)


# ---------------------------------------------------------------------------------------- libraries
@pytest.mark.parametrize("reader_backend", ["pyav", "opencv"])
def test_h264_mp4_written_by_pyav(tmp_path, reader_backend):
    pytest.importorskip("av")
    pytest.importorskip("cv2" if reader_backend == "opencv" else "av")
    source = _frames()
    path = tmp_path / "clip.mp4"
    _pyav_write(path, source, "libx264")
    reader, frames = _read(path, reader_backend)
    assert reader.backend == reader_backend
    assert (reader.width, reader.height, reader.frame_count) == (W, H, N) and reader.fps == pytest.approx(FPS)
    assert len(frames) == N and all(_close(f.pixels, s) for f, s in zip(frames, source))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(N)])


@pytest.mark.parametrize("reader_backend", ["pyav", "opencv"])
def test_mjpeg_avi_written_by_opencv(tmp_path, reader_backend):
    pytest.importorskip("cv2")
    pytest.importorskip("cv2" if reader_backend == "opencv" else "av")
    source = _frames()
    path = tmp_path / "clip.avi"
    _opencv_write(path, source, "MJPG", fps=12.5)
    reader, frames = _read(path, reader_backend)
    assert (reader.width, reader.height) == (W, H) and reader.fps == pytest.approx(12.5)
    assert len(frames) == N and all(_close(f.pixels, s) for f, s in zip(frames, source))
    assert frames[2].time == pytest.approx(2 / 12.5)


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mkv", ".mov"])
@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_writer_read_back_by_every_library(tmp_path, backend, ext):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    source = _frames(w=W + 1, h=H + 1)  # odd sides: 4:2:0 codecs get the even part
    path = tmp_path / f"out{ext}"
    with create_video_writer(path, FPS, W + 1, H + 1, backend=backend) as writer:
        for f in source:
            writer.write(f)
    assert (writer.width, writer.height, writer.backend) == (W, H, backend)
    for reader_backend in available_backends():
        reader, frames = _read(path, reader_backend)
        assert len(frames) == N and reader.fps == pytest.approx(FPS), (reader_backend, writer.codec)
        assert all(_close(f.pixels, s[:H, :W]) for f, s in zip(frames, source)), (reader_backend, writer.codec)
    if backend == "pyav" and ext in (".mp4", ".mkv", ".mov"):
        assert writer.codec in ("libx264", "h264")  # plays in browsers


def _rotate_mp4(path, out):
    """Set the MP4 track's display matrix to 'rotate 90 degrees clockwise' (a phone held upright)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd")
    version = data[at + 4]
    matrix = at + 8 + (32 if version == 1 else 20) + 8 + 8  # after the times, track id, duration, layer...
    assert struct.unpack(">9i", data[matrix: matrix + 36]) == (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    data[matrix: matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, H * 0x10000, 0, 0x40000000)
    out.write_bytes(bytes(data))


def test_rotated_phone_video_is_upright_in_both_libraries(tmp_path):
    pytest.importorskip("av")
    source = _frames()
    plain = tmp_path / "plain.mp4"
    _pyav_write(plain, source, "libx264")
    rotated = tmp_path / "rotated.mp4"
    _rotate_mp4(plain, rotated)
    upright = [np.rot90(s, k=-1) for s in source]  # displayed turned a quarter clockwise
    for backend in available_backends():
        reader, frames = _read(rotated, backend)
        assert (reader.width, reader.height) == (H, W), backend
        assert all(_close(f.pixels, u) for f, u in zip(frames, upright)), backend


def test_damaged_files_name_the_file(tmp_path):
    if not available_backends():
        pytest.skip("no video library")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 4)
    for backend in available_backends():
        with pytest.raises(DataError, match="garbage.mp4"):
            _read(garbage, backend)
        with pytest.raises(DataError, match="missing.mp4: no such file"):
            open_video(tmp_path / "missing.mp4", backend)
    if "pyav" in available_backends():
        whole = tmp_path / "whole.mp4"
        _pyav_write(whole, _frames(30), "libx264")
        cut = tmp_path / "cut.mp4"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) * 2 // 3])  # the index (moov) is at the end: unreadable
        with pytest.raises(DataError, match="cut.mp4"):
            _read(cut, "pyav")


# ---------------------------------------------------------------------------------------- Pillow
def test_gif_through_pillow_with_its_durations(tmp_path):
    source = _frames(4)
    path = tmp_path / "anim.gif"
    with create_video_writer(path, 5.0, W, H) as writer:
        for f in source:
            writer.write(f)
    assert writer.backend == "pillow"
    reader, frames = _read(path, "auto")
    assert reader.backend == "pillow" and (reader.width, reader.height, reader.frame_count) == (W, H, 4)
    assert [f.time for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6]) and reader.fps == pytest.approx(5.0)
    assert all(_close(f.pixels, s) for f, s in zip(frames, source))
    # a GIF whose frames have their own durations
    pil = [Image.fromarray(f) for f in source[:3]]
    pil[0].save(tmp_path / "uneven.gif", save_all=True, append_images=pil[1:], duration=[100, 300, 50], loop=0)
    _, frames = _read(tmp_path / "uneven.gif", "auto")
    assert [f.time for f in frames] == pytest.approx([0.0, 0.1, 0.4])


def test_is_video_and_output_extension(tmp_path):
    still = tmp_path / "still.gif"
    Image.fromarray(_frames(1)[0]).save(still)
    anim = tmp_path / "anim.gif"
    pil = [Image.fromarray(f) for f in _frames(2)]
    pil[0].save(anim, save_all=True, append_images=pil[1:])
    assert not is_video(still) and is_video(anim) and is_video("x.MP4") and not is_video("x.jpg")
    assert ([output_extension(p) for p in ("a.mp4", "b.AVI", "c.wmv", "d.gif", "e.ts")]
            == [".mp4", ".avi", ".mp4", ".gif", ".mp4"])


# ---------------------------------------------------------------------------------------- no library
def test_without_pyav_and_opencv(tmp_path, no_video_library):
    assert available_backends() == []
    with pytest.raises(MissingPackageError) as info:
        open_video(tmp_path / "clip.mp4")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "clip.mp4")) and INSTALL_HINT in message and "\n" not in message
    with pytest.raises(MissingPackageError, match="writing .avi video needs PyAV or OpenCV: pip install av"):
        create_video_writer(tmp_path / "out.avi", 10, W, H)
    with pytest.raises(MissingPackageError, match=r"PyAV is not installed \(pip install av\)"):
        resolve_backend("pyav", "clip.mp4")
    with pytest.raises(MissingPackageError,
                       match="camera 0: reading a camera needs OpenCV: pip install opencv-python-headless"):
        open_camera(0)
    # GIF needs neither
    path = tmp_path / "anim.gif"
    with create_video_writer(path, 10.0, W, H) as writer:
        for f in _frames(2):
            writer.write(f)
    assert len(_read(path, "auto")[1]) == 2
