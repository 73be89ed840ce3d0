"""The onnx-nms post-processing graph against ssdfast.ops.reference.ssd_postprocess.

The graph is built alone (inputs: softmax scores and decoded boxes) and run in onnxruntime; its
detections must equal the reference's exactly: same count, classes, order, scores and boxes.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from ssdfast.export.formats import NMS_OUTPUTS
from ssdfast.export.nms import append_onnx_nms
from ssdfast.ops import PostprocessSettings, reference

# Small networks gain nothing from a second thread and lose a lot on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _graph(batch, P: int, C: int, opset: int) -> onnx.ModelProto:
    inputs = [
        helper.make_tensor_value_info("raw_scores", TensorProto.FLOAT, [batch, P, C]),
        helper.make_tensor_value_info("raw_boxes", TensorProto.FLOAT, [batch, P, 4]),
    ]
    model = helper.make_model(helper.make_graph([], "nms", inputs, list(inputs)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _run(scores: torch.Tensor, boxes: torch.Tensor, settings: PostprocessSettings, opset: int = 13,
         dynamic: bool = False):
    B, P, C = scores.shape
    model = append_onnx_nms(_graph("batch" if dynamic else B, P, C, opset), C, P, settings)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == list(NMS_OUTPUTS)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"raw_scores": scores.numpy(), "raw_boxes": boxes.numpy()})


def _reference(scores, boxes, settings, monkeypatch):
    # The graph takes decoded boxes: make the reference's decode the identity.
    monkeypatch.setattr(reference, "decode_boxes", lambda loc, priors, variances: loc.float())
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(boxes.shape[1], 4)
    return reference.ssd_postprocess(boxes, scores, priors, (0.1, 0.2), **asdict(settings))


def _inputs(B: int, P: int, C: int, seed: int, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(B, P, C, generator=g) * 3).softmax(-1)
    center = torch.rand(B, P, 2, generator=g)
    size = torch.rand(B, P, 2, generator=g) * 0.3 + 0.01
    boxes = torch.cat((center - size / 2, center + size / 2), -1)
    if ties:  # every odd prior repeats the even one before it: equal scores and IoU 1
        boxes[:, 1::2] = boxes[:, 0:P - 1:2]
        scores[:, 1::2] = scores[:, 0:P - 1:2]
    return scores, boxes


def _assert_same(got, want):
    num, boxes, scores, classes = got
    want_boxes, want_scores, want_labels, want_num = (t.numpy() for t in want)
    assert num.dtype == np.int32 and classes.dtype == np.int32
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    np.testing.assert_array_equal(num[:, 0], want_num)
    np.testing.assert_array_equal(classes, want_labels)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(boxes, want_boxes)


@pytest.mark.parametrize(
    "B,P,C,settings,opset",
    [
        (2, 60, 4, PostprocessSettings(0.01, 0.45, 200, 200), 13),   # top_k > P, K > candidates
        (2, 60, 4, PostprocessSettings(0.01, 0.45, 10, 15), 13),     # top_k and K both cut
        (3, 300, 6, PostprocessSettings(0.2, 0.3, 20, 7), 11),
        (1, 100, 2, PostprocessSettings(0.0, 0.5, 100, 300), 17),    # one class, K > (C-1) * top_k
        (1, 3000, 21, PostprocessSettings(0.01, 0.45, 200, 200), 13),  # VOC-sized
    ],
)
def test_matches_reference(B, P, C, settings, opset, monkeypatch):
    scores, boxes = _inputs(B, P, C, seed=P + C)
    got = _run(scores, boxes, settings, opset)
    _assert_same(got, _reference(scores, boxes, settings, monkeypatch))
    assert got[0].shape == (B, 1) and got[1].shape == (B, settings.max_detections, 4)


def test_ties_follow_the_reference_order(monkeypatch):
    # Equal scores: the lower prior index wins within a class, the lower class across classes.
    settings = PostprocessSettings(0.0, 0.5, 30, 300)
    scores, boxes = _inputs(2, 100, 3, seed=7, ties=True)
    scores[:, :, 2] = scores[:, :, 1]  # classes 1 and 2 tie everywhere
    _assert_same(_run(scores, boxes, settings), _reference(scores, boxes, settings, monkeypatch))


def test_dynamic_batch(monkeypatch):
    settings = PostprocessSettings(0.1, 0.45, 50, 40)
    scores, boxes = _inputs(3, 200, 5, seed=3)
    _assert_same(_run(scores, boxes, settings, dynamic=True), _reference(scores, boxes, settings, monkeypatch))
    # The same graph on another batch size.
    scores1, boxes1 = scores[:1].clone(), boxes[:1].clone()
    _assert_same(_run(scores1, boxes1, settings, dynamic=True), _reference(scores1, boxes1, settings, monkeypatch))


def test_threshold_is_strict_and_nothing_detected_gives_zeros(monkeypatch):
    P, C = 50, 3
    scores = torch.full((2, P, C), 1.0 / 3)
    boxes = _inputs(2, P, C, seed=1)[1]
    settings = PostprocessSettings(float(np.float32(1.0 / 3)), 0.45, 20, 10)
    num, det_boxes, det_scores, det_classes = _run(scores, boxes, settings)
    np.testing.assert_array_equal(num, np.zeros((2, 1), np.int32))
    assert not det_boxes.any() and not det_scores.any() and not det_classes.any()
    _assert_same((num, det_boxes, det_scores, det_classes), _reference(scores, boxes, settings, monkeypatch))


def test_suppression_is_per_class_and_greater_than_threshold(monkeypatch):
    # Box 1 overlaps box 0 with IoU exactly 0.5 (binary fractions); box 2 repeats box 0.
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.5, 0.5]]])
    scores = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]])
    # class 1: box 0 kept, box 1 kept (IoU 0.5 is not > 0.5), box 2 suppressed (IoU 1); class 2 alike.
    at_half = _run(scores, boxes, PostprocessSettings(0.05, 0.5, 10, 10))
    assert at_half[0][0, 0] == 4
    np.testing.assert_array_equal(at_half[3][0, :4], [1, 2, 1, 2])  # scores 0.8, 0.8, 0.7, 0.1
    below = _run(scores, boxes, PostprocessSettings(0.05, 0.49, 10, 10))
    assert below[0][0, 0] == 2
    for settings in (PostprocessSettings(0.05, 0.5, 10, 10), PostprocessSettings(0.05, 0.49, 10, 10)):
        _assert_same(_run(scores, boxes, settings), _reference(scores, boxes, settings, monkeypatch))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="opset"):
        append_onnx_nms(_graph(1, 10, 3, 10), 3, 10, PostprocessSettings())
    with pytest.raises(ValueError, match="num_classes"):
        append_onnx_nms(_graph(1, 10, 1, 13), 1, 10, PostprocessSettings())
    with pytest.raises(ValueError, match="top_k"):
        PostprocessSettings(top_k=0)
    with pytest.raises(ValueError, match="score_threshold"):
        PostprocessSettings(score_threshold=1.5)
