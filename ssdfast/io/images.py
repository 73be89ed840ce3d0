"""The one image reader: every path that reads an image file (training, evaluation, detection, export
checks, ``ssdfast-data validate``) calls :func:`load_image` or :func:`read_image`, so a file is the
same image everywhere.

- Decoded with torchvision's decoders (libjpeg-turbo, libpng, libwebp, giflib); what they do not
  read (BMP, TIFF, ...) or reject goes to PIL.
- Always ``uint8 [3, H, W]`` RGB: EXIF orientation applied; grayscale, palette, CMYK, alpha and
  16-bit images converted; an animated file gives its first frame.
- A truncated file whose pixels are (mostly) there — a JPEG short by a few bytes, which OpenCV, PIL
  with truncated loading, browsers and pytorch-ssd all read — is used, with a warning naming it.
  A file that cannot be decoded, or whose pixels are mostly missing, raises
  :class:`~ssdfast.errors.DataError` naming the file, in one line of our own (never a decoder's
  internals).
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError, first_line

__all__ = ["ImageWarning", "LoadedImage", "load_image", "read_image", "image_size", "IMAGE_EXTENSIONS"]

#: File extensions treated as images when a folder is listed (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")

#: A truncated image is skipped when more than this fraction of its rows is missing.
MAX_MISSING_FRACTION = 0.5

_PIL_LOCK = threading.Lock()  # PIL's truncated-loading switch is a module global


class ImageWarning(UserWarning):
    """An image file that is used but is not whole (e.g. a truncated JPEG); the message names it."""


@dataclass
class LoadedImage:
    """A decoded image file.

    Attributes:
        pixels: ``uint8 [3, H, W]`` RGB, EXIF orientation applied.
        warning: None for a whole file; else what is wrong with the file although it was used
            (``"<path>: truncated image (...); used as decoded"``).
    """

    pixels: Tensor
    warning: str | None = None


def _to_rgb8(t: Tensor) -> Tensor:
    """A decoded tensor (``[C, H, W]`` or ``[N, C, H, W]``, uint8 or uint16) -> ``uint8 [3, H, W]``."""
    if t.dim() == 4:  # animated GIF / WebP: the first frame
        t = t[0]
    if t.dtype == torch.uint16:
        t = (t.to(torch.int32) >> 8).to(torch.uint8)
    elif t.dtype != torch.uint8:
        t = t.clamp(0, 255).to(torch.uint8)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 2:  # gray + alpha
        t = t[:1].expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    if t.is_contiguous():
        return t
    # torchvision decodes to a [C, H, W] view of [H, W, C] pixels. numpy's copy is single-threaded:
    # torch's parallel permute-copy ran 5-10x slower on a loaded 2-core machine (OpenMP contention).
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(t.numpy()))


def _torchvision_decode(data: Tensor) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image

    with warnings.catch_warnings():  # e.g. torchvision's AVIF/HEIC deprecation notes: not the user's business
        warnings.simplefilter("ignore")
        return decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)


def _pil_decode(raw: bytes, truncated_ok: bool) -> Tensor:
    """PIL's decode (EXIF orientation applied, any mode converted to RGB); with ``truncated_ok`` a
    truncated file is decoded as far as its data goes."""
    from PIL import Image, ImageFile, ImageOps

    with _PIL_LOCK:
        old = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit gray: keep the top 8 bits
                    import numpy as np

                    a = np.asarray(im, dtype=np.uint32)
                    shift = 8 if im.mode.startswith("I;16") or a.max(initial=0) < 65536 else 24
                    im = Image.fromarray((a >> shift).astype(np.uint8))
                rgb = im.convert("RGB")
                from torchvision.transforms.v2.functional import pil_to_tensor

                return pil_to_tensor(rgb)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old


def _missing_fraction(pixels: Tensor) -> float:
    """Fraction of the image's rows, from the bottom, that hold one flat colour: what a decoder fills
    in where a truncated file's data ran out (libjpeg: mid-grey; PNG: black)."""
    rows = pixels.shape[1]
    if rows == 0:
        return 1.0
    flat = (pixels == pixels[:, :, :1]).all(dim=2).all(dim=0)  # [H]: row is one colour
    last = pixels[:, -1, 0]
    same_as_last = (pixels[:, :, 0] == last[:, None]).all(dim=0)
    tail = flat & same_as_last
    if not bool(tail[-1]):
        return 0.0
    changes = (~tail).nonzero()
    first_missing = int(changes[-1]) + 1 if changes.numel() else 0
    return (rows - first_missing) / rows


def _short(exc: BaseException) -> str:
    """A decoder's message without its source locations (``decode_jpeg.cpp:171``) and second lines."""
    parts = [p.strip() for p in first_line(exc).split(",") if ".cpp:" not in p and "/csrc/" not in p]
    return ", ".join(p for p in parts if p) or type(exc).__name__


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read and fully decode an image file (see the module docstring for what is accepted).

    Raises:
        DataError naming the file when it is missing, empty, not an image in a format we read, or
        truncated with most of its pixels missing.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{p}: cannot read image file ({exc.strerror or exc})") from None
    if not raw:
        raise DataError(f"{p}: empty file")
    try:
        pixels = _torchvision_decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        return LoadedImage(_to_rgb8(pixels))
    except Exception as exc:  # torchvision's decoders raise RuntimeError, ValueError... for bad data
        first_error = _short(exc)
    try:  # formats torchvision does not read (BMP, TIFF...), and files its decoders reject
        return LoadedImage(_to_rgb8(_pil_decode(raw, truncated_ok=False)))
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        pil_error = _short(exc)
    try:
        pixels = _to_rgb8(_pil_decode(raw, truncated_ok=True))
    except Exception:
        pixels = None
    if pixels is None or pixels.shape[1] == 0 or pixels.shape[2] == 0:
        if "truncated" in (first_error + pil_error).lower():
            raise DataError(f"{p}: truncated image, too little of it to decode")
        reason = pil_error if "cannot identify" not in pil_error else "not an image file, or a format not supported"
        raise DataError(f"{p}: unreadable image ({reason})")
    missing = _missing_fraction(pixels)
    if missing > MAX_MISSING_FRACTION:
        raise DataError(f"{p}: truncated image, {missing:.0%} of its rows are missing ({first_error})")
    detail = f"{missing:.0%} of its rows missing" if missing > 0 else "its last pixels may be missing"
    return LoadedImage(pixels, f"{p}: truncated image ({detail}); used as decoded")


def strict_refusal(warning: str) -> str:
    """The error of a file used with ``warning`` (e.g. truncated) where warnings are errors (``--strict``)."""
    return f"{warning} (strict: not used)"


def read_image(path: str | os.PathLike, *, strict: bool = False) -> Tensor:
    """:func:`load_image`'s pixels; a file that is used but not whole issues an :class:`ImageWarning`
    (``strict=True``: raises :class:`~ssdfast.errors.DataError` instead)."""
    loaded = load_image(path)
    if loaded.warning is not None:
        if strict:
            raise DataError(strict_refusal(loaded.warning))
        warnings.warn(ImageWarning(loaded.warning), stacklevel=2)
    return loaded.pixels


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`load_image` gives it (EXIF orientation
    applied), read from its header without decoding the pixels.

    Raises :class:`~ssdfast.errors.DataError` naming the file when it cannot be opened as an image.
    """
    from PIL import Image

    p = os.fspath(path)
    try:
        with Image.open(p) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except OSError as exc:
        reason = exc.strerror or "not an image file, or a format not supported"
        raise DataError(f"{p}: unreadable image ({reason})") from None
    except Exception as exc:  # PIL raises SyntaxError, ValueError... for bad headers
        raise DataError(f"{p}: unreadable image ({_short(exc)})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
