"""Image files in the formats and states users' data sets hold, generated here; shared by the io,
data and cli tests (``from tests.io.samples import ...``)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth, noisy RGB image that compresses like a photo (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 256], -1) + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def odd_images(folder: Path, pixels: np.ndarray) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Write ``pixels`` (uint8 HxWx3) as the kinds of file users bring -> ``{kind: (path, (width,
    height) as read))}``: grayscale JPEG, CMYK JPEG, RGBA PNG, 16-bit grayscale PNG, an EXIF-rotated
    JPEG (displayed a quarter turn clockwise: width and height swap), a JPEG short by 20 bytes (its
    end marker gone: used with a warning) and one cut to 5% of its bytes (unreadable)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = pixels.shape[:2]
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    whole = encode(image, "JPEG", quality=90)
    files = {
        "gray": ("gray.jpg", encode(image.convert("L"), "JPEG", quality=90), (w, h)),
        "cmyk": ("cmyk.jpg", encode(image.convert("CMYK"), "JPEG", quality=90), (w, h)),
        "rgba": ("rgba.png", encode(Image.fromarray(np.dstack([pixels, pixels[..., :1]])), "PNG"), (w, h)),
        "gray16": ("gray16.png", encode(Image.fromarray(pixels[..., 1].astype(np.uint16) * 257), "PNG"), (w, h)),
        "exif_rotated": ("rotated.jpg", encode(image, "JPEG", quality=90, exif=exif.tobytes()), (h, w)),
        "short_by_20": ("short.jpg", whole[:-20], (w, h)),
        "cut_to_5pct": ("cut.jpg", whole[: len(whole) // 20], (w, h)),
    }
    out = {}
    for kind, (name, data, size) in files.items():
        path = folder / name
        path.write_bytes(data)
        out[kind] = (path, size)
    return out
