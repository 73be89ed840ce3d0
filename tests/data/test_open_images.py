"""OpenImagesDataset: pytorch-ssd's layout and class balancing."""
from __future__ import annotations

import csv
import shutil
from collections import Counter

import numpy as np
import torch

from ssdfast.data import OpenImagesDataset, build_dataset
from ssdfast.data.open_images import balanced_order


def test_loads_generated_data(oi_root):
    train = build_dataset("open_images", [str(oi_root)], split="train")
    test = build_dataset("open_images", [str(oi_root)], split="test")
    assert train.class_names == test.class_names == ["BACKGROUND", "Circle", "Cross", "Ring", "Square", "Triangle"]
    image, target = train[0]
    ann = train.get_annotation(0)
    h, w = image.shape[-2:]
    assert (ann["width"], ann["height"]) == (w, h)
    # normalized in the CSV, pixels in get_annotation, normalized again in the target
    torch.testing.assert_close(target["boxes"] * torch.tensor([w, h, w, h], dtype=torch.float32), ann["boxes"])
    with open(oi_root / "sub-train-annotations-bbox.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["ImageID"] == ann["image_id"]]
    assert [train.class_names[label] for label in ann["labels"].tolist()] == [r["ClassName"] for r in rows]
    assert len(build_dataset("open_images", [str(oi_root)], split="val")) >= 1


def test_balanced_order_tops_up_rare_classes():
    # class 1 in 8 images, class 2 in 2, class 3 in 1
    labels = [np.array([1])] * 6 + [np.array([1, 2]), np.array([1, 2]), np.array([3])]
    order = balanced_order(labels, 4, seed=0)
    per_class = Counter()
    for i in order:
        for c in set(labels[i].tolist()):
            per_class[c] += 1
    assert set(range(len(labels))) <= set(order.tolist())  # nothing thrown away
    assert per_class[2] >= 8 and per_class[3] == 8 and per_class[1] >= 8
    assert np.array_equal(order, balanced_order(labels, 4, seed=0))


def test_balance_flag(tmp_path, oi_root):
    root = tmp_path / "oi"
    shutil.copytree(oi_root, root)
    path = root / "sub-train-annotations-bbox.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # make "Ring" rare: keep it in one image only
    ring_images = sorted({r["ImageID"] for r in rows if r["ClassName"] == "Ring"})
    rows = [r for r in rows if r["ClassName"] != "Ring" or r["ImageID"] == ring_images[0]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plain = OpenImagesDataset(root, "train")
    balanced = build_dataset("open_images", [str(root)], split="train", balance=True)

    def images_with(ds, name):
        label = ds.class_names.index(name)
        return sum(label in ds.get_annotation(i)["labels"].tolist() for i in range(len(ds)))

    assert images_with(plain, "Ring") == 1
    assert len(balanced) > len(plain)
    common = max(images_with(plain, n) for n in plain.class_names[1:])
    assert images_with(balanced, "Ring") == common
    assert balanced[len(balanced) - 1] is not None
