"""evaluate(): a model over a generated dataset, detections in image pixels, both metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ssdfast.detector
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.evaluation import evaluate, evaluate_voc
from ssdfast.models import create_model

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


def _perfect_postprocess(dataset):
    """A stand-in for detector.postprocess that returns each image's ground truth (images come in
    dataset order: the loader does not shuffle), to check the wiring from indices to metrics."""
    state = {"next": 0}

    def postprocess(confidences, locations, priors, sizes, variances, **kwargs):
        out = []
        for h, w in sizes:
            ann = dataset.get_annotation(state["next"])
            assert (h, w) == (ann["height"], ann["width"])
            keep = ~ann["difficult"]
            boxes, labels = ann["boxes"][keep], ann["labels"][keep]
            out.append((boxes, torch.linspace(0.9, 0.5, len(labels)), labels))
            state["next"] += 1
        return out

    return postprocess


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_ground_truth_detections_score_one(kind, data_dirs, model, monkeypatch):
    dataset = build_dataset(kind, data_dirs[kind], split="test")
    monkeypatch.setattr(ssdfast.detector, "postprocess", _perfect_postprocess(dataset))
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
    assert out["images_per_s"] > 0
    for det in out["detections"]:
        ann = dataset.get_annotation(det["index"])
        assert det["image_id"] == ann["image_id"]
        assert det["boxes"].dtype == np.float32 and det["boxes"].shape[1] == 4
        assert len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) > 0
        assert (det["boxes"][:, [0, 2]] <= ann["width"]).all() and (det["boxes"][:, [1, 3]] <= ann["height"]).all()
        assert (det["boxes"] >= 0).all() and np.all(np.diff(det["scores"]) <= 0)
        assert ((det["labels"] >= 1) & (det["labels"] < 4)).all()
    # the metric is the VOC metric of those detections
    again = evaluate_voc(out["detections"], [dataset.get_annotation(d["index"]) for d in out["detections"]],
                         dataset.class_names)
    assert again["mAP"] == out["mAP"] or (math.isnan(again["mAP"]) and math.isnan(out["mAP"]))
    all_point = evaluate(model, dataset, batch_size=4, metric="voc", use_2007_metric=False, progress=False)
    assert all_point["use_2007_metric"] is False
    # the default fast path (inference copy) and the model itself give the same detections
    plain = evaluate(model, dataset, batch_size=2, metric="voc", progress=False, fast=False)
    for a, b in zip(out["detections"], plain["detections"]):
        assert a["index"] == b["index"] and len(a["scores"]) == len(b["scores"])
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    assert plain["mAP"] == pytest.approx(out["mAP"], abs=1e-3)


def test_unreadable_image_is_skipped(tmp_path, model):
    root = generate(tmp_path / "voc", format="voc", num_images=10, image_size=SIZE, seed=3, num_classes=3)
    dataset = build_dataset("voc", root, split="test")
    with open(dataset.image_path(0), "wb") as f:
        f.write(b"not a jpeg")
    out = evaluate(model, dataset, batch_size=2, metric="voc", progress=False)
    assert out["skipped_images"] == 1 and out["num_images"] == len(dataset) - 1
    assert 0 not in [d["index"] for d in out["detections"]]


def test_class_count_mismatch(data_dirs):
    dataset = build_dataset("voc", data_dirs["voc"], split="test")
    other = create_model("mb2-ssd-lite", 6, width_mult=0.25, image_size=SIZE)
    with pytest.raises(ValueError, match="predicts 6 classes"):
        evaluate(other, dataset, metric="voc", progress=False)
    with pytest.raises(ValueError, match="metric"):
        evaluate(other, dataset, metric="map", progress=False)
