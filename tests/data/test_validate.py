"""validate_dataset: planted problems are found by path; clean data passes."""
from __future__ import annotations

import json

import pytest

from ssdfast.data.validate import check_image, validate_dataset
from ssdfast.errors import DataError

from .conftest import copy_dataset, truncate_file


def test_clean_datasets_pass(voc_root, coco_root, oi_root):
    for root, kind in ((voc_root, "voc"), (coco_root, "coco"), (oi_root, "open_images")):
        report = validate_dataset(str(root), workers=1, progress=False)
        assert report.ok, report.problems
        assert report.dataset_type == kind and report.images > 0 and report.boxes > 0


def test_voc_problems_found_by_path(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    jpeg = sorted((root / "JPEGImages").glob("*.jpg"))[1]
    truncate_file(jpeg)
    broken = sorted((root / "Annotations").glob("*.xml"))[2]
    broken.write_text("<annotation><size><width>10</width>")
    odd = sorted((root / "Annotations").glob("*.xml"))[3]
    text = odd.read_text()
    text = text.replace("<name>", "<name>hexagon-", 1)  # unknown class (labels.txt is present)
    text = text.replace("</object>", "</object><object><name>circle</name><difficult>0</difficult>"
                        "<bndbox><xmin>6</xmin><ymin>5</ymin><xmax>5</xmax><ymax>500</ymax></bndbox></object>", 1)
    odd.write_text(text)
    report = validate_dataset(str(root), workers=2, progress=False)
    by_path = {}
    for p in report.problems:
        by_path.setdefault(p.path, []).append(p.message)
    assert set(by_path) == {str(jpeg), str(broken), str(odd)}
    assert "truncated" in by_path[str(jpeg)][0]
    assert "unparsable XML" in by_path[str(broken)][0]
    joined = " | ".join(by_path[str(odd)])
    assert "unknown class 'hexagon-" in joined and "zero-area" in joined and "outside" in joined


def test_coco_problems(tmp_path, coco_root):
    root = copy_dataset(coco_root, tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["category_id"] = 2  # not a category (ids are 1, 3, 7, ...)
    doc["annotations"][1]["bbox"] = [10, 10, 0, 5]
    doc["annotations"][2]["bbox"] = [-30, 10, 20, 5]
    path.write_text(json.dumps(doc))
    image = root / "val2017" / doc["images"][0]["file_name"]
    image.write_bytes(b"not an image")
    report = validate_dataset(str(root), workers=1, progress=False)
    messages = [str(p) for p in report.problems]
    assert any(m.startswith(str(path)) and "unknown category_id 2" in m for m in messages)
    assert any("zero-area" in m for m in messages) and any("outside" in m for m in messages)
    assert any(m.startswith(str(image)) and "unreadable" in m for m in messages)
    (root / "annotations" / "instances_train2017.json").write_text("{")
    report = validate_dataset(str(root), workers=1, progress=False)
    assert any("unparsable" in str(p) and "instances_train2017.json" in p.path for p in report.problems)


def test_check_image_and_bad_roots(tmp_path, voc_root):
    jpeg = sorted((voc_root / "JPEGImages").glob("*.jpg"))[0]
    assert check_image(str(jpeg)) == []
    assert "says 1x1" in check_image(str(jpeg), (1, 1))[0]
    assert check_image(str(tmp_path / "missing.jpg")) == ["image file is missing"]
    with pytest.raises(DataError, match="not a VOC"):
        validate_dataset(str(tmp_path), progress=False)
