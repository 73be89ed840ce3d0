"""VOC AP: hand-computed cases and agreement with a line-by-line port of py-faster-rcnn's voc_eval."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssdfast.evaluation.voc import evaluate_voc, match_detections, to_devkit_boxes, voc_ap, write_voc_detections

from .devkit import voc_eval_reference

CLASSES = ["BACKGROUND", "cat", "dog"]


def _voc(*args, **kwargs):
    """evaluate_voc on boxes written in the devkit's 1-based inclusive convention (as the XML files)."""
    return evaluate_voc(*args, box_convention="devkit", **kwargs)


def _ann(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    difficult = np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool)
    return {"boxes": boxes, "labels": labels, "difficult": difficult}


def _det(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels, np.int64)}


# ---------------------------------------------------------------------------------------------------
def _hand_case():
    """cat: 2 gts counted + 1 difficult; detections TP, duplicate FP, FP, TP, and one on the difficult box."""
    anns = [
        _ann([[0, 0, 9, 9]], [1]),
        _ann([[0, 0, 9, 9]], [1]),
        _ann([[20, 20, 29, 29]], [1], [True]),
    ]
    dets = [
        _det([[0, 0, 9, 9], [0, 0, 9, 9], [50, 50, 59, 59]], [0.9, 0.8, 0.7], [1, 1, 1]),  # TP, dup FP, FP
        _det([[0, 0, 9, 9]], [0.6], [1]),  # TP
        _det([[20, 20, 29, 29]], [0.95], [1]),  # on a difficult box: ignored
    ]
    return dets, anns


def test_hand_computed_all_point():
    # in score order (difficult hit ignored): TP FP FP TP -> recall .5 .5 .5 1, precision 1 .5 1/3 .5
    # envelope: 1 up to recall .5, then .5 up to 1 -> AP = .5 * 1 + .5 * .5
    dets, anns = _hand_case()
    out = _voc(dets, anns, CLASSES, use_2007_metric=False)
    assert out["per_class_AP"]["cat"] == pytest.approx(0.75, abs=1e-12)
    assert math.isnan(out["per_class_AP"]["dog"])  # no dog ground truth: nan, left out of the mAP
    assert out["mAP"] == pytest.approx(0.75, abs=1e-12)
    assert out["num_gt"] == {"cat": 2, "dog": 0}
    assert out["num_detections"]["cat"] == 5
    assert out["metric"] == "voc2010"


def test_hand_computed_11_point():
    # recall thresholds 0, .1, ..., .5 see precision 1 (6 points), .6 ... 1 see .5 (5 points)
    dets, anns = _hand_case()
    out = _voc(dets, anns, CLASSES, use_2007_metric=True)
    assert out["per_class_AP"]["cat"] == pytest.approx(8.5 / 11, abs=1e-12)
    assert out["metric"] == "voc2007"


def test_difficult_is_neither_tp_nor_fp():
    # without the difficult box, the detection on it would be a false positive ranked first
    dets, anns = _hand_case()
    with_difficult = _voc(dets, anns, CLASSES, use_2007_metric=False)["mAP"]
    anns[2] = _ann(np.zeros((0, 4)), [])
    without = _voc(dets, anns, CLASSES, use_2007_metric=False)["mAP"]
    assert with_difficult == pytest.approx(0.75)
    # now FP TP FP FP TP: precision 0 .5 1/3 1/4 .4, recall 0 .5 .5 .5 1 -> .5 * .5 + .5 * .4
    assert without == pytest.approx(0.45)


def test_class_with_only_difficult_gts_is_nan():
    anns = [_ann([[0, 0, 9, 9], [0, 0, 9, 9]], [1, 2], [False, True])]
    dets = [_det([[0, 0, 9, 9], [0, 0, 9, 9]], [0.9, 0.9], [1, 2])]
    out = _voc(dets, anns, CLASSES)
    assert out["per_class_AP"]["cat"] == pytest.approx(1.0)
    assert math.isnan(out["per_class_AP"]["dog"])
    assert out["mAP"] == pytest.approx(1.0)


def test_plus_one_pixel_convention_and_threshold():
    # det [0,0,4,9] vs gt [0,0,8,9]: with +1 widths 5 and 9 -> IoU 5/9 > 0.5 (TP);
    # without the +1 it would be 4/8 = 0.5, not > 0.5
    anns = [_ann([[0, 0, 8, 9]], [1])]
    dets = [_det([[0, 0, 4, 9]], [0.5], [1])]
    assert _voc(dets, anns, CLASSES)["mAP"] == pytest.approx(1.0)
    assert _voc(dets, anns, CLASSES, match_iou=0.56)["mAP"] == pytest.approx(0.0)
    # IoU exactly 0.5 is not a match (strictly greater)
    dets = [_det([[0, 0, 9, 4]], [0.5], [1])]
    assert _voc(dets, [_ann([[0, 0, 9, 9]], [1])], CLASSES)["mAP"] == 0.0


def test_duplicate_of_best_gt_is_fp_even_if_another_gt_overlaps():
    # two overlapping gts; the second detection's best gt is A (already taken): a false positive in
    # the devkit even though it overlaps B by more than 0.5
    anns = [_ann([[0, 0, 99, 99], [0, 10, 99, 109]], [1, 1])]
    dets = [_det([[0, 0, 99, 99], [0, 4, 99, 103]], [0.9, 0.8], [1, 1])]
    out = _voc(dets, anns, CLASSES, use_2007_metric=False)
    # TP then FP: recall .5 .5, precision 1 .5 -> AP .5
    assert out["mAP"] == pytest.approx(0.5)
    assert out["mAP"] == pytest.approx(voc_eval_reference(dets, anns, 1, 0.5, False))


def test_labels_do_not_match_across_classes_and_images():
    anns = [_ann([[0, 0, 9, 9]], [1]), _ann([[0, 0, 9, 9]], [2])]
    dets = [_det([[0, 0, 9, 9]], [0.9], [2]), _det([[0, 0, 9, 9]], [0.9], [1])]
    out = _voc(dets, anns, CLASSES)
    assert out["per_class_AP"] == {"cat": 0.0, "dog": 0.0}


def test_no_detections_and_tensor_inputs():
    anns = [_ann([[0, 0, 9, 9]], [1])]
    out = _voc([_det(np.zeros((0, 4)), [], [])], anns, CLASSES)
    assert out["mAP"] == 0.0
    dets = [(torch.tensor([[0.0, 0, 9, 9]]), torch.tensor([0.3]), torch.tensor([1]))]
    tanns = [{"boxes": torch.tensor([[0.0, 0, 9, 9]]), "labels": torch.tensor([1])}]  # no "difficult": none
    assert _voc(dets, tanns, CLASSES)["mAP"] == pytest.approx(1.0)


def test_bad_inputs():
    anns = [_ann([[0, 0, 9, 9]], [1])]
    with pytest.raises(ValueError, match="images"):
        _voc([], anns, CLASSES)
    with pytest.raises(ValueError, match="label 5"):
        _voc([_det([[0, 0, 9, 9]], [0.5], [5])], anns, CLASSES)
    with pytest.raises(ValueError, match="match_iou"):
        _voc([_det([[0, 0, 9, 9]], [0.5], [1])], anns, CLASSES, match_iou=1.5)


def test_voc_ap_edges():
    assert voc_ap(np.array([]), np.array([]), True) == 0.0
    assert voc_ap(np.array([]), np.array([]), False) == 0.0
    assert voc_ap(np.array([1.0]), np.array([1.0]), True) == pytest.approx(1.0)
    assert voc_ap(np.array([1.0]), np.array([1.0]), False) == pytest.approx(1.0)


def test_match_detections_ties_take_first_gt():
    gt = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], float)
    ovmax, jmax = match_detections(np.array([[0, 0, 9, 9]], float), np.array([7]), gt, np.array([3, 7, 7]))
    assert ovmax.tolist() == [1.0] and jmax.tolist() == [1]
    ovmax, jmax = match_detections(np.array([[0, 0, 9, 9]], float), np.array([5]), gt, np.array([3, 7, 7]))
    assert ovmax.tolist() == [-np.inf] and jmax.tolist() == [-1]


def _random_case(rng, num_images, num_classes, with_difficult=True):
    anns, dets = [], []
    for _ in range(num_images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (g, 2))
        wh = rng.uniform(5, 80, (g, 2))
        gboxes = np.round(np.concatenate([xy, xy + wh], 1))
        glabels = rng.integers(1, num_classes, g)
        difficult = rng.random(g) < (0.2 if with_difficult else 0.0)
        anns.append(_ann(gboxes, glabels, difficult))
        # detections: jittered copies of gts (some duplicated), plus random boxes
        k = int(rng.integers(0, 3 * g + 3))
        src = rng.integers(0, max(g, 1), k)
        jitter = rng.normal(0, 6, (k, 4))
        base = gboxes[src] if g else np.tile([[50, 50, 90, 90]], (k, 1))
        rand = rng.random(k) < 0.3
        boxes = np.where(rand[:, None],
                         np.sort(rng.uniform(0, 280, (k, 4)).reshape(k, 2, 2), axis=1).transpose(0, 2, 1).reshape(k, 4),
                         base + jitter)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(k) < 0.8, glabels[src] if g else 1, rng.integers(1, num_classes, k))
        dets.append(_det(boxes, rng.random(k), labels))
    return dets, anns


@pytest.mark.parametrize("use_2007_metric", [True, False])
@pytest.mark.parametrize("match_iou", [0.5, 0.3, 0.7])
def test_agrees_with_py_faster_rcnn_voc_eval(use_2007_metric, match_iou):
    rng = np.random.default_rng(int(match_iou * 10) + use_2007_metric)
    names = ["BACKGROUND"] + [f"c{i}" for i in range(1, 6)]
    dets, anns = _random_case(rng, 40, len(names))
    out = _voc(dets, anns, names, match_iou=match_iou, use_2007_metric=use_2007_metric)
    expected = {names[c]: voc_eval_reference(dets, anns, c, match_iou, use_2007_metric) for c in range(1, len(names))}
    for name, ap in expected.items():
        if math.isnan(ap):
            assert math.isnan(out["per_class_AP"][name])
        else:
            assert out["per_class_AP"][name] == pytest.approx(ap, abs=1e-12), name
    assert out["mAP"] == pytest.approx(np.nanmean(list(expected.values())), abs=1e-12)


def test_continuous_boxes_are_converted_to_the_devkit_convention():
    # ssdfast's datasets read VOC's xmin..xmax (1-based, inclusive) as the continuous [xmin - 1, xmax]
    cont = np.array([[0.0, 0.0, 10.0, 10.0]])
    assert to_devkit_boxes(cont).tolist() == [[1.0, 1.0, 10.0, 10.0]]
    # continuous det [0,0,5,10] vs gt [0,0,9,10]: devkit widths 5 and 9, IoU 5/9 > 0.5
    anns = [_ann([[0, 0, 9, 10]], [1])]
    dets = [_det([[0, 0, 5, 10]], [0.5], [1])]
    assert evaluate_voc(dets, anns, CLASSES)["mAP"] == pytest.approx(1.0)
    assert evaluate_voc(dets, anns, CLASSES, match_iou=0.56)["mAP"] == 0.0
    # the default convention equals the devkit's on converted boxes
    rng = np.random.default_rng(11)
    names = ["BACKGROUND"] + [f"c{i}" for i in range(1, 4)]
    dets, anns = _random_case(rng, 20, len(names))
    conv_d = [dict(d, boxes=to_devkit_boxes(d["boxes"])) for d in dets]
    conv_a = [dict(a, boxes=to_devkit_boxes(a["boxes"])) for a in anns]
    assert evaluate_voc(dets, anns, names) == _voc(conv_d, conv_a, names)
    with pytest.raises(ValueError, match="box_convention"):
        evaluate_voc(dets, anns, names, box_convention="zero-based")


def test_write_voc_detections(tmp_path):
    dets = [_det([[0, 0, 9, 9], [4.5, 5, 20, 30]], [0.9, 0.25], [1, 2]), _det([[1, 2, 3, 4]], [0.5], [1])]
    paths = write_voc_detections(str(tmp_path), dets, ["000001", "000007"], CLASSES)
    assert [p.split("/")[-1] for p in paths] == ["det_test_cat.txt", "det_test_dog.txt"]
    cat = (tmp_path / "det_test_cat.txt").read_text().splitlines()
    assert cat == ["000001 0.9 1.00 1.00 9.00 9.00", "000007 0.5 2.00 3.00 3.00 4.00"]
    dog = (tmp_path / "det_test_dog.txt").read_text().splitlines()
    assert dog == ["000001 0.25 5.50 6.00 20.00 30.00"]
    # read back, they give the same AP as the in-memory detections
    anns = [_ann([[0, 0, 9, 9], [5, 5, 20, 30]], [1, 2]), _ann([[1, 2, 3, 4]], [1])]
    ids = {"000001": 0, "000007": 1}
    back = [{"boxes": [], "scores": [], "labels": []} for _ in anns]
    for label, name in ((1, "cat"), (2, "dog")):
        for line in (tmp_path / f"det_test_{name}.txt").read_text().splitlines():
            image_id, score, *box = line.split()
            b = back[ids[image_id]]
            b["boxes"].append([float(v) for v in box]), b["scores"].append(float(score)), b["labels"].append(label)
    dev_anns = [dict(a, boxes=to_devkit_boxes(a["boxes"])) for a in anns]
    assert _voc(back, dev_anns, CLASSES) == evaluate_voc(dets, anns, CLASSES)
