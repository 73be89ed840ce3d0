"""The synthetic generator: real layouts, determinism, the COCO corner cases it plants."""
from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from ssdfast.data import synthetic


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_voc_layout(voc_root):
    ids = (voc_root / "ImageSets/Main/trainval.txt").read_text().split()
    test_ids = (voc_root / "ImageSets/Main/test.txt").read_text().split()
    assert len(ids) + len(test_ids) == 12 and not set(ids) & set(test_ids)
    assert (voc_root / "labels.txt").read_text().split() == ["BACKGROUND", "circle", "square", "triangle",
                                                             "cross", "ring"]
    for image_id in ids + test_ids:
        root = ET.parse(voc_root / "Annotations" / f"{image_id}.xml").getroot()
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        with Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg") as im:
            assert im.size == (w, h) and max(w, h) == 112
        objects = root.findall("object")
        assert 1 <= len(objects) <= 5
        for obj in objects:
            x1, y1, x2, y2 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x1 < x2 <= w and 1 <= y1 < y2 <= h
            side = max(x2 - x1, y2 - y1) / min(w, h)
            assert 0.05 <= side <= 0.75


def test_deterministic_and_independent_of_workers(tmp_path):
    a = synthetic.generate(tmp_path / "a", "voc", num_images=6, image_size=64, seed=7, workers=1)
    synthetic.generate(tmp_path / "b", "voc", num_images=6, image_size=64, seed=7, workers=2)
    synthetic.generate(tmp_path / "c", "voc", num_images=6, image_size=64, seed=8, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert a == str(tmp_path / "a")


def test_objects_have_their_class_colour(voc_root):
    """Each class is drawn in its own hue: at the centre of most solid shapes we find the class hue
    (a later, overlapping shape may cover a centre, so not all)."""
    from ssdfast.data import build_dataset

    ds = build_dataset("voc", [voc_root], split="train")
    checked = matched = 0
    for i in range(len(ds)):
        ann = ds.get_annotation(i)
        image = np.asarray(Image.open(ann["path"]).convert("HSV"), dtype=np.float32)
        for box, label in zip(ann["boxes"].tolist(), ann["labels"].tolist()):
            name, hue = synthetic.SHAPES[label - 1]
            if name in ("ring", "cross"):
                continue  # no paint at the centre of a ring; thin arms for a cross
            x1, y1, x2, y2 = (int(v) for v in box)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            if name == "triangle":
                cy = (y1 + 2 * y2) // 3  # the centroid is low in an upward triangle
            got = np.median(image[cy - 1: cy + 2, cx - 1: cx + 2, 0]) * 360 / 255
            checked += 1
            matched += min(abs(got - hue), 360 - abs(got - hue)) < 20
    assert checked >= 8 and matched >= 0.8 * checked


def test_coco_layout_sparse_ids_crowd_and_empty(coco_root):
    train = json.loads((coco_root / "annotations/instances_train2017.json").read_text())
    val = json.loads((coco_root / "annotations/instances_val2017.json").read_text())
    assert [c["id"] for c in train["categories"]] == [1, 3, 7, 8, 12]
    assert len(train["images"]) + len(val["images"]) == 40
    for doc, folder in ((train, "train2017"), (val, "val2017")):
        for img in doc["images"]:
            assert (coco_root / folder / img["file_name"]).is_file()
    annotated = {a["image_id"] for a in train["annotations"] if not a["iscrowd"]}
    assert any(img["id"] not in annotated for img in train["images"]), "some images without annotations"
    assert any(a["iscrowd"] for a in train["annotations"]), "some crowd regions"
    assert {a["category_id"] for a in train["annotations"]} <= {1, 3, 7, 8, 12}


def test_open_images_layout(oi_root):
    for split in ("train", "validation", "test"):
        with open(oi_root / f"sub-{split}-annotations-bbox.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, split
        assert list(rows[0])[:8] == ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax"]
        assert list(rows[0])[-1] == "ClassName"
        for row in rows:
            assert (oi_root / split / f"{row['ImageID']}.jpg").is_file()
            xmin, xmax, ymin, ymax = (float(row[k]) for k in ("XMin", "XMax", "YMin", "YMax"))
            assert 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        synthetic.generate(tmp_path, "yolo", num_images=1)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.generate(tmp_path, "voc", num_images=1, num_classes=99)
