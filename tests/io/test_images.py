"""The one image reader: odd formats converted, EXIF applied, truncation used or skipped by rule."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssdfast.errors import DataError
from ssdfast.io.images import ImageWarning, load_image, read_image

from .samples import encode


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def test_lossless_formats_equal_the_pixels(tmp_path, photo):
    for fmt, ext in (("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")):
        options = {"lossless": True} if fmt == "WEBP" else {}
        path = _write(tmp_path, f"a.{ext}", encode(Image.fromarray(photo), fmt, **options))
        np.testing.assert_array_equal(_hwc(read_image(path)), photo, err_msg=fmt)


def test_modes_are_converted_to_rgb(tmp_path, photo):
    gray = photo[..., 0]
    cases = {
        "gray.png": (Image.fromarray(gray), np.repeat(gray[..., None], 3, 2)),
        "rgba.png": (Image.fromarray(np.dstack([photo, photo[..., :1]])), photo),
        "gray16.png": (Image.fromarray(gray.astype(np.uint16) * 257), np.repeat(gray[..., None], 3, 2)),
        "palette.png": (Image.fromarray(photo).convert("P"),
                        np.asarray(Image.fromarray(photo).convert("P").convert("RGB"))),
    }
    for name, (image, expected) in cases.items():
        path = _write(tmp_path, name, encode(image, "PNG"))
        np.testing.assert_array_equal(_hwc(read_image(path)), expected, err_msg=name)
    cmyk = _write(tmp_path, "cmyk.jpg", encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95))
    got = _hwc(read_image(cmyk)).astype(int)
    assert np.abs(got - photo.astype(int)).mean() < 12  # CMYK -> RGB, through JPEG


def test_exif_orientation_is_applied(tmp_path, photo):
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright = _hwc(read_image(_write(tmp_path, "upright.jpg", encode(image, "JPEG", quality=95))))
    path = _write(tmp_path, "rotated.jpg", encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    got = read_image(path)
    assert tuple(got.shape) == (3, photo.shape[1], photo.shape[0])
    np.testing.assert_array_equal(_hwc(got), np.rot90(upright, k=-1))


def test_jpeg_short_by_20_bytes_is_used_with_a_warning(tmp_path, photo):
    whole = encode(Image.fromarray(photo), "JPEG", quality=90)
    path = _write(tmp_path, "short.jpg", whole[:-20])  # the end-of-image marker is gone
    loaded = load_image(path)
    assert loaded.warning is not None and str(path) in loaded.warning and "truncated" in loaded.warning
    full = _hwc(read_image(_write(tmp_path, "whole.jpg", whole))).astype(int)
    got = _hwc(loaded.pixels).astype(int)
    assert got.shape == full.shape
    diff = np.abs(got[:-16] - full[:-16])  # all but the last MCU row, as decoded whole (another decoder)
    assert diff.mean() < 1 and diff.max() <= 8
    with pytest.warns(ImageWarning, match="short.jpg: truncated"):
        read_image(path)
    with pytest.raises(DataError, match="short.jpg: truncated.*strict"):
        read_image(path, strict=True)


def test_jpeg_cut_to_5_percent_is_unreadable(tmp_path, photo):
    whole = encode(Image.fromarray(photo), "JPEG", quality=90)
    path = _write(tmp_path, "cut.jpg", whole[: len(whole) // 20])
    with pytest.raises(DataError, match=r"cut.jpg: truncated image, \d+% of its rows are missing") as info:
        load_image(path)
    assert ".cpp" not in str(info.value) and "\n" not in str(info.value)


def test_truncated_png(tmp_path, photo):
    whole = encode(Image.fromarray(photo), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nearly = load_image(_write(tmp_path, "nearly.png", whole[:-200]))
    assert nearly.warning is not None
    with pytest.raises(DataError, match="nearly_nothing.png"):
        load_image(_write(tmp_path, "nearly_nothing.png", whole[: len(whole) // 20]))


@pytest.mark.parametrize("name, data, message", [
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"this is a text file, not an image", "unreadable image"),
    ("header_only.png", b"\x89PNG\r\n\x1a\n", "unreadable image"),
])
def test_unreadable_files_give_one_line_of_our_own(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(DataError, match=message) as info:
        load_image(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text and ".cpp" not in text and "decode_avif" not in text


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read image file"):
        load_image(tmp_path / "missing.jpg")
