"""COCO evaluation: ssdfast's numbers equal pycocotools called directly on the same detections."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdfast.evaluation.coco import COCO_STAT_NAMES, coco_gt_from_annotations, evaluate_coco, to_coco_results

# label -> original category id (label 0 is the background), non-contiguous as in COCO
CATEGORY_IDS = [0, 1, 3, 7, 90]
CLASS_NAMES = ["BACKGROUND", "person", "car", "dog", "toothbrush"]


def _random_gt_and_dets(seed: int, num_images: int = 30):
    rng = np.random.default_rng(seed)
    images, gt_anns, annotations, detections = [], [], [], []
    for i in range(num_images):
        image_id = 1000 + 7 * i  # ids unrelated to positions
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        g = int(rng.integers(0, 8))
        xy = rng.uniform(0, [w * 0.8, h * 0.8], (g, 2))
        wh = rng.uniform(4, 200, (g, 2))  # small, medium and large objects
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        labels = rng.integers(1, len(CATEGORY_IDS), g)
        crowd = rng.random(g) < 0.1
        for b, lab, c in zip(boxes, labels, crowd):
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[lab],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1]),
                            "iscrowd": int(c)})
        annotations.append({"image_id": image_id, "width": w, "height": h, "boxes": boxes.astype(np.float32),
                            "labels": labels, "difficult": np.zeros(g, bool), "iscrowd": crowd})
        k = int(rng.integers(0, 3 * g + 4))
        src = rng.integers(0, max(g, 1), k)
        base = boxes[src] if g else rng.uniform(0, 100, (k, 4))
        dboxes = base + rng.normal(0, 8, (k, 4))
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 1)
        dlabels = np.where(rng.random(k) < 0.8, labels[src] if g else 1, rng.integers(1, len(CATEGORY_IDS), k))
        detections.append({"boxes": dboxes.astype(np.float32), "scores": rng.random(k).astype(np.float32),
                           "labels": dlabels})
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS[1:], CLASS_NAMES[1:])]
    gt = {"images": images, "annotations": gt_anns, "categories": categories}
    return gt, annotations, detections


def _pycocotools_directly(gt: dict, detections: list, image_ids: list) -> np.ndarray:
    """The COCO results written out by hand (not with ssdfast) and COCOeval run as its docs show."""
    results = []
    for det, image_id in zip(detections, image_ids):
        for (x1, y1, x2, y2), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": CATEGORY_IDS[lab], "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocotools_on_random_detections(seed, tmp_path):
    gt, _, detections = _random_gt_and_dets(seed)
    image_ids = [img["id"] for img in gt["images"]]
    expected = _pycocotools_directly(gt, detections, image_ids)
    assert expected[0] > 0.05  # the case is not degenerate

    out = evaluate_coco(detections, gt, CATEGORY_IDS, image_ids=image_ids, backend="pycocotools")
    got = np.array([out[name] for name in COCO_STAT_NAMES])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert out["backend"] == "pycocotools"
    assert out["num_detections"] == sum(len(d["labels"]) for d in detections)
    # every category has ground truth: AP is the mean of the per-class APs
    assert set(out["per_class_AP"]) == set(CLASS_NAMES[1:])
    assert np.mean(list(out["per_class_AP"].values())) == pytest.approx(out["AP"], abs=1e-9)

    # same numbers from a json file, a COCO object and detections carrying their image id
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    from_file = evaluate_coco(detections, str(path), CATEGORY_IDS, image_ids=image_ids, backend="pycocotools")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    tagged = [dict(d, image_id=i) for d, i in zip(detections, image_ids)]
    from_object = evaluate_coco(tagged, coco, CATEGORY_IDS, backend="pycocotools")
    for other in (from_file, from_object):
        np.testing.assert_allclose([other[n] for n in COCO_STAT_NAMES], expected, atol=1e-6, rtol=0)


class _FakeDataset:
    """What evaluate_coco reads from an ssdfast dataset: get_annotation, class_names, category_ids."""

    def __init__(self, annotations, coco=None):
        self._annotations = annotations
        self.class_names = CLASS_NAMES
        self.category_ids = CATEGORY_IDS
        if coco is not None:
            self.coco = coco

    def __len__(self):
        return len(self._annotations)

    def get_annotation(self, i):
        return self._annotations[i]


def test_dataset_ground_truth_equals_pycocotools():
    gt, annotations, detections = _random_gt_and_dets(3)
    image_ids = [img["id"] for img in gt["images"]]
    expected = _pycocotools_directly(gt, detections, image_ids)
    # built from get_annotation() (boxes, labels, iscrowd): same ground truth, same numbers
    out = evaluate_coco(detections, _FakeDataset(annotations), CATEGORY_IDS, backend="pycocotools")
    np.testing.assert_allclose([out[n] for n in COCO_STAT_NAMES], expected, atol=1e-6, rtol=0)
    # a dataset holding its COCO object: that one is used, with the annotations' image ids
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
    out = evaluate_coco(detections, _FakeDataset(annotations, coco), CATEGORY_IDS, backend="pycocotools")
    np.testing.assert_allclose([out[n] for n in COCO_STAT_NAMES], expected, atol=1e-6, rtol=0)
    assert {r["image_id"] for r in out["results"]} <= set(image_ids)


def test_perfect_and_empty_detections():
    gt, annotations, _ = _random_gt_and_dets(4, num_images=6)
    perfect = [{"boxes": a["boxes"], "scores": np.ones(len(a["labels"])), "labels": a["labels"]} for a in annotations]
    out = evaluate_coco(perfect, _FakeDataset(annotations), CATEGORY_IDS, backend="pycocotools")
    assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)} for _ in annotations]
    out = evaluate_coco(empty, _FakeDataset(annotations), CATEGORY_IDS, backend="pycocotools")
    assert out["AP"] == 0.0 and out["AR100"] == 0.0 and out["num_detections"] == 0


def test_results_format_maps_back_to_category_ids():
    det = {"boxes": np.array([[10.0, 20.0, 40.0, 60.0]]), "scores": np.array([0.75]), "labels": np.array([4])}
    assert to_coco_results([det], [42], CATEGORY_IDS) == [
        {"image_id": 42, "category_id": 90, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.75}
    ]
    assert to_coco_results([det], [42], None)[0]["category_id"] == 4
    with pytest.raises(ValueError, match="category id"):
        to_coco_results([det], [42], [0, 1])
    json.dumps(to_coco_results([det], [np.int64(42)], CATEGORY_IDS))  # plain types


def test_difficult_boxes_become_crowd_regions():
    gt = coco_gt_from_annotations(
        [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), "labels": np.array([1, 2]),
          "difficult": np.array([False, True]), "width": 50, "height": 50}],
        CATEGORY_IDS, CLASS_NAMES,
    )
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1]
    assert [a["category_id"] for a in gt["annotations"]] == [1, 3]
    assert gt["annotations"][1]["bbox"] == [20.0, 20.0, 20.0, 20.0]
    assert [c["name"] for c in gt["categories"]] == CLASS_NAMES[1:]


def test_errors():
    gt, _, detections = _random_gt_and_dets(5, num_images=2)
    with pytest.raises(ValueError, match="image_ids"):
        evaluate_coco(detections, gt, CATEGORY_IDS)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(detections, gt, CATEGORY_IDS, image_ids=[1, 2])
    with pytest.raises(TypeError, match="ground truth"):
        evaluate_coco(detections, 3, CATEGORY_IDS, image_ids=[1, 2])
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(detections, gt, CATEGORY_IDS, image_ids=[1000, 1007], backend="nope")


def test_per_class_nan_without_gt():
    gt, annotations, detections = _random_gt_and_dets(6, num_images=4)
    for a in annotations:  # drop every "toothbrush"
        keep = a["labels"] != 4
        a["boxes"], a["labels"] = a["boxes"][keep], a["labels"][keep]
        a["iscrowd"], a["difficult"] = a["iscrowd"][keep], a["difficult"][keep]
    out = evaluate_coco(detections, _FakeDataset(annotations), CATEGORY_IDS, backend="pycocotools")
    assert math.isnan(out["per_class_AP"]["toothbrush"])


def test_faster_coco_eval_gives_the_same_numbers():
    pytest.importorskip("faster_coco_eval")
    gt, _, detections = _random_gt_and_dets(8)
    image_ids = [img["id"] for img in gt["images"]]
    fast = evaluate_coco(detections, gt, CATEGORY_IDS, image_ids=image_ids, backend="faster-coco-eval")
    assert fast["backend"] == "faster-coco-eval"
    expected = _pycocotools_directly(gt, detections, image_ids)
    np.testing.assert_allclose([fast[n] for n in COCO_STAT_NAMES], expected, atol=1e-6, rtol=0)


def test_only_the_model_categories_are_evaluated():
    # a model trained on a label file's subset of the categories is scored on those only
    gt, annotations, detections = _random_gt_and_dets(9)
    image_ids = [img["id"] for img in gt["images"]]
    subset_ids = [0, 1, 7]  # label 1 -> category 1, label 2 -> category 7
    remap = {1: 1, 3: 2}  # old labels kept, as their new label
    dets = []
    for d in detections:
        keep = np.isin(d["labels"], list(remap))
        dets.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep],
                     "labels": np.array([remap[int(v)] for v in d["labels"][keep]], np.int64)})
    out = evaluate_coco(dets, gt, subset_ids, image_ids=image_ids, backend="pycocotools")
    assert set(out["per_class_AP"]) == {"person", "dog"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(out["results"])), "bbox")
        ev.params.catIds = [1, 7]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([out[n] for n in COCO_STAT_NAMES], ev.stats, atol=1e-6, rtol=0)
