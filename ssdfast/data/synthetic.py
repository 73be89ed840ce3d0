"""A synthetic detection set written in the real on-disk formats (VOC, COCO, Open Images).

Each image is a textured, noisy, low-saturation background (smooth colour blotches, grey lines and
outlines as distractors) with 1-5 saturated shapes, one shape and hue per class (red circle, green
square, blue triangle, yellow cross, magenta ring, cyan star, orange hexagon, purple diamond), at
sizes from 10% to 60% of the image side, partly overlapping (a new shape may cover at most ~35% of
an earlier one's box). A box is the exact pixel extent of its shape (drawn alone into a mask), in
continuous pixel ``xyxy``. Everything is a function of ``(seed, image index)``, so the output does not
depend on the number of worker processes.

Layouts:

- ``voc``: ``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/{trainval,test}.txt`` (80/20),
  ``labels.txt`` (``BACKGROUND`` first).
- ``coco``: ``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json`` with sparse
  category ids (1, 3, 7, 8, ...), a few ``iscrowd`` clusters of tiny shapes and a few images without
  annotations.
- ``open_images``: pytorch-ssd's downloader layout: ``sub-{train,validation,test}-annotations-bbox.csv``
  (``ImageID,...,XMin,XMax,YMin,YMax`` normalized, ..., ``ClassName``) and ``{train,validation,test}/``.
"""
from __future__ import annotations

import colorsys
import csv
import io
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from ..threads import available_cores

__all__ = ["generate", "SHAPES", "COCO_CATEGORY_IDS", "class_names_for", "FORMATS"]

FORMATS = ("voc", "coco", "open_images")

#: (class name, hue in degrees) — one distinct shape and colour per class
SHAPES: list[tuple[str, float]] = [
    ("circle", 0.0),
    ("square", 120.0),
    ("triangle", 225.0),
    ("cross", 55.0),
    ("ring", 300.0),
    ("star", 180.0),
    ("hexagon", 28.0),
    ("diamond", 265.0),
]
#: sparse COCO category ids of the classes, in class order (exercises the label <-> id mapping)
COCO_CATEGORY_IDS = [1, 3, 7, 8, 12, 17, 20, 25]

_MIN_REL, _MAX_REL = 0.10, 0.60  # object side relative to the image side
_MAX_OVERLAP = 0.35  # intersection / smaller box area allowed between two objects
_JPEG_QUALITY = 90


def class_names_for(num_classes: int) -> list[str]:
    """The class names (without BACKGROUND) of a set with ``num_classes`` classes."""
    _check_num_classes(num_classes)
    return [name for name, _ in SHAPES[:num_classes]]


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes should be between 1 and {len(SHAPES)}, got {num_classes}")


# --------------------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.uniform(50, 205)
    tint = rng.uniform(-18, 18, size=3)
    gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    # smooth blotches: mostly brightness, little colour, so the saturated shapes stand out
    grid = rng.normal(0.0, 30.0, size=(gh, gw, 1)) + rng.normal(0.0, 7.0, size=(gh, gw, 3))
    low = Image.fromarray(np.clip(grid + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(low, dtype=np.float32) - 128.0 + base + tint
    # a faint fine texture
    fine = rng.normal(0.0, 10.0, size=(height // 4 + 1, width // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:height, :width]
    arr += fine
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 8)):  # grey distractors: lines and outlines
        g = int(rng.uniform(20, 235))
        color = (g, g, g)
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, 1, 4) * [width, height, width, height])
        if rng.random() < 0.6:
            draw.line((x0, y0, x1, y1), fill=color, width=int(rng.integers(1, 4)))
        else:
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=color,
                           width=int(rng.integers(1, 3)))
    return img


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _draw_shape(mask: ImageDraw.ImageDraw, name: str, cx: float, cy: float, w: float, h: float, angle: float) -> None:
    """Draw shape ``name`` filled with 255 into ``mask``, centred at (cx, cy), extent about w x h."""
    def poly(unit: np.ndarray) -> None:  # unit-square coordinates in [-0.5, 0.5]
        pts = _rotate(unit * [w, h], angle) + [cx, cy]
        mask.polygon([tuple(p) for p in pts], fill=255)

    if name == "circle":
        mask.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=255)
    elif name == "ring":
        mask.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=255)
        mask.ellipse((cx - w * 0.27, cy - h * 0.27, cx + w * 0.27, cy + h * 0.27), fill=0)
    elif name == "square":
        poly(np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]))
    elif name == "diamond":
        poly(np.array([[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]]))
    elif name == "triangle":
        poly(np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]))
    elif name == "cross":
        t = 0.17
        poly(np.array([[-t, -0.5], [t, -0.5], [t, 0.5], [-t, 0.5]]))
        poly(np.array([[-0.5, -t], [0.5, -t], [0.5, t], [-0.5, t]]))
    elif name == "star":
        k = np.arange(10)
        r = np.where(k % 2 == 0, 0.5, 0.21)
        a = -math.pi / 2 + k * math.pi / 5
        poly(np.stack([r * np.cos(a), r * np.sin(a)], axis=1))
    elif name == "hexagon":
        a = np.arange(6) * math.pi / 3
        poly(0.5 * np.stack([np.cos(a), np.sin(a)], axis=1))
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(name)


def _colour(rng: np.random.Generator, hue: float) -> tuple[int, int, int]:
    h = ((hue + rng.uniform(-8, 8)) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _overlap_ok(box: tuple[float, float, float, float], others: list[tuple[float, float, float, float]]) -> bool:
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    for ox1, oy1, ox2, oy2 in others:
        iw = min(x2, ox2) - max(x1, ox1)
        ih = min(y2, oy2) - max(y1, oy1)
        if iw > 0 and ih > 0:
            smaller = min(area, (ox2 - ox1) * (oy2 - oy1))
            if iw * ih > _MAX_OVERLAP * smaller:
                return False
    return True


def _render(
    seed: int, index: int, image_size: int, num_classes: int, *, crowd: bool, allow_empty: bool
) -> tuple[bytes, int, int, list[dict[str, Any]]]:
    """Draw image ``index`` -> (jpeg bytes, width, height, objects); an object is
    ``{"label": 0-based class, "box": (x1, y1, x2, y2) continuous pixels, "area": pixels, "crowd": bool}``."""
    rng = np.random.default_rng([seed, index, 0x55D])
    long_side = image_size
    short_side = int(round(image_size * rng.uniform(0.75, 1.0)))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    img = _background(rng, width, height)
    objects: list[dict[str, Any]] = []
    boxes: list[tuple[float, float, float, float]] = []
    empty = allow_empty and rng.random() < 0.06
    count = 0 if empty else int(rng.integers(1, 6))
    side = min(width, height)
    for _ in range(count):
        for _attempt in range(30):
            label = int(rng.integers(0, num_classes))
            name, hue = SHAPES[label]
            s = side * math.exp(rng.uniform(math.log(_MIN_REL), math.log(_MAX_REL)))
            aspect = math.exp(rng.uniform(-0.25, 0.25))
            w, h = s * math.sqrt(aspect), s / math.sqrt(aspect)
            if name in ("circle", "ring", "star", "hexagon"):
                w = h = s
            angle = rng.uniform(-0.3, 0.3) if name not in ("circle", "ring") else 0.0
            cx = rng.uniform(w / 2 + 1, width - w / 2 - 1) if width > w + 2 else width / 2
            cy = rng.uniform(h / 2 + 1, height - h / 2 - 1) if height > h + 2 else height / 2
            mask = Image.new("L", (width, height), 0)
            _draw_shape(ImageDraw.Draw(mask), name, cx, cy, w, h, angle)
            bbox = mask.getbbox()
            if bbox is None:
                continue
            box = tuple(float(v) for v in bbox)
            if not _overlap_ok(box, boxes):
                continue
            img.paste(_colour(rng, hue), mask=mask)
            area = int(np.count_nonzero(np.asarray(mask)))
            objects.append({"label": label, "box": box, "area": area, "crowd": False})
            boxes.append(box)
            break
    if crowd and not empty and rng.random() < 0.12:
        # a cluster of tiny shapes of one class, annotated as one iscrowd region (COCO only)
        label = int(rng.integers(0, num_classes))
        name, hue = SHAPES[label]
        cw, ch = side * rng.uniform(0.22, 0.32), side * rng.uniform(0.22, 0.32)
        for _attempt in range(20):
            x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
            region = (x0, y0, x0 + cw, y0 + ch)
            if _overlap_ok(region, boxes):
                break
        else:
            region = None
        if region is not None:
            mask = Image.new("L", (width, height), 0)
            draw = ImageDraw.Draw(mask)
            for _ in range(int(rng.integers(6, 12))):
                s = side * rng.uniform(0.03, 0.05)
                draw_cx = rng.uniform(region[0] + s / 2, region[2] - s / 2)
                draw_cy = rng.uniform(region[1] + s / 2, region[3] - s / 2)
                _draw_shape(draw, name, draw_cx, draw_cy, s, s, 0.0)
            bbox = mask.getbbox()
            if bbox is not None:
                img.paste(_colour(rng, hue), mask=mask)
                box = tuple(float(v) for v in bbox)
                objects.append({"label": label, "box": box, "area": int(np.count_nonzero(np.asarray(mask))),
                                "crowd": True})
    arr = np.asarray(img, dtype=np.int16)
    noise = rng.normal(0.0, 5.0, size=arr.shape).astype(np.int16)
    img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue(), width, height, objects


def _render_and_write(job: tuple[int, int, int, int, bool, bool, str]) -> tuple[int, int, list[dict[str, Any]]]:
    seed, index, image_size, num_classes, crowd, allow_empty, path = job
    data, width, height, objects = _render(seed, index, image_size, num_classes, crowd=crowd, allow_empty=allow_empty)
    with open(path, "wb") as f:
        f.write(data)
    return width, height, objects


def _render_all(jobs: list[tuple], workers: int | None) -> list[tuple[int, int, list[dict[str, Any]]]]:
    if workers is None:
        workers = min(available_cores(), 8) if len(jobs) >= 64 else 1
    if workers <= 1:
        return [_render_and_write(j) for j in jobs]
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(_render_and_write, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


# --------------------------------------------------------------------------------------- writers
def _voc_xml(image_id: str, width: int, height: int, objects: list[dict[str, Any]], names: list[str]) -> str:
    parts = [
        "<annotation>",
        "  <folder>JPEGImages</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        "  <source><database>ssdfast synthetic</database></source>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        # VOC: 1-based inclusive pixel indices (read back as x1 = xmin - 1, x2 = xmax)
        parts += [
            "  <object>",
            f"    <name>{escape(names[obj['label']])}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            "    <difficult>0</difficult>",
            f"    <bndbox><xmin>{int(x1) + 1}</xmin><ymin>{int(y1) + 1}</ymin>"
            f"<xmax>{int(x2)}</xmax><ymax>{int(y2)}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _split_counts(n: int, fractions: list[float]) -> list[int]:
    counts = [int(round(n * f)) for f in fractions[:-1]]
    counts.append(n - sum(counts))
    return counts


def _write_voc(out: str, n: int, image_size: int, seed: int, num_classes: int, workers: int | None) -> None:
    names = class_names_for(num_classes)
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    ids = [f"{i:06d}" for i in range(n)]
    jobs = [(seed, i, image_size, num_classes, False, False, os.path.join(out, "JPEGImages", ids[i] + ".jpg"))
            for i in range(n)]
    results = _render_all(jobs, workers)
    for image_id, (width, height, objects) in zip(ids, results):
        with open(os.path.join(out, "Annotations", image_id + ".xml"), "w", encoding="utf-8") as f:
            f.write(_voc_xml(image_id, width, height, objects, names))
    n_train, _ = _split_counts(n, [0.8, 0.2])
    if n >= 2:
        n_train = min(max(n_train, 1), n - 1)
    for name, part in (("trainval.txt", ids[:n_train]), ("test.txt", ids[n_train:])):
        with open(os.path.join(out, "ImageSets", "Main", name), "w", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in part))
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(["BACKGROUND"] + names) + "\n")


def _write_coco(out: str, n: int, image_size: int, seed: int, num_classes: int, workers: int | None) -> None:
    names = class_names_for(num_classes)
    categories = [
        {"id": COCO_CATEGORY_IDS[k], "name": names[k], "supercategory": "shape"} for k in range(num_classes)
    ]
    n_train, _ = _split_counts(n, [0.8, 0.2])
    if n >= 2:
        n_train = min(max(n_train, 1), n - 1)
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    splits = [("train2017", range(0, n_train)), ("val2017", range(n_train, n))]
    for folder, _ in splits:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    jobs = []
    for folder, indices in splits:
        for i in indices:
            jobs.append((seed, i, image_size, num_classes, True, True, os.path.join(out, folder, f"{i + 1:012d}.jpg")))
    results = _render_all(jobs, workers)
    ann_id = 1
    pos = 0
    for folder, indices in splits:
        images, annotations = [], []
        for i in indices:
            width, height, objects = results[pos]
            pos += 1
            images.append({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": width, "height": height})
            for obj in objects:
                x1, y1, x2, y2 = obj["box"]
                annotations.append({
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": COCO_CATEGORY_IDS[obj["label"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(obj["area"]),
                    "iscrowd": int(obj["crowd"]),
                    "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
                })
                ann_id += 1
        doc = {
            "info": {"description": "ssdfast synthetic shapes", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        split = folder[: -len("2017")]
        with open(os.path.join(out, "annotations", f"instances_{split}2017.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f)


_OI_COLUMNS = [
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
    "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside", "id", "ClassName",
]


def _write_open_images(out: str, n: int, image_size: int, seed: int, num_classes: int, workers: int | None) -> None:
    names = [name.capitalize() for name in class_names_for(num_classes)]
    mids = [f"/m/0ssd{k:02d}" for k in range(num_classes)]
    counts = _split_counts(n, [0.8, 0.1, 0.1])
    if n >= 3:
        counts[0] = n - max(counts[1], 1) - max(counts[2], 1)
        counts[1], counts[2] = max(counts[1], 1), max(counts[2], 1)
    splits, start = [], 0
    for split, c in zip(("train", "validation", "test"), counts):
        splits.append((split, range(start, start + c)))
        start += c
    jobs = []
    for split, indices in splits:
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for i in indices:
            jobs.append((seed, i, image_size, num_classes, False, False, os.path.join(out, split, f"{i:016x}.jpg")))
    results = _render_all(jobs, workers)
    pos = 0
    for split, indices in splits:
        with open(os.path.join(out, f"sub-{split}-annotations-bbox.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(_OI_COLUMNS)
            for i in indices:
                width, height, objects = results[pos]
                pos += 1
                for obj in objects:
                    x1, y1, x2, y2 = obj["box"]
                    k = obj["label"]
                    writer.writerow([
                        f"{i:016x}", "xclick", mids[k], 1, f"{x1 / width:.6f}", f"{x2 / width:.6f}",
                        f"{y1 / height:.6f}", f"{y2 / height:.6f}", 0, 0, 0, 0, 0, mids[k], names[k],
                    ])
    with open(os.path.join(out, "class-descriptions-boxable.csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(zip(mids, names))


_WRITERS = {"voc": _write_voc, "coco": _write_coco, "open_images": _write_open_images}


def generate(
    out_dir: str | os.PathLike,
    format: str = "voc",
    num_images: int = 1000,
    image_size: int = 256,
    seed: int = 0,
    num_classes: int = 5,
    workers: int | None = None,
) -> str:
    """Write a synthetic detection set to ``out_dir`` in ``format`` (``voc``, ``coco``, ``open_images``).

    Images have ``image_size`` as the long side (the short side 75-100% of it). ``workers``
    processes draw the images (default: up to 8 when there are 64 images or more); the result is
    the same for any number of workers. Existing files of the same names are overwritten.
    Returns ``out_dir`` as a string.
    """
    if format not in _WRITERS:
        raise ValueError(f"format should be one of {FORMATS}, got {format!r}")
    _check_num_classes(num_classes)
    if num_images < 1:
        raise ValueError(f"num_images should be at least 1, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size should be at least 32 pixels, got {image_size}")
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    _WRITERS[format](out, int(num_images), int(image_size), int(seed), int(num_classes), workers)
    return out


def generate_atomic(out_dir: str | os.PathLike, **kwargs: Any) -> str:
    """:func:`generate` into a temporary sibling folder, then rename it to ``out_dir`` (absent before)."""
    out = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        generate(tmp, **kwargs)
        try:
            os.rename(tmp, out)
        except OSError:
            if not os.path.isdir(out):  # someone else (another rank) may have won the race
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out
