"""Images as users' data sets hold them, through the datasets, the loader and ``validate``: grayscale,
CMYK, RGBA, 16-bit PNG, EXIF-rotated, a JPEG short by 20 bytes (used, with a note) and one cut to
5% of its bytes (skipped and named)."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch

from ssdfast.cli.data import main as data_main
from ssdfast.data import OpenImagesDataset, SkippedSample, VOCDataset, make_loader
from ssdfast.data.transforms import EvalTransform
from ssdfast.data.validate import validate_dataset
from ssdfast.errors import DataError
from tests.io.samples import odd_images, photo_like

H, W = 120, 160
BOX = (20, 30, 100, 90)  # x1, y1, x2, y2 in pixels of the displayed image (inside both orientations)


@pytest.fixture(scope="module")
def odd_voc(tmp_path_factory):
    """A VOC root whose images are the odd files, one box each, annotated as displayed."""
    root = tmp_path_factory.mktemp("odd") / "voc"
    files = odd_images(root / "JPEGImages", photo_like(H, W, seed=5))
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for kind, (path, (w, h)) in files.items():
        (root / "Annotations" / f"{kind}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size><object><name>circle</name><difficult>0</difficult><bndbox>"
            f"<xmin>{BOX[0] + 1}</xmin><ymin>{BOX[1] + 1}</ymin><xmax>{BOX[2]}</xmax><ymax>{BOX[3]}</ymax>"
            f"</bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(k + "\n" for k in files))
    (root / "labels.txt").write_text("BACKGROUND\ncircle\n")
    return root, files


def test_odd_images_load_through_the_dataset(odd_voc):
    root, files = odd_voc
    ds = VOCDataset(root, "train")
    assert ds.notes == []  # the annotations are clean
    for i in range(len(ds)):
        kind = ds.get_annotation(i)["image_id"]
        path, (w, h) = files[kind]
        sample = ds[i]
        if kind == "cut_to_5pct":
            assert isinstance(sample, SkippedSample) and sample.path == str(path) and str(path) in sample.reason
            continue
        image, target = sample
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, h, w), kind
        expected = torch.tensor([[BOX[0] / w, BOX[1] / h, BOX[2] / w, BOX[3] / h]])
        torch.testing.assert_close(target["boxes"], expected, msg=kind)
        if kind == "short_by_20":
            assert target["notes"] == [f"{path}: truncated image (its last pixels may be missing); used as decoded"]
        else:
            assert "notes" not in target, kind
        if kind in ("gray", "gray16"):
            assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_loader_carries_the_notes_to_the_main_process(odd_voc):
    root, files = odd_voc
    ds = VOCDataset(root, "train", transform=EvalTransform(64, (0.5,) * 3, (0.5,) * 3))
    batches = list(make_loader(ds, batch_size=4, shuffle=False, num_workers=2))
    notes = [n for b in batches for n in b.notes]
    assert sum(b.skipped for b in batches) == 1 and sum(b.images.shape[0] for b in batches) == len(ds) - 1
    short, cut = str(files["short_by_20"][0]), str(files["cut_to_5pct"][0])
    assert len(notes) == 2
    assert any(n.startswith(f"{short}: truncated image") for n in notes)
    assert any(n.startswith(f"skipped {cut}: truncated image") for n in notes)


def test_strict_dataset_refuses_both_truncated_images(odd_voc):
    root, files = odd_voc
    ds = VOCDataset(root, "train", strict=True)
    for kind in ("short_by_20", "cut_to_5pct"):
        with pytest.raises(DataError, match=str(files[kind][0])):
            ds[[ds.get_annotation(i)["image_id"] for i in range(len(ds))].index(kind)]


def test_validate_warns_on_the_short_jpeg_and_fails_on_the_cut_one(odd_voc, tmp_path, capsys):
    root, files = odd_voc
    report = validate_dataset(str(root), workers=2, progress=False)
    short, cut = str(files["short_by_20"][0]), str(files["cut_to_5pct"][0])
    assert [p.path for p in report.problems] == [cut] and "truncated" in report.problems[0].message
    assert [w.path for w in report.warnings] == [short]
    assert "1 problem, 1 warning" in report.summary()

    # without the cut file: exit 0 with a warning line; --strict makes it a problem
    clean = tmp_path / "voc"
    shutil.copytree(root, clean)
    (clean / "JPEGImages" / "cut.jpg").unlink()
    (clean / "Annotations" / "cut_to_5pct.xml").unlink()
    ids = (clean / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    (clean / "ImageSets" / "Main" / "trainval.txt").write_text("".join(i + "\n" for i in ids if i != "cut_to_5pct"))
    moved = str(clean / "JPEGImages" / "short.jpg")
    assert data_main(["validate", str(clean), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"warning: {moved}: truncated image (its last pixels may be missing); used as decoded" in out
    assert out[-1].endswith("OK, 1 warning")
    assert data_main(["validate", str(clean), "--no-progress", "--strict"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{moved}: truncated image") and "strict" in line for line in out)
    assert out[-1].endswith("1 problem")


def test_exif_rotated_size_in_open_images_annotations(tmp_path):
    """Open Images' CSVs carry no size: get_annotation reads it from the header, EXIF applied."""
    root = tmp_path / "oi"
    files = odd_images(root / "train", photo_like(H, W, seed=6))
    path, (w, h) = files["exif_rotated"]
    path.rename(root / "train" / "abc.jpg")
    with open(root / "sub-train-annotations-bbox.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageID", "XMin", "XMax", "YMin", "YMax", "ClassName"])
        writer.writerow(["abc", 0.25, 0.75, 0.5, 1.0, "Thing"])
    ds = OpenImagesDataset(root, "train")
    ann = ds.get_annotation(0)
    image, _ = ds[0]
    assert (ann["width"], ann["height"]) == (w, h) == (image.shape[-1], image.shape[-2]) == (H, W)
    assert ann["boxes"].tolist() == [[0.25 * w, 0.5 * h, 0.75 * w, 1.0 * h]]


def test_a_failing_transform_skips_the_sample_with_one_warning(odd_voc, caplog):
    root, files = odd_voc

    def broken(image, boxes, labels):
        raise RuntimeError("augmentation bug\nsecond line")

    dataset = VOCDataset(root, split="train", transform=broken)
    with caplog.at_level("WARNING", logger="ssdfast.data"):
        item = dataset[0]
    assert isinstance(item, SkippedSample) and "transform failed (augmentation bug second line)" in item.reason
    records = [r for r in caplog.records if "transform failed" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None  # once, with the traceback
    assert dataset.stats["unreadable_images"] == 1
    with pytest.raises(DataError, match="transform failed"):
        VOCDataset(root, split="train", transform=broken, strict=True)[0]
