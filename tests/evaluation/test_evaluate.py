"""evaluate(): a model over a generated dataset through the Detector, detections in image pixels, both
metrics; unreadable, truncated and EXIF-rotated test images; quiet logs."""
from __future__ import annotations

import logging
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import ssdfast.detector.detector
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.detector import Detections, Detector
from ssdfast.errors import DataError
from ssdfast.evaluation import evaluate, evaluate_voc, run_inference, to_devkit_boxes
from ssdfast.io import load_image
from ssdfast.models import create_model
from ssdfast.ops import EVALUATION, PostprocessSettings

from .devkit import voc_eval_reference

SIZE = 128


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    voc = generate(root / "voc", format="voc", num_images=10, image_size=SIZE, seed=1, num_classes=3)
    coco = generate(root / "coco", format="coco", num_images=10, image_size=SIZE, seed=2, num_classes=3)
    return {"voc": voc, "coco": coco}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=SIZE)


@pytest.fixture
def voc_copy(data_dirs, tmp_path):
    """A copy of the VOC set whose images a test may damage."""
    return shutil.copytree(data_dirs["voc"], tmp_path / "voc")


def _perfect_postprocess(dataset, indices=None, extra=None):
    """A stand-in for detector.postprocess that returns each image's ground truth (images come in
    dataset order: the loader does not shuffle), to check the wiring from indices to metrics.
    ``indices``: the dataset images that reach the network (default: all); ``extra(index)``: more
    ``(boxes, labels)`` to add as lower-scoring detections (e.g. false positives)."""
    order = list(range(len(dataset))) if indices is None else list(indices)
    state = {"next": 0}

    def postprocess(confidences, locations, priors, sizes, variances, settings, **kwargs):
        out = []
        for h, w in sizes:
            index = order[state["next"]]
            ann = dataset.get_annotation(index)
            assert (h, w) == (ann["height"], ann["width"])
            keep = ~ann["difficult"]
            boxes, labels = ann["boxes"][keep], ann["labels"][keep]
            scores = torch.linspace(0.9, 0.5, len(labels))
            if extra is not None:
                more_boxes, more_labels = extra(index)
                boxes, labels = torch.cat([boxes, more_boxes]), torch.cat([labels, more_labels])
                scores = torch.cat([scores, torch.linspace(0.45, 0.1, len(more_labels))])
            out.append(Detections(boxes, scores, labels))
            state["next"] += 1
        return out

    return postprocess


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_ground_truth_detections_score_one(kind, data_dirs, model, monkeypatch):
    dataset = build_dataset(kind, data_dirs[kind], split="test")
    monkeypatch.setattr(ssdfast.detector.detector, "postprocess", _perfect_postprocess(dataset))
    out = evaluate(model, dataset, batch_size=2, metric=kind, progress=False)
    assert out["mAP"] == pytest.approx(1.0)
    if kind == "coco":
        assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
        # results carry the dataset's COCO image ids and the original (sparse) category ids
        ids = {dataset.get_annotation(i)["image_id"] for i in range(len(dataset))}
        assert {r["image_id"] for r in out["coco_results"]} <= ids
        assert {r["category_id"] for r in out["coco_results"]} <= set(dataset.category_ids[1:])


def test_voc_on_a_real_model(data_dirs, model, capsys):
    dataset = build_dataset("voc", data_dirs["voc"], split="test")
    model.train()
    out = evaluate(model, dataset, batch_size=2, metric="voc", progress=False)
    assert model.training  # given back in the mode it came in
    assert capsys.readouterr().err == ""  # quiet without progress
    assert out["metric"] == "voc" and 0.0 <= out["mAP"] <= 1.0
    assert set(out["per_class_AP"]) == set(dataset.class_names[1:])
    assert out["num_images"] == len(dataset) and out["skipped_images"] == 0
    assert out["unreadable_images"] == [] and out["notes"] == []
    assert out["images_per_s"] > 0
    assert len(out["detections"]) == len(out["image_ids"]) == len(dataset)
    for index, (det, image_id) in enumerate(zip(out["detections"], out["image_ids"])):
        ann = dataset.get_annotation(index)
        assert isinstance(det, Detections)  # the Detector's type, one per image in dataset order
        assert image_id == ann["image_id"]
        assert det.boxes.dtype == torch.float32 and det.boxes.shape[1] == 4
        assert len(det.boxes) == len(det.scores) == len(det.labels) == len(det.label_names) > 0
        assert (det.boxes[:, [0, 2]] <= ann["width"]).all() and (det.boxes[:, [1, 3]] <= ann["height"]).all()
        assert (det.boxes >= 0).all() and (torch.diff(det.scores) <= 0).all()
        assert ((det.labels >= 1) & (det.labels < 4)).all()
        assert det.label_names == [dataset.class_names[i] for i in det.labels.tolist()]
    # the metric is the VOC metric of those detections
    again = evaluate_voc(out["detections"], [dataset.get_annotation(i) for i in range(len(dataset))],
                         dataset.class_names)
    assert again["mAP"] == out["mAP"] or (math.isnan(again["mAP"]) and math.isnan(out["mAP"]))
    all_point = evaluate(model, dataset, batch_size=4, metric="voc", use_2007_metric=False, progress=False)
    assert all_point["use_2007_metric"] is False
    # the default fused path (inference copy) and the model itself give the same detections
    plain = evaluate(model, dataset, batch_size=2, metric="voc", progress=False, fused=False)
    for a, b in zip(out["detections"], plain["detections"]):
        assert len(a.scores) == len(b.scores)
        np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-4, atol=1e-5)
    assert plain["mAP"] == pytest.approx(out["mAP"], abs=1e-3)
    # evaluate runs a Detector: its detections are the Detector's on the images as ssdfast.io reads them
    detector = Detector(model, dataset.class_names, settings=EVALUATION)
    for index in range(len(dataset)):
        want, = detector(load_image(dataset.image_path(index)).pixels)
        torch.testing.assert_close(out["detections"][index].boxes, want.boxes)
        torch.testing.assert_close(out["detections"][index].scores, want.scores)


def test_settings_and_match_iou_are_two_concepts(data_dirs, model):
    """``settings`` (the Detector's post-processing) reaches every image; ``match_iou`` only the VOC
    matching, reported under its own name; a bad match_iou is refused before the run."""
    dataset = build_dataset("voc", data_dirs["voc"], split="test")
    one = PostprocessSettings(score_threshold=0.0, top_k=1, max_detections=1)
    out = evaluate(model, dataset, batch_size=5, metric="voc", progress=False, settings=one, match_iou=0.4)
    assert out["match_iou"] == 0.4 and "iou_threshold" not in out
    assert [len(d) for d in out["detections"]] == [1] * len(dataset)
    detector = Detector(model, dataset.class_names, settings=one)
    for index in range(len(dataset)):
        want, = detector(load_image(dataset.image_path(index)).pixels)
        torch.testing.assert_close(out["detections"][index].scores, want.scores)
    run = run_inference(model, dataset, batch_size=5, progress=False, settings=replace(one, score_threshold=1.0))
    assert [len(d) for d in run["detections"]] == [0] * len(dataset)  # no probability is above 1
    with pytest.raises(ValueError, match=r"match_iou should be in \[0, 1\], got 1.5"):
        evaluate(model, dataset, progress=False, match_iou=1.5)


def test_unreadable_image_counts_as_missed(voc_copy, model, monkeypatch, caplog):
    """The devkit scores every image of the test list: an image we cannot read keeps its ground
    truth in the recall denominator, its boxes all missed (the expected mAP is the devkit port's on
    the same detections)."""
    dataset = build_dataset("voc", voc_copy, split="test")
    bad = next(i for i in range(len(dataset)) if (~dataset.get_annotation(i)["difficult"]).any())
    path = dataset.image_path(bad)
    with open(path, "wb") as f:
        f.write(b"not a jpeg")
    readable = [i for i in range(len(dataset)) if i != bad]

    def false_positive(index):  # one box of class 1 where nothing is, to make the AP non-trivial
        return torch.tensor([[1.0, 1.0, 9.0, 9.0]]), torch.tensor([1])

    monkeypatch.setattr(ssdfast.detector.detector, "postprocess",
                        _perfect_postprocess(dataset, readable, false_positive))
    with caplog.at_level(logging.WARNING, logger="ssdfast.evaluation"):
        out = evaluate(model, dataset, batch_size=3, metric="voc", progress=False)
    assert out["skipped_images"] == 1 and out["num_images"] == len(dataset) - 1
    assert out["unreadable_images"] == [path] and len(out["detections"][bad]) == 0
    assert len(out["notes"]) == 1 and path in out["notes"][0] and "missed" in out["notes"][0]
    assert path in caplog.text

    # the devkit on the same detections, the unreadable image having none
    dets, anns = [], []
    for i in range(len(dataset)):
        ann = dataset.get_annotation(i)
        anns.append({"boxes": to_devkit_boxes(ann["boxes"].numpy()), "labels": ann["labels"].numpy(),
                     "difficult": ann["difficult"].numpy()})
        det = out["detections"][i]
        dets.append({"boxes": to_devkit_boxes(det.boxes.numpy()), "scores": det.scores.numpy(),
                     "labels": det.labels.numpy()})
    assert len(dets[bad]["scores"]) == 0 and sum(len(d["scores"]) for d in dets) > 0
    def devkit_map(images):
        aps = [voc_eval_reference([dets[i] for i in images], [anns[i] for i in images], c, 0.5, True)
               for c in range(1, len(dataset.class_names))]
        return float(np.mean([ap for ap in aps if not math.isnan(ap)]))

    expected = devkit_map(range(len(dataset)))
    assert out["mAP"] == pytest.approx(expected, abs=1e-9)
    assert abs(expected - devkit_map(readable)) > 1e-3  # leaving the image out would score higher

    with pytest.raises(DataError, match="not an image"):
        evaluate(model, dataset, batch_size=3, metric="voc", progress=False, strict=True)


def test_coco_unreadable_image_counts_as_missed(data_dirs, tmp_path, model, monkeypatch):
    root = shutil.copytree(data_dirs["coco"], tmp_path / "coco")
    dataset = build_dataset("coco", root, split="test")
    bad = next(i for i in range(len(dataset)) if len(dataset.get_annotation(i)["labels"]))
    with open(dataset.image_path(bad), "wb") as f:
        f.write(b"")
    readable = [i for i in range(len(dataset)) if i != bad]
    monkeypatch.setattr(ssdfast.detector.detector, "postprocess", _perfect_postprocess(dataset, readable))
    out = evaluate(model, dataset, batch_size=4, metric="coco", progress=False)
    assert out["unreadable_images"] == [dataset.image_path(bad)]
    assert out["AR100"] < 1.0 and out["mAP"] < 1.0  # its objects are in the ground truth, missed


def _rotated_copy(path: str) -> np.ndarray:
    """Rewrite the JPEG at ``path`` stored sideways with EXIF orientation 6 (shown rotated back
    upright): the same picture to a reader that applies EXIF, a different one to one that does not.
    Returns the stored (sideways) pixels."""
    upright = np.asarray(Image.open(path).convert("RGB"))
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # rotated 90 degrees counter-clockwise
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # to display: rotate 90 degrees clockwise
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return stored


def test_exif_rotated_image_is_evaluated_as_the_detector_sees_it(voc_copy, model):
    dataset = build_dataset("voc", voc_copy, split="test")
    index = next(i for i in range(len(dataset))
                 if dataset.get_annotation(i)["width"] != dataset.get_annotation(i)["height"])
    path = dataset.image_path(index)
    stored = _rotated_copy(path)
    ann = dataset.get_annotation(index)
    assert stored.shape[:2] == (ann["width"], ann["height"])  # sideways in the file
    out = evaluate(model, dataset, batch_size=4, metric="voc", progress=False)
    got = out["detections"][index]
    detector = Detector(model, dataset.class_names, settings=EVALUATION)
    shown, = detector(load_image(path).pixels)  # what ssdfast-detect reports for this file
    torch.testing.assert_close(got.boxes, shown.boxes)
    torch.testing.assert_close(got.scores, shown.scores)
    assert (got.boxes[:, [0, 2]] <= ann["width"]).all() and (got.boxes[:, [1, 3]] <= ann["height"]).all()
    sideways, = detector(torch.from_numpy(stored).permute(2, 0, 1))  # what a reader ignoring EXIF gives
    assert sideways.boxes.shape != got.boxes.shape or not torch.allclose(sideways.boxes, got.boxes)


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_is_used_with_a_warning_or_refused_when_strict(voc_copy, model, caplog, workers):
    """A JPEG short of its last bytes decodes (as OpenCV and PIL read it): used, with one warning
    naming it, also when a loader worker read it; ``strict`` refuses it."""
    dataset = build_dataset("voc", voc_copy, split="test")
    path = dataset.image_path(1)
    whole = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(whole[:-20])
    with caplog.at_level(logging.WARNING, logger="ssdfast.evaluation"):
        out = evaluate(model, dataset, batch_size=4, metric="voc", progress=False, num_workers=workers)
    assert out["num_images"] == len(dataset) and out["unreadable_images"] == []
    assert len(out["detections"][1]) > 0
    assert len(out["notes"]) == 1 and path in out["notes"][0] and "truncated" in out["notes"][0]
    assert caplog.text.count(path) == 1  # logged once, in the main process
    with pytest.raises(DataError, match="truncated.*strict"):
        evaluate(model, dataset, batch_size=4, metric="voc", progress=False, num_workers=workers, strict=True)


def test_progress_bar_only_on_a_terminal(data_dirs, model, capsys):
    dataset = build_dataset("voc", data_dirs["voc"], split="test")
    evaluate(model, dataset, batch_size=5, metric="voc", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "evaluating" not in err  # stderr is not a terminal here: no bar


def test_class_count_mismatch(data_dirs):
    dataset = build_dataset("voc", data_dirs["voc"], split="test")
    other = create_model("mb2-ssd-lite", 6, width_mult=0.25, image_size=SIZE)
    with pytest.raises(ValueError,
                       match=r"predicts 5 classes \+ background but the dataset has 3 classes \+ background"):
        evaluate(other, dataset, metric="voc", progress=False)
    with pytest.raises(ValueError, match="metric"):
        evaluate(other, dataset, metric="map", progress=False)
