"""COCODataset: sparse category ids, crowd boxes, images without annotations, both layouts."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from ssdfast.data import COCODataset, build_dataset
from ssdfast.errors import DataError

from .conftest import copy_dataset


def _doc(root, split="train"):
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


def test_sparse_category_ids_map_to_contiguous_labels(coco_root):
    ds = build_dataset("coco", [str(coco_root)], split="train")
    assert ds.category_ids == [0, 1, 3, 7, 8, 12]
    assert ds.class_names == ["BACKGROUND", "circle", "square", "triangle", "cross", "ring"]
    doc = _doc(coco_root)
    by_image: dict[int, list[int]] = {}
    for a in doc["annotations"]:
        if not a["iscrowd"]:
            by_image.setdefault(a["image_id"], []).append(a["category_id"])
    for i in range(len(ds)):
        ann = ds.get_annotation(i)
        labels = ann["labels"].tolist()
        assert [ds.category_ids[label] for label in labels] == by_image[ann["image_id"]]
        assert all(1 <= label <= 5 for label in labels)


def test_label_file_selects_and_orders_categories(tmp_path, coco_root):
    labels = tmp_path / "labels.txt"
    labels.write_text("BACKGROUND\nring\ncircle\n")
    ds = COCODataset(coco_root, "train", label_file=str(labels))
    assert ds.class_names == ["BACKGROUND", "ring", "circle"] and ds.category_ids == [0, 12, 1]
    labels.write_text("hexagon\n")
    with pytest.raises(DataError, match="hexagon"):
        COCODataset(coco_root, "train", label_file=str(labels))


def test_crowd_and_empty_images_in_training_and_evaluation(coco_root):
    doc = _doc(coco_root)
    crowd = sum(a["iscrowd"] for a in doc["annotations"])
    with_boxes = {a["image_id"] for a in doc["annotations"] if not a["iscrowd"]}
    train = COCODataset(coco_root, "train")
    assert crowd > 0 and len(with_boxes) < len(doc["images"])
    assert len(train) == len(with_boxes)
    assert train.stats["skipped_images"] == len(doc["images"]) - len(with_boxes)
    assert not any(train.get_annotation(i)["difficult"].any() for i in range(len(train)))
    for i in range(len(train)):
        assert len(train[i][1]["boxes"]) > 0

    # evaluation keeps every image and flags crowd boxes
    val_doc = _doc(coco_root, "val")
    val = COCODataset(coco_root, "val")
    assert len(val) == len(val_doc["images"])
    flagged = sum(int(val.get_annotation(i)["difficult"].sum()) for i in range(len(val)))
    assert flagged == sum(a["iscrowd"] for a in val_doc["annotations"])
    assert (val.coco is not None
            and sorted(val.coco.getImgIds()) == sorted(val.get_annotation(i)["image_id"] for i in range(len(val))))
    # crowd boxes are not training targets even in the eval split (unless keep_difficult)
    for i in range(len(val)):
        ann = val.get_annotation(i)
        assert len(val[i][1]["labels"]) == int((~ann["difficult"]).sum())


def test_images_split_layout(tmp_path, coco_root):
    root = tmp_path / "seed002"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for split in ("train", "val"):
        shutil.copytree(coco_root / f"{split}2017", root / "images" / split)
        shutil.copy(coco_root / "annotations" / f"instances_{split}2017.json",
                    root / "annotations" / f"instances_{split}.json")
    ds = build_dataset("coco", [str(root)], split="val")
    assert len(ds) == len(COCODataset(coco_root, "val"))
    image, target = ds[0]
    assert image.dtype == torch.uint8 and ds.image_path(0).startswith(str(root / "images" / "val"))


def test_broken_json_names_the_file(tmp_path, coco_root):
    root = copy_dataset(coco_root, tmp_path / "coco")
    path = root / "annotations" / "instances_train2017.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=str(path)):
        COCODataset(root, "train")


def test_malformed_bbox_skips_the_image_or_raises(tmp_path, coco_root):
    root = copy_dataset(coco_root, tmp_path / "coco")
    path = root / "annotations" / "instances_train2017.json"
    doc = json.loads(path.read_text())
    victim = doc["annotations"][0]
    victim["bbox"] = [1, 2, "x"]
    path.write_text(json.dumps(doc))
    ds = COCODataset(root, "train")
    assert ds.stats["bad_annotations"] == 1 and ds.bad_files == [str(path)]
    assert victim["image_id"] not in [ds.get_annotation(i)["image_id"] for i in range(len(ds))]
    with pytest.raises(DataError, match=f"{path}.*image {victim['image_id']}"):
        COCODataset(root, "train", strict=True)


def test_official_layout_given_by_image_folder(tmp_path, coco_root):
    """``--datasets data/coco/train2017 --validation-dataset data/coco/val2017``: the annotations
    are found in ``data/coco/annotations/instances_<folder>.json`` (the official download)."""
    from ssdfast.data import detect_layout

    for split, folder in (("train", "train2017"), ("val", "val2017")):
        by_folder = build_dataset("coco", [str(coco_root / folder)], split=split)
        by_root = build_dataset("coco", [str(coco_root)], split=split)
        assert by_folder.annotation_files == [str(coco_root / "annotations" / f"instances_{folder}.json")]
        assert len(by_folder) == len(by_root) > 0
        assert ([by_folder.image_path(i) for i in range(len(by_folder))]
                == [by_root.image_path(i) for i in range(len(by_root))])
        assert by_folder.category_ids == by_root.category_ids and by_folder.notes == []
        assert detect_layout(str(coco_root / folder)) == "coco"
    # the folder decides, not the split; the synthetic type finds the layout too
    ds = build_dataset("synthetic", [str(coco_root / "val2017")], split="train")
    assert ds.annotation_files[0].endswith("instances_val2017.json")
    # images/<name>/ with annotations/ one level higher
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    shutil.copytree(coco_root / "annotations", root / "annotations")
    shutil.copytree(coco_root / "val2017", root / "images" / "val2017")
    assert (len(build_dataset("coco", [str(root / "images" / "val2017")], split="val"))
            == len(COCODataset(coco_root, "val")))
    with pytest.raises(DataError, match=r"nothing: no COCO annotation file .*instances_nothing.json"):
        build_dataset("coco", [str(root / "images" / "nothing")], split="val")
