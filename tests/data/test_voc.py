"""VOCDataset: splits, class names, difficult objects, broken files, several roots."""
from __future__ import annotations

import logging

import pytest
import torch

from ssdfast.data import VOCDataset, build_dataset
from ssdfast.data.transforms import EvalTransform
from ssdfast.errors import DataError

from .conftest import copy_dataset

XML = """<annotation><filename>{id}.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ("<object><name>{name}</name><difficult>{difficult}</difficult>"
       "<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _write_xml(root, image_id, w, h, objects):
    text = XML.format(id=image_id, w=w, h=h, objects="".join(OBJ.format(**o) for o in objects))
    (root / "Annotations" / f"{image_id}.xml").write_text(text)


def _index_of(ds, image_id) -> int:
    return [ds.get_annotation(i)["image_id"] for i in range(len(ds))].index(image_id)


def _first_train_id(root) -> str:
    return (root / "ImageSets/Main/trainval.txt").read_text().split()[0]


def test_loads_generated_data(voc_root):
    train = build_dataset("voc", [str(voc_root)], split="train", transform=EvalTransform(96, (0.5,) * 3, (0.5,) * 3))
    test = build_dataset("voc", [str(voc_root)], split="test")
    assert len(train) + len(test) == 12
    assert train.class_names == ["BACKGROUND", "circle", "square", "triangle", "cross", "ring"]
    assert train.category_ids is None
    image, target = train[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["index"] == 0 and len(target["boxes"]) >= 1
    assert (target["boxes"] >= 0).all() and (target["boxes"] <= 1).all()
    assert ((target["labels"] >= 1) & (target["labels"] <= 5)).all()
    # without a transform: the decoded uint8 image and normalized boxes
    raw, raw_target = test[0]
    assert raw.dtype == torch.uint8 and raw.shape[0] == 3
    ann = test.get_annotation(0)
    h, w = raw.shape[-2:]
    assert (ann["width"], ann["height"]) == (w, h)
    torch.testing.assert_close(raw_target["boxes"] * torch.tensor([w, h, w, h]), ann["boxes"])


def test_voc_coordinates_are_continuous_pixels(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    image_id = _first_train_id(root)
    _write_xml(root, image_id, 112, 100, [dict(name="circle", difficult=0, x1=1, y1=11, x2=10, y2=30)])
    ds = VOCDataset(root, "train")
    i = _index_of(ds, image_id)
    assert ds.get_annotation(i)["boxes"].tolist() == [[0.0, 10.0, 10.0, 30.0]]


def test_difficult_dropped_for_training_kept_flagged_for_eval(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    image_id = _first_train_id(root)
    _write_xml(root, image_id, 112, 100, [
        dict(name="circle", difficult=0, x1=11, y1=11, x2=40, y2=40),
        dict(name="square", difficult=1, x1=51, y1=51, x2=90, y2=90),
    ])
    train = VOCDataset(root, "train")
    keep = VOCDataset(root, "train", keep_difficult=True)
    i = _index_of(train, image_id)
    ann = train.get_annotation(i)
    assert ann["labels"].tolist() == [1, 2] and ann["difficult"].tolist() == [False, True]
    assert train[i][1]["labels"].tolist() == [1]
    assert keep[i][1]["labels"].tolist() == [1, 2]
    assert train.stats["difficult_boxes"] == 1


def test_boxes_clipped_and_zero_area_dropped(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    image_id = _first_train_id(root)
    _write_xml(root, image_id, 112, 100, [
        dict(name="circle", difficult=0, x1=-20, y1=11, x2=40, y2=140),  # sticks out: clipped
        dict(name="square", difficult=0, x1=51, y1=51, x2=50, y2=90),  # zero width: dropped
        dict(name="ring", difficult=0, x1=200, y1=10, x2=220, y2=30),  # outside: zero area after clipping
    ])
    ds = VOCDataset(root, "train")
    ann = ds.get_annotation(_index_of(ds, image_id))
    assert ann["boxes"].tolist() == [[0.0, 10.0, 40.0, 100.0]]
    assert ds.stats["clipped_boxes"] >= 1 and ds.stats["zero_area_boxes"] == 2


def test_class_names_from_label_file_or_voc_or_discovered(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    # labels.txt without BACKGROUND, in another order
    (root / "labels.txt").write_text("ring\ncross\ntriangle\nsquare\ncircle\n")
    ds = VOCDataset(root, "train")
    assert ds.class_names == ["BACKGROUND", "ring", "cross", "triangle", "square", "circle"]
    # the same objects, under the new label numbers
    default = VOCDataset(root, "train", label_file=str(voc_root / "labels.txt"))
    names = [ds.class_names[label] for label in ds.get_annotation(0)["labels"].tolist()]
    assert names == [default.class_names[label] for label in default.get_annotation(0)["labels"].tolist()]
    assert ds.get_annotation(0)["labels"].tolist() != default.get_annotation(0)["labels"].tolist()
    # no labels.txt: the names found, sorted
    (root / "labels.txt").unlink()
    assert VOCDataset(root, "train").class_names[0] == "BACKGROUND"
    assert sorted(VOCDataset(root, "train").class_names[1:]) == VOCDataset(root, "train").class_names[1:]
    # names that all are VOC classes: the 20 VOC classes
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text()
        for shape, voc in (("circle", "dog"), ("square", "cat"), ("triangle", "car"),
                           ("cross", "bus"), ("ring", "person")):
            text = text.replace(f"<name>{shape}</name>", f"<name>{voc}</name>")
        xml.write_text(text)
    ds = VOCDataset(root, "train")
    assert len(ds.class_names) == 21 and ds.class_names[15] == "person"


def test_several_roots_concatenated_and_splits(tmp_path, voc_root):
    a = copy_dataset(voc_root, tmp_path / "a")
    b = copy_dataset(voc_root, tmp_path / "b")
    one = VOCDataset(a, "train")
    both = build_dataset("voc", [str(a), str(b)], split="train")
    assert len(both) == 2 * len(one)
    assert both.image_path(len(one)).startswith(str(b))
    # val falls back to test.txt; test falls back to val.txt when there is no test.txt
    assert len(VOCDataset(a, "val")) == len(VOCDataset(a, "test"))
    (a / "ImageSets/Main/test.txt").rename(a / "ImageSets/Main/val.txt")
    assert len(VOCDataset(a, "test")) == len(VOCDataset(b, "test"))
    (a / "ImageSets/Main/val.txt").unlink()
    with pytest.raises(DataError, match="test.txt"):
        VOCDataset(a, "test")


def test_broken_xml_skipped_or_raised(tmp_path, voc_root, caplog):
    root = copy_dataset(voc_root, tmp_path / "voc")
    image_id = _first_train_id(root)
    bad = root / "Annotations" / f"{image_id}.xml"
    bad.write_text("<annotation><object><name>circle</name>")
    n = len(VOCDataset(voc_root, "train"))
    with caplog.at_level(logging.WARNING, logger="ssdfast.data"):
        ds = VOCDataset(root, "train")
    assert len(ds) == n - 1 and ds.stats["bad_annotations"] == 1 and ds.bad_files == [str(bad)]
    assert str(bad) in caplog.text
    with pytest.raises(DataError, match=str(bad)):
        VOCDataset(root, "train", strict=True)


def test_parallel_parse_matches_sequential(tmp_path, voc_root, monkeypatch):
    import ssdfast.data.voc as voc

    root = copy_dataset(voc_root, tmp_path / "voc")
    (root / "Annotations" / f"{_first_train_id(root)}.xml").write_text("<annotation>")
    sequential = VOCDataset(root, "train")
    monkeypatch.setattr(voc, "_PARALLEL_PARSE_MIN", 1)  # large-dataset path: a process pool
    monkeypatch.setattr(voc, "_PARALLEL_PARSE_MIN_CPUS", 1)
    parallel = VOCDataset(root, "train")
    assert parallel.bad_files == sequential.bad_files and len(parallel) == len(sequential)
    for i in range(len(sequential)):
        a, b = sequential.get_annotation(i), parallel.get_annotation(i)
        assert a["path"] == b["path"] and torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
