"""Native CPU kernels held to ssdfast.ops.reference and torchvision, on random and adversarial input."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdfast import ops
from ssdfast.ops import reference as ref

from .conftest import V, gen, grid_priors, random_boxes, sample_calls

HYP = settings(max_examples=30, deadline=None)
HALF_DTYPES = [torch.float16, torch.bfloat16]


# ----------------------------------------------------------------------------- box_iou


@HYP
@given(n=st.integers(0, 40), m=st.integers(0, 40), seed=st.integers(0, 2**31))
def test_box_iou_matches_torchvision_and_reference(native, n, m, seed):
    g = gen(seed)
    a, b = random_boxes(n, generator=g), random_boxes(m, generator=g)
    out = native.box_iou(a, b)
    assert out.shape == (n, m)
    assert torch.equal(out, ref.box_iou(a, b))
    torch.testing.assert_close(out, torchvision.ops.box_iou(a, b), rtol=1e-6, atol=1e-7)


def test_box_iou_degenerate_boxes_are_zero_never_nan(native):
    a = torch.tensor([[0.1, 0.1, 0.1, 0.5], [0.2, 0.2, 0.6, 0.2], [0.5, 0.5, 0.4, 0.6], [0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.1, 0.1, 0.1, 0.5], [0.0, 0.0, 0.5, 0.5]])
    out = native.box_iou(a, b)
    expected = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert torch.equal(out, expected)
    assert torch.equal(ref.box_iou(a, b), expected)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_box_iou_half_inputs_computed_in_float(native, dtype):
    a, b = random_boxes(30, generator=gen(1)).to(dtype), random_boxes(20, generator=gen(2)).to(dtype)
    out = native.box_iou(a, b)
    assert out.dtype == dtype
    expected = ref.box_iou(a.float(), b.float()).to(dtype)
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- encode / decode


@HYP
@given(batch=st.integers(0, 3), seed=st.integers(0, 2**31))
def test_encode_decode_match_reference_and_round_trip(native, batch, seed):
    g = gen(seed)
    priors = grid_priors()
    boxes = random_boxes(batch, priors.shape[0], generator=g)
    enc = native.encode_boxes(boxes, priors, V)
    torch.testing.assert_close(enc, ref.encode_boxes(boxes, priors, V), rtol=1e-5, atol=1e-5)
    dec = native.decode_boxes(enc, priors, V)
    torch.testing.assert_close(dec, ref.decode_boxes(enc, priors, V), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dec, boxes, rtol=1e-4, atol=1e-5)


def test_encode_degenerate_box_is_finite_and_decode_is_clamped(native):
    priors = grid_priors()[:3]
    boxes = torch.tensor([[[0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]]])
    enc = native.encode_boxes(boxes, priors, V)
    assert torch.isfinite(enc).all()
    loc = torch.full((1, 3, 4), 1e4, dtype=torch.float16)
    dec = native.decode_boxes(loc, priors, V)
    assert dec.dtype == torch.float16 and torch.isfinite(dec[..., 2:] - dec[..., :2]).all()
    torch.testing.assert_close(dec.float(), ref.decode_boxes(loc, priors, V).float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_coder_half_inputs(native, dtype):
    priors = grid_priors()
    boxes = random_boxes(2, priors.shape[0], generator=gen(3)).to(dtype)
    enc = native.encode_boxes(boxes, priors, V)
    assert enc.dtype == dtype
    torch.testing.assert_close(enc, ref.encode_boxes(boxes, priors, V), rtol=1e-2, atol=1e-2)
    dec = native.decode_boxes(enc, priors, V)
    assert dec.dtype == dtype
    torch.testing.assert_close(dec, ref.decode_boxes(enc, priors, V), rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------------- match_priors / ssd_targets


def _assert_match_equal(native, priors, gt_boxes, gt_labels, thr=0.5):
    labels, boxes = native.match_priors(priors, gt_boxes, gt_labels, thr)
    r_labels, r_boxes = ref.match_priors(priors, gt_boxes, gt_labels, thr)
    assert torch.equal(labels, r_labels)
    assert torch.equal(boxes, r_boxes)
    t_labels, t_loc = native.ssd_targets(priors, gt_boxes, gt_labels, thr, V)
    rt_labels, rt_loc = ref.ssd_targets(priors, gt_boxes, gt_labels, thr, V)
    assert torch.equal(t_labels, labels) and torch.equal(rt_labels, labels)
    torch.testing.assert_close(t_loc, rt_loc, rtol=1e-5, atol=1e-5)
    return labels, boxes


@HYP
@given(
    batch=st.integers(1, 4),
    num_gt=st.integers(0, 6),
    thr=st.sampled_from([0.3, 0.5, 0.7]),
    seed=st.integers(0, 2**31),
)
def test_match_priors_random_with_padding(native, batch, num_gt, thr, seed):
    g = gen(seed)
    priors = grid_priors()
    gt_boxes = random_boxes(batch, num_gt, max_size=0.7, generator=g)
    gt_labels = torch.randint(1, 5, (batch, num_gt), generator=g)
    pad = torch.rand(batch, num_gt, generator=g) < 0.3
    gt_labels[pad] = -1
    _assert_match_equal(native, priors, gt_boxes, gt_labels, thr)


def test_match_priors_ssd300_size(native, priors_8732):
    g = gen(7)
    gt_boxes = random_boxes(16, 8, max_size=0.6, generator=g)
    gt_labels = torch.randint(1, 21, (16, 8), generator=g)
    gt_labels[:, 5:] = -1
    gt_labels[2] = -1  # an image without gts
    labels, boxes = _assert_match_equal(native, priors_8732, gt_boxes, gt_labels)
    assert (labels[2] == 0).all() and (boxes[2] == 0).all()
    # every valid gt owns at least one prior (the forced match)
    for b in range(16):
        for gi in range(5):
            if b != 2:
                assert (boxes[b] == gt_boxes[b, gi]).all(-1).any()


def test_match_priors_two_gts_sharing_best_prior_later_gt_wins(native):
    # Two identical gts: the same best prior; the later gt must win it.
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
    gt = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]]])
    labels, _ = _assert_match_equal(native, priors, gt, torch.tensor([[1, 2]]))
    assert labels.tolist() == [[2, 0]]


def test_match_priors_ties_go_to_lowest_index(native):
    # A prior equally overlapped by two gts takes the lower gt index; a gt equally overlapping two
    # priors forces the lower prior index.
    # Dyadic coordinates, so the IoUs tie exactly in float32 (both 0.0625 / 0.140625).
    priors = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25], [0.875, 0.875, 0.125, 0.125]])
    gt = torch.tensor([[[0.25, 0.25, 0.625, 0.625], [0.375, 0.375, 0.75, 0.75]]])
    labels, boxes = _assert_match_equal(native, priors, gt, torch.tensor([[3, 4]]), thr=0.2)
    # gt0 and gt1 both choose prior 0 (lowest index of a tie) -> the later gt (label 4) wins it;
    # prior 1 takes gt0 (lowest gt index of a tie) with IoU 4/9 >= 0.2; prior 2 overlaps nothing.
    assert labels.tolist() == [[4, 3, 0]]
    assert torch.equal(boxes[0, 1], gt[0, 0])


def test_match_priors_threshold_and_hand_case(native):
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.4, 0.4, 0.5, 0.5]])
    gt = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.9, 0.9, 0.95, 0.95]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    gl = torch.tensor([[5, 6], [-1, -1]])
    labels, boxes = _assert_match_equal(native, priors, gt, gl)
    # prior 0 is exactly gt0 (IoU 1); prior 2 = [.15, .15, .65, .65] overlaps gt0 with IoU
    # 0.35^2 / (0.5 - 0.35^2) = 0.32 < 0.5 -> background;
    # gt1 is tiny inside prior 1 (IoU 0.01) but forces it.
    assert labels.tolist() == [[5, 6, 0], [0, 0, 0]]
    assert (boxes[1] == 0).all()


def test_match_priors_degenerate_gt_forces_nothing(native):
    priors = grid_priors()
    gt = torch.tensor([[[0.3, 0.3, 0.3, 0.6], [0.1, 0.1, 0.5, 0.5]]])
    labels, _ = _assert_match_equal(native, priors, gt, torch.tensor([[1, 2]]))
    assert not (labels == 1).any() and (labels == 2).any()


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_match_priors_half_gt(native, dtype):
    priors = grid_priors()
    gt = random_boxes(3, 4, max_size=0.6, generator=gen(11)).to(dtype)
    labels, boxes = _assert_match_equal(native, priors, gt, torch.randint(1, 4, (3, 4), generator=gen(12)))
    assert boxes.dtype == dtype


def test_match_priors_empty(native):
    priors = grid_priors()
    P = priors.shape[0]
    labels, boxes = native.match_priors(priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5)
    assert labels.shape == (2, P) and (labels == 0).all() and boxes.shape == (2, P, 4)
    labels, loc = native.ssd_targets(priors, torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.long), 0.5, V)
    assert labels.shape == (0, P) and loc.shape == (0, P, 4)
    labels, loc = native.ssd_targets(priors[:0], torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.long), 0.5, V)
    assert labels.shape == (2, 0) and loc.shape == (2, 0, 4)


# ----------------------------------------------------------------------------- hard_negative_mask


@HYP
@given(
    batch=st.integers(1, 4),
    num_priors=st.integers(1, 300),
    ratio=st.integers(0, 5),
    levels=st.sampled_from([None, 3]),
    seed=st.integers(0, 2**31),
)
def test_hard_negative_mask_matches_reference(native, batch, num_priors, ratio, levels, seed):
    g = gen(seed)
    loss = torch.rand(batch, num_priors, generator=g)
    if levels:  # many exact ties
        loss = (loss * levels).floor()
    labels = torch.randint(-1, 3, (batch, num_priors), generator=g) * (torch.rand(batch, num_priors, generator=g) < 0.3)
    out = native.hard_negative_mask(loss, labels, ratio)
    assert torch.equal(out, ref.hard_negative_mask(loss, labels, ratio))
    # contract, checked directly
    for b in range(batch):
        pos = labels[b] > 0
        neg = labels[b] == 0
        k = min(ratio * int(pos.sum()), int(neg.sum()))
        assert (out[b] & pos).sum() == pos.sum()
        assert (out[b] & neg).sum() == k
        assert not (out[b] & (labels[b] < 0)).any()


def test_hard_negative_mask_tie_takes_lower_index(native):
    loss = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, 1.0]])
    labels = torch.tensor([[1, 0, 0, 0, 0, 0]])
    out = native.hard_negative_mask(loss, labels, 2)
    assert out.tolist() == [[True, True, False, False, True, False]]


def test_hard_negative_mask_nan_is_the_largest_loss_k_exact(native):
    # NaN at prior 0, a -inf negative, an ignored prior and k = num_neg - 1 (a case the CUDA kernel once got wrong):
    # exactly k negatives, the NaN first, never the ignored prior.
    loss = torch.tensor([[float("nan"), 1.0, float("-inf"), 0.5, 0.3, 2.0]])
    labels = torch.tensor([[0, 0, 0, 1, -1, 0]])
    expected = [[True, True, False, True, False, True]]
    assert native.hard_negative_mask(loss, labels, 3).tolist() == expected
    assert ref.hard_negative_mask(loss, labels, 3).tolist() == expected


def test_hard_negative_mask_no_positives_and_half(native):
    labels = torch.zeros(2, 50, dtype=torch.long)
    assert not native.hard_negative_mask(torch.rand(2, 50), labels, 3).any()
    loss = torch.rand(3, 500, generator=gen(5)).to(torch.float16)
    labels = (torch.rand(3, 500, generator=gen(6)) < 0.05).long()
    assert torch.equal(native.hard_negative_mask(loss, labels, 3), ref.hard_negative_mask(loss, labels, 3))
    assert native.hard_negative_mask(torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.long), 3).shape == (0, 5)


def test_hard_negative_mask_ssd300_batch(native):
    loss = torch.rand(32, 8732, generator=gen(8))
    labels = (torch.rand(32, 8732, generator=gen(9)) < 0.01).long() * 7
    assert torch.equal(native.hard_negative_mask(loss, labels, 3), ref.hard_negative_mask(loss, labels, 3))


# ----------------------------------------------------------------------------- batched_nms


@HYP
@given(n=st.integers(0, 400), classes=st.integers(1, 5), thr=st.sampled_from([0.3, 0.5, 0.7]),
       seed=st.integers(0, 2**31))
def test_batched_nms_matches_torchvision(native, n, classes, thr, seed):
    g = gen(seed)
    boxes = random_boxes(n, max_size=0.3, generator=g)
    scores = torch.randperm(n, generator=g).float() / max(n, 1)  # distinct scores: torchvision's order is defined
    idxs = torch.randint(0, classes, (n,), generator=g)
    keep = native.batched_nms(boxes, scores, idxs, thr)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, idxs, thr))
    assert torch.equal(keep, ref.batched_nms(boxes, scores, idxs, thr))


def test_batched_nms_ties_duplicates_and_degenerate(native):
    boxes = torch.tensor(
        [
            [0.1, 0.1, 0.5, 0.5],
            [0.1, 0.1, 0.5, 0.5],  # duplicate, same score: the lower index is kept
            [0.1, 0.1, 0.5, 0.5],  # duplicate in another class: kept
            [0.3, 0.3, 0.3, 0.3],  # degenerate: never suppressed, never suppresses
            [0.6, 0.6, 0.9, 0.9],
            [0.6, 0.6, 0.9, 0.9],
        ]
    )
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5, 0.7])
    idxs = torch.tensor([0, 0, 1, 0, 0, 0])
    keep = native.batched_nms(boxes, scores, idxs, 0.5)
    assert keep.tolist() == [3, 5, 0, 2]
    assert torch.equal(ref.batched_nms(boxes, scores, idxs, 0.5), keep)


def test_batched_nms_many_ties_match_reference(native):
    g = gen(21)
    boxes = random_boxes(2000, max_size=0.2, generator=g)
    scores = (torch.rand(2000, generator=g) * 10).floor() / 10
    idxs = torch.randint(0, 3, (2000,), generator=g)
    assert torch.equal(native.batched_nms(boxes, scores, idxs, 0.5), ref.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_batched_nms_half(native, dtype):
    g = gen(22)
    boxes = random_boxes(300, generator=g).to(dtype)
    scores = torch.rand(300, generator=g).to(dtype)
    idxs = torch.randint(0, 3, (300,), generator=g)
    assert torch.equal(native.batched_nms(boxes, scores, idxs, 0.5), ref.batched_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_large_single_class(native):
    g = gen(23)
    boxes = random_boxes(5000, max_size=0.1, generator=g)
    scores = torch.randperm(5000, generator=g).float()
    idxs = torch.zeros(5000, dtype=torch.long)
    keep = native.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))


# ----------------------------------------------------------------------------- ssd_postprocess


def _assert_postprocess_equal(native, loc, scores, priors, **kw):
    args = (V, kw.get("score_threshold", 0.01), kw.get("iou_threshold", 0.45), kw.get("top_k", 200),
            kw.get("max_detections", 200))
    out = native.ssd_postprocess(loc, scores, priors, *args)
    exp = ref.ssd_postprocess(loc, scores, priors, *args)
    assert torch.equal(out[3], exp[3])
    assert torch.equal(out[2], exp[2])
    assert torch.equal(out[1], exp[1])
    tol = 1e-5 if loc.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out[0], exp[0], rtol=tol, atol=tol)
    return out


@HYP
@given(
    batch=st.integers(1, 3),
    classes=st.integers(2, 6),
    top_k=st.sampled_from([1, 5, 50, 1000]),
    max_det=st.sampled_from([1, 10, 100]),
    seed=st.integers(0, 2**31),
)
def test_ssd_postprocess_matches_reference(native, batch, classes, top_k, max_det, seed):
    g = gen(seed)
    priors = grid_priors()
    loc = torch.randn(batch, priors.shape[0], 4, generator=g) * 0.3
    scores = torch.softmax(torch.randn(batch, priors.shape[0], classes, generator=g) * 3, -1)
    out = _assert_postprocess_equal(native, loc, scores, priors, top_k=top_k, max_detections=max_det)
    boxes, sc, labels, num = out
    for b in range(batch):
        n = int(num[b])
        assert n <= max_det
        assert (sc[b, :n] > 0.01).all() and (sc[b, n:] == 0).all() and (labels[b, n:] == 0).all()
        assert (boxes[b, n:] == 0).all()
        assert (sc[b, :n][:-1] >= sc[b, :n][1:]).all()
        assert ((labels[b, :n] >= 1) & (labels[b, :n] < classes)).all()


def test_ssd_postprocess_score_ties_and_hand_case(native):
    # Two priors with identical boxes and scores in two classes: one detection per class, NMS
    # removes the duplicate within a class, ties ordered by class then prior.
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])
    loc = torch.zeros(1, 3, 4)
    scores = torch.tensor([[[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.9, 0.05, 0.05]]])
    boxes, sc, labels, num = _assert_postprocess_equal(native, loc, scores, priors, max_detections=5)
    assert num.tolist() == [4]
    assert labels[0, :4].tolist() == [1, 2, 1, 2]
    assert sc[0, :4].tolist() == pytest.approx([0.4, 0.4, 0.05, 0.05])
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.4, 0.4, 0.6, 0.6]))


def test_ssd_postprocess_ssd300_size_half(native, priors_8732):
    g = gen(31)
    loc = (torch.randn(2, 8732, 4, generator=g) * 0.2).half()
    scores = torch.softmax(torch.randn(2, 8732, 21, generator=g) * 4, -1).half()
    _assert_postprocess_equal(native, loc, scores, priors_8732)


def test_ssd_postprocess_empty(native):
    priors = grid_priors()
    P = priors.shape[0]
    out = native.ssd_postprocess(torch.zeros(0, P, 4), torch.zeros(0, P, 5), priors, V, 0.01, 0.45, 200, 7)
    assert [tuple(t.shape) for t in out] == [(0, 7, 4), (0, 7), (0, 7), (0,)]
    out = native.ssd_postprocess(torch.zeros(2, P, 4), torch.zeros(2, P, 5), priors, V, 0.01, 0.45, 200, 7)
    assert out[3].tolist() == [0, 0] and (out[0] == 0).all()
    out = native.ssd_postprocess(torch.zeros(2, P, 4), torch.ones(2, P, 1), priors, V, 0.01, 0.45, 200, 7)
    assert out[3].tolist() == [0, 0]


# ----------------------------------------------------------------------------- registration, compile, backends


@pytest.mark.parametrize("name,args", sample_calls(41), ids=[c[0] for c in sample_calls(41)])
def test_opcheck(native, name, args):
    op = getattr(torch.ops.ssdfast, name).default
    test_utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name != "batched_nms":  # data-dependent output size: no aot_dispatch_dynamic
        test_utils += ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(op, args, test_utils=test_utils)


def test_torch_compile_fullgraph(native):
    priors = grid_priors()
    g = gen(51)
    gt = random_boxes(2, 3, generator=g)
    gl = torch.tensor([[1, 2, -1], [3, -1, -1]])
    conf = torch.randn(2, priors.shape[0], 4, generator=g)
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.1

    def fn(conf, loc, gt, gl):
        labels, targets = ops.ssd_targets(priors, gt, gl)
        neg = -torch.log_softmax(conf, -1)[..., 0]
        mask = ops.hard_negative_mask(neg, labels, 3)
        det = ops.ssd_postprocess(loc, torch.softmax(conf, -1), priors)
        return labels, targets, mask, det

    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    got, exp = compiled(conf, loc, gt, gl), fn(conf, loc, gt, gl)
    assert torch.equal(got[0], exp[0]) and torch.equal(got[2], exp[2])
    assert torch.equal(got[3][3], exp[3][3])


def test_backend_native_and_forced_reference():
    code = "import ssdfast.ops as o; print(o.backend())"
    env_ref = {"SSDFAST_BACKEND": "reference"}
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env_ref})
    assert out.stdout.strip() == "reference"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SSDFAST_BACKEND": "gpu"})
    assert out.returncode != 0 and "SSDFAST_BACKEND" in out.stderr


def test_missing_extension_falls_back_with_one_warning():
    import os

    code = (
        "import sys, warnings; sys.modules['ssdfast._C'] = None\n"
        "warnings.simplefilter('always')\n"
        "import torch, ssdfast.ops as o\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    a = torch.tensor([[0., 0., 1., 1.]])\n"
        "    o.box_iou(a, a); o.box_iou(a, a)\n"
        "print(o.backend(), sum('ssdfast._C' in str(x.message) for x in w))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SSDFAST_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["reference", "1"], out.stderr
    code_native = code.replace("import torch, ssdfast.ops as o",
                               "import os; os.environ['SSDFAST_BACKEND'] = 'native'\nimport torch, ssdfast.ops as o")
    out = subprocess.run([sys.executable, "-c", code_native], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "could not be loaded" in out.stderr


# ----------------------------------------------------------------------------- argument checks


def _bad_calls():
    p = grid_priors()
    P = p.shape[0]
    ok_gt = torch.rand(2, 3, 4)
    ok_gl = torch.ones(2, 3, dtype=torch.long)
    nan_gt = ok_gt.clone()
    nan_gt[0, 0, 0] = float("nan")
    meta = torch.zeros(2, 3, 4, device="meta")
    return [
        ("a", lambda: ops.box_iou(torch.rand(3, 3), torch.rand(2, 4))),
        ("a", lambda: ops.box_iou(torch.rand(2, 3, 4), torch.rand(2, 4))),
        ("b", lambda: ops.box_iou(torch.rand(3, 4), torch.ones(2, 4, dtype=torch.long))),
        ("a", lambda: ops.box_iou(torch.tensor([[0.0, 0.0, float("inf"), 1.0]]), torch.rand(2, 4))),
        ("boxes", lambda: ops.encode_boxes(torch.rand(2, P + 1, 4), p)),
        ("variances", lambda: ops.encode_boxes(torch.rand(2, P, 4), p, (0.1, -0.2))),
        ("priors", lambda: ops.decode_boxes(torch.rand(2, P, 4), p[:, :3])),
        ("gt_boxes", lambda: ops.match_priors(p, torch.rand(3, 4), ok_gl)),
        ("gt_labels", lambda: ops.match_priors(p, ok_gt, torch.ones(3, 3, dtype=torch.long))),
        ("gt_labels", lambda: ops.match_priors(p, ok_gt, torch.ones(2, 3))),
        ("gt_boxes", lambda: ops.match_priors(p, ok_gt.long(), ok_gl)),
        ("gt_boxes", lambda: ops.ssd_targets(p, nan_gt, ok_gl)),
        ("iou_threshold", lambda: ops.ssd_targets(p, ok_gt, ok_gl, iou_threshold=1.5)),
        ("same device", lambda: ops.match_priors(p, meta, ok_gl)),
        ("neg_loss", lambda: ops.hard_negative_mask(torch.rand(5), torch.zeros(5, dtype=torch.long))),
        ("labels", lambda: ops.hard_negative_mask(torch.rand(2, 5), torch.zeros(2, 4, dtype=torch.long))),
        ("neg_pos_ratio", lambda: ops.hard_negative_mask(torch.rand(2, 5), torch.zeros(2, 5, dtype=torch.long), -1)),
        ("scores", lambda: ops.batched_nms(torch.rand(4, 4), torch.rand(3), torch.zeros(4, dtype=torch.long), 0.5)),
        ("idxs", lambda: ops.batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(4), 0.5)),
        ("iou_threshold",
         lambda: ops.batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(4, dtype=torch.long), -0.1)),
        ("scores", lambda: ops.ssd_postprocess(torch.rand(2, P, 4), torch.rand(2, P + 1, 3), p)),
        ("top_k", lambda: ops.ssd_postprocess(torch.rand(2, P, 4), torch.rand(2, P, 3), p, top_k=0)),
        ("score_threshold",
         lambda: ops.ssd_postprocess(torch.rand(2, P, 4), torch.rand(2, P, 3), p, score_threshold=2)),
        ("loc", lambda: ops.ssd_postprocess(torch.rand(2, P, 5), torch.rand(2, P, 3), p)),
    ]


@pytest.mark.parametrize("needle,call", _bad_calls())
def test_bad_input_raises_naming_the_argument(needle, call):
    with pytest.raises((ValueError, RuntimeError, TypeError)) as info:
        call()
    assert needle in str(info.value)


def test_native_op_checks_guard_direct_calls(native):
    with pytest.raises(RuntimeError, match="gt_boxes"):
        native.match_priors(grid_priors(), torch.rand(3, 4), torch.ones(3, 3, dtype=torch.long), 0.5)
    with pytest.raises(RuntimeError, match="iou_threshold"):
        native.batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(4, dtype=torch.long), 2.0)
