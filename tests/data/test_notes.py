"""dataset.notes: one line per kind of problem found while parsing, with its count and first files."""
from __future__ import annotations

import csv
import json

import pytest

from ssdfast.data import COCODataset, OpenImagesDataset, VOCDataset, build_dataset

from .conftest import copy_dataset

OBJ = ("<object><name>{name}</name><difficult>0</difficult>"
       "<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def test_clean_datasets_have_no_notes(voc_root, coco_root, oi_root):
    for kind, root in (("voc", voc_root), ("coco", coco_root), ("open_images", oi_root)):
        for split in ("train", "test"):
            ds = build_dataset(kind, [str(root)], split=split)
            assert ds.notes == [], (kind, split, ds.notes)


def test_voc_notes_count_and_name_the_files(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    ids = (root / "ImageSets/Main/trainval.txt").read_text().split()
    xmls = [root / "Annotations" / f"{i}.xml" for i in ids]
    for k, xml in enumerate(xmls[:5]):  # 5 files with a box sticking out
        text = xml.read_text().replace("</annotation>", OBJ.format(name="circle", x1=5, y1=5, x2=500, y2=20)
                                       + "</annotation>")
        if k < 2:  # 2 of them also with a zero-area box and 2 boxes of unknown classes
            text = text.replace("</annotation>", OBJ.format(name="circle", x1=30, y1=5, x2=29, y2=20)
                                + OBJ.format(name="hexagon", x1=1, y1=1, x2=9, y2=9)
                                + OBJ.format(name="star", x1=1, y1=1, x2=9, y2=9) + "</annotation>")
        xml.write_text(text)
    xmls[6].write_text("<annotation><object>")
    ds = VOCDataset(root, "train")
    notes = ds.notes
    assert len(notes) == 4, notes
    bad, unknown, clipped, zero = notes
    assert bad.startswith(f"1 unreadable annotation entries skipped, in 1 file: {xmls[6]} (unparsable XML")
    assert unknown == (f"4 boxes of classes not in the class list ignored, in 2 files: {xmls[0]}, {xmls[1]} "
                       "('hexagon'; 'star')")
    assert clipped == (f"5 boxes sticking out of their image clipped to it, in 5 files: {xmls[0]}, {xmls[1]}, "
                       f"{xmls[2]} ...")
    assert zero == f"2 boxes of zero area (after clipping) dropped, in 2 files: {xmls[0]}, {xmls[1]}"
    assert ds.stats["clipped_boxes"] == 5 and ds.stats["zero_area_boxes"] == 2 and ds.stats["unknown_class_boxes"] == 4


def test_coco_and_open_images_notes(tmp_path, coco_root, oi_root):
    root = copy_dataset(coco_root, tmp_path / "coco")
    path = root / "annotations" / "instances_train2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["category_id"] = 99
    doc["annotations"][1]["bbox"] = [1, 2, "x"]
    path.write_text(json.dumps(doc))
    ds = COCODataset(root, "train")
    assert len(ds.notes) == 2
    assert ds.notes[0].startswith(f"1 unreadable annotation entries skipped, in 1 file: {path} (image ")
    assert ds.notes[1].startswith("1 boxes of classes not in the class list ignored, in 1 file: ")
    assert ds.notes[1].endswith("(category_id 99)")

    root = copy_dataset(oi_root, tmp_path / "oi")
    csv_path = root / "sub-train-annotations-bbox.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    circle = next(r for r in rows if r["ClassName"] == "Circle")
    circle["XMax"] = "1.5"  # sticks out of the image
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    labels = tmp_path / "labels.txt"
    labels.write_text("Circle\nSquare\n")  # the other classes become unknown
    ds = OpenImagesDataset(root, "train", label_file=str(labels))
    kinds = [n.split(" ", 1)[1].split(",")[0] for n in ds.notes]
    assert kinds[0] == "boxes of classes not in the class list ignored" and "'Cross'" in ds.notes[0]
    assert f"in 1 file: {csv_path}" in ds.notes[0]
    assert ds.notes[1] == (f"1 boxes sticking out of their image clipped to it, in 1 file: "
                           f"{root / 'train' / circle['ImageID']}.jpg")


def test_strict_still_raises(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    ids = (root / "ImageSets/Main/trainval.txt").read_text().split()
    (root / "Annotations" / f"{ids[0]}.xml").write_text("<annotation>")
    from ssdfast.errors import DataError

    with pytest.raises(DataError):
        VOCDataset(root, "train", strict=True)
