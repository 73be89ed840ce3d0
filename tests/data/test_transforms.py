"""TrainTransform / EvalTransform: boxes stay inside the image and on their objects."""
from __future__ import annotations

import pickle

import pytest
import torch

from ssdfast.data.transforms import EvalTransform, TrainTransform

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # fill (the mean colour) is black, like the background


def _white_rectangle(h=120, w=160, box=(40, 30, 110, 90)):
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image, torch.tensor([box], dtype=torch.float32), torch.tensor([3])


def test_augmented_box_stays_on_its_object():
    image, boxes, labels = _white_rectangle()
    transform = TrainTransform(64, MEAN, STD)
    kept = 0
    for seed in range(60):
        torch.manual_seed(seed)
        out, out_boxes, out_labels = transform(image, boxes, labels)
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        assert out_boxes.dtype == torch.float32 and out_labels.dtype == torch.int64
        assert ((out_boxes >= 0) & (out_boxes <= 1)).all()
        bright = out.mean(0) > 0.3  # the object, whatever the photometric distortion did
        if len(out_boxes) == 0:
            continue  # the crop left the object out: it is dropped with its box
        assert out_labels.tolist() == [3]
        kept += 1
        x1, y1, x2, y2 = (out_boxes[0] * 64).tolist()
        assert x2 > x1 and y2 > y1
        inside = torch.zeros_like(bright)
        inside[round(y1):round(y2), round(x1):round(x2)] = True
        # the box covers object pixels (edges blur in the resize) and hardly any object pixel is outside it
        assert bright[inside].float().mean() > 0.85, seed
        near = torch.zeros_like(bright)  # the box grown by a pixel of resize blur
        near[max(0, int(y1) - 1):int(y2) + 2, max(0, int(x1) - 1):int(x2) + 2] = True
        assert not (bright & ~near).any(), seed
    assert kept >= 40


def test_many_boxes_stay_inside_and_labels_follow():
    torch.manual_seed(0)
    transform = TrainTransform(48, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    for _ in range(50):
        h, w = torch.randint(40, 200, (2,)).tolist()
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        xy = torch.rand(6, 2) * torch.tensor([w, h]) * 0.8
        wh = torch.rand(6, 2) * torch.tensor([w, h]) * 0.5 + 2
        boxes = torch.cat([xy, xy + wh], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=h)
        labels = torch.arange(1, 7)
        out, out_boxes, out_labels = transform(image, boxes, labels)
        assert out.shape == (3, 48, 48)
        assert ((out_boxes >= 0) & (out_boxes <= 1)).all()
        assert (out_boxes[:, 2:] > out_boxes[:, :2]).all()
        assert len(out_labels) == len(out_boxes) and set(out_labels.tolist()) <= set(range(1, 7))


def test_no_boxes():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    for t in (TrainTransform(32, MEAN, STD), EvalTransform(32, MEAN, STD)):
        out, boxes, labels = t(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        assert out.shape == (3, 32, 32) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_eval_transform_resizes_and_normalizes():
    image, boxes, labels = _white_rectangle(h=100, w=200, box=(50, 20, 150, 60))
    out, out_boxes, out_labels = EvalTransform(50, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image, boxes, labels)
    torch.testing.assert_close(out_boxes, torch.tensor([[0.25, 0.2, 0.75, 0.6]]))
    assert out.shape == (3, 50, 50) and out_labels.tolist() == [3]
    assert out.min().item() == pytest.approx(-1.0) and out.max().item() == pytest.approx(1.0)


def test_bad_arguments_and_pickling():
    with pytest.raises(ValueError, match="scaled to"):
        TrainTransform(300, (127, 127, 127), (128, 128, 128))
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(32, MEAN, STD)(torch.rand(3, 10, 10), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    t = pickle.loads(pickle.dumps(TrainTransform(32, MEAN, STD)))  # spawn-started workers pickle it
    image, boxes, labels = _white_rectangle()
    assert t(image, boxes, labels)[0].shape == (3, 32, 32)
