"""CUDA kernels held to the CPU kernels and to ssdfast.ops.reference (same tie rules, same results).

Every test is skipped when no CUDA device is visible. Comparisons:
- IoU-driven results (labels, matches, masks, keep lists, detections and their order) are exact;
- box_iou and match_priors boxes are exact (same float32 operations, no FMA contraction);
- values through exp/log (encode, decode, the boxes of ssd_postprocess) are allclose: the CUDA and
  CPU math libraries may differ in the last bit.
"""
from __future__ import annotations

import zlib

import pytest
import torch

from ssdfast import ops
from ssdfast.ops import reference as ref

from .conftest import V, gen, grid_priors, random_boxes, sample_calls, ssd300_like_priors

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

HALF_DTYPES = [torch.float16, torch.bfloat16]
DEV = "cuda"


def cuda(*tensors: torch.Tensor):
    out = tuple(t.to(DEV) for t in tensors)
    return out if len(out) > 1 else out[0]


def cpu(x):
    if isinstance(x, (tuple, list)):
        return type(x)(cpu(t) for t in x)
    return x.cpu()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a.float().cpu(), b.float().cpu(), rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def cuda_native(native):
    """torch.ops.ssdfast with the CUDA kernels registered (fails if the extension lacks them)."""
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=DEV)
    try:
        native.box_iou(a, a)
    except (RuntimeError, NotImplementedError) as exc:  # built without CUDA
        pytest.fail(f"ssdfast._C has no CUDA kernels: {exc}")
    return native


# ----------------------------------------------------------------------------- box_iou, encode, decode


@pytest.mark.parametrize("n,m", [(1, 1), (37, 53), (300, 1000), (0, 5), (5, 0)])
def test_box_iou_exact(cuda_native, n, m):
    g = gen(n * 1000 + m)
    a, b = random_boxes(n, generator=g), random_boxes(m, generator=g)
    if n > 3:
        a[1] = torch.tensor([0.3, 0.3, 0.3, 0.6])  # degenerate
        a[2] = b[0] if m else a[2]  # identical boxes: IoU 1
    out = cuda_native.box_iou(*cuda(a, b))
    assert out.is_cuda and out.shape == (n, m)
    assert torch.equal(out.cpu(), cuda_native.box_iou(a, b))
    assert torch.equal(out.cpu(), ref.box_iou(a, b))


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_box_iou_half_and_mixed(cuda_native, dtype):
    a, b = random_boxes(40, generator=gen(1)).to(dtype), random_boxes(30, generator=gen(2))
    out = cuda_native.box_iou(*cuda(a, b))
    assert out.dtype == torch.float32  # promote(half, float)
    assert torch.equal(out.cpu(), ref.box_iou(a, b))
    out = cuda_native.box_iou(*cuda(a, b.to(dtype)))
    assert out.dtype == dtype and torch.equal(out.cpu(), ref.box_iou(a, b.to(dtype)))


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_DTYPES])
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 2)])
def test_encode_decode(cuda_native, dtype, batch_shape):
    priors = grid_priors()
    boxes = random_boxes(*batch_shape, priors.shape[0], generator=gen(3)).to(dtype)
    boxes[..., 0, :] = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=dtype)  # degenerate: clamped, finite
    enc = cuda_native.encode_boxes(*cuda(boxes, priors), V)
    assert enc.dtype == dtype and enc.shape == boxes.shape and torch.isfinite(enc).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    _close(enc, ref.encode_boxes(boxes, priors, V), tol)
    _close(enc, cuda_native.encode_boxes(boxes, priors, V), tol)
    loc = enc.cpu()
    loc[..., 1, 2:] = 1e4  # exp argument clamped: never inf
    dec = cuda_native.decode_boxes(*cuda(loc, priors), V)
    assert dec.dtype == dtype and torch.isfinite(dec).all()
    _close(dec, ref.decode_boxes(loc, priors, V), tol)
    _close(dec, cuda_native.decode_boxes(loc, priors, V), tol)


def test_coder_empty_and_noncontiguous(cuda_native):
    priors = grid_priors()
    P = priors.shape[0]
    assert cuda_native.encode_boxes(*cuda(torch.zeros(0, P, 4), priors), V).shape == (0, P, 4)
    assert cuda_native.decode_boxes(*cuda(torch.zeros(3, 0, 4), priors[:0]), V).shape == (3, 0, 4)
    loc = torch.randn(P, 2, 4, generator=gen(4)).transpose(0, 1)  # [2, P, 4], non-contiguous
    _close(cuda_native.decode_boxes(*cuda(loc, priors), V), ref.decode_boxes(loc, priors, V))


# ----------------------------------------------------------------------------- match_priors / ssd_targets


def _check_match(native, priors, gt_boxes, gt_labels, thr=0.5):
    """CUDA == CPU native == reference (labels and boxes exact, loc close)."""
    labels, boxes = native.match_priors(*cuda(priors, gt_boxes, gt_labels), thr)
    r_labels, r_boxes = ref.match_priors(priors, gt_boxes, gt_labels, thr)
    c_labels, c_boxes = native.match_priors(priors, gt_boxes, gt_labels, thr)
    assert labels.is_cuda and labels.dtype == torch.int64 and boxes.dtype == gt_boxes.dtype
    assert torch.equal(labels.cpu(), r_labels) and torch.equal(boxes.cpu(), r_boxes)
    assert torch.equal(labels.cpu(), c_labels) and torch.equal(boxes.cpu(), c_boxes)
    t_labels, t_loc = native.ssd_targets(*cuda(priors, gt_boxes, gt_labels), thr, V)
    rt_labels, rt_loc = ref.ssd_targets(priors, gt_boxes, gt_labels, thr, V)
    assert torch.equal(t_labels.cpu(), r_labels)
    tol = 1e-5 if gt_boxes.dtype == torch.float32 else 1e-2
    _close(t_loc, rt_loc, tol)
    _close(t_loc, native.ssd_targets(priors, gt_boxes, gt_labels, thr, V)[1], tol)
    return labels.cpu(), boxes.cpu()


@pytest.mark.parametrize("seed", range(6))
def test_match_priors_random_with_padding(cuda_native, seed):
    g = gen(100 + seed)
    priors = grid_priors()
    B, G = 4, [0, 1, 3, 8, 20, 50][seed]
    gt_boxes = random_boxes(B, G, max_size=0.7, generator=g)
    gt_labels = torch.randint(1, 81, (B, G), generator=g)
    gt_labels[torch.rand(B, G, generator=g) < 0.3] = -1
    if G:
        gt_labels[1] = -1  # an image without gts
    for thr in (0.5, 0.0, 1.0):
        labels, boxes = _check_match(cuda_native, priors, gt_boxes, gt_labels, thr)
        assert (labels[1] == 0).all() and (boxes[1] == 0).all()


def test_match_priors_adversarial(cuda_native):
    priors = grid_priors()
    # Duplicate priors tie on prior index; duplicate gts tie on gt index; degenerate gts force nothing;
    # a gt equal to a prior; int32 labels; label 0 on a valid gt.
    priors = torch.cat((priors, priors[:10]))
    gt = torch.tensor(
        [
            [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.7], [0.6, 0.6, 0.95, 0.95]],
            [[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.25, 0.25], [0.2, 0.2, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    p0 = priors[5]
    gt[1, 3] = torch.cat((p0[:2] - p0[2:] / 2, p0[:2] + p0[2:] / 2))
    for labels in (torch.tensor([[1, 2, 3, 4], [5, 6, 0, 7]]), torch.tensor([[1, 2, 3, -1], [5, -1, 6, 7]], dtype=torch.int32)):
        for thr in (0.5, 0.2):
            _check_match(cuda_native, priors, gt, labels, thr)


def test_match_priors_ties_hand_case(cuda_native):
    # Dyadic coordinates: exact float32 ties (see test_ops.py).
    priors = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25], [0.875, 0.875, 0.125, 0.125]])
    gt = torch.tensor([[[0.25, 0.25, 0.625, 0.625], [0.375, 0.375, 0.75, 0.75]]])
    labels, _ = _check_match(cuda_native, priors, gt, torch.tensor([[3, 4]]), thr=0.2)
    assert labels.tolist() == [[4, 3, 0]]


def test_match_priors_ssd300_batch64(cuda_native, priors_8732):
    g = gen(7)
    gt_boxes = random_boxes(64, 30, max_size=0.6, generator=g)
    gt_labels = torch.randint(1, 81, (64, 30), generator=g)
    counts = torch.randint(0, 31, (64,), generator=g)
    gt_labels[torch.arange(30)[None, :] >= counts[:, None]] = -1
    _check_match(cuda_native, priors_8732, gt_boxes, gt_labels)


def test_match_priors_many_gts_uses_large_shared_memory(cuda_native):
    # 1600 gts need 51 KB of shared memory per block: the opt-in path above 48 KB.
    g = gen(8)
    priors = grid_priors()
    gt_boxes = random_boxes(2, 1600, max_size=0.3, generator=g)
    gt_labels = torch.randint(1, 5, (2, 1600), generator=g)
    _check_match(cuda_native, priors, gt_boxes, gt_labels)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_match_priors_half(cuda_native, dtype):
    priors = grid_priors()
    gt = random_boxes(3, 5, max_size=0.6, generator=gen(11)).to(dtype)
    _check_match(cuda_native, priors.to(dtype), gt, torch.randint(1, 4, (3, 5), generator=gen(12)))


def test_match_priors_empty(cuda_native):
    priors = grid_priors()
    P = priors.shape[0]
    labels, boxes = cuda_native.match_priors(*cuda(priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long)), 0.5)
    assert labels.shape == (2, P) and (labels == 0).all() and boxes.shape == (2, P, 4) and (boxes == 0).all()
    labels, loc = cuda_native.ssd_targets(*cuda(priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long)), 0.5, V)
    _close(loc, ref.ssd_targets(priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5, V)[1])
    labels, loc = cuda_native.ssd_targets(*cuda(priors, torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.long)), 0.5, V)
    assert labels.shape == (0, P) and loc.shape == (0, P, 4)
    labels, loc = cuda_native.ssd_targets(*cuda(priors[:0], torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.long)), 0.5, V)
    assert labels.shape == (2, 0) and loc.shape == (2, 0, 4)


# ----------------------------------------------------------------------------- hard_negative_mask


def _check_mining(native, loss, labels, ratio):
    out = native.hard_negative_mask(*cuda(loss, labels), ratio)
    assert out.is_cuda and out.dtype == torch.bool
    expected = ref.hard_negative_mask(loss, labels, ratio)
    assert torch.equal(out.cpu(), expected)
    assert torch.equal(out.cpu(), native.hard_negative_mask(loss, labels, ratio))


@pytest.mark.parametrize("kind", ["random", "ties", "all_equal", "special", "signed_zero", "dense_negatives"])
@pytest.mark.parametrize("ratio", [0, 1, 3, 2**40])
def test_hard_negative_mask(cuda_native, kind, ratio):
    g = gen(zlib.crc32(f"{kind}-{ratio}".encode()))
    B, P = 5, 1000
    loss = torch.randn(B, P, generator=g)
    if kind == "ties":
        loss = (loss * 2).round()
    elif kind == "all_equal":
        loss = torch.full((B, P), 0.25)
    elif kind == "special":
        loss[:, ::7] = float("nan")
        loss[:, 1::11] = float("-inf")
        loss[:, 2::13] = float("inf")
    elif kind == "signed_zero":
        loss = torch.zeros(B, P)
        loss[:, ::3] = -0.0
    labels = torch.randint(-1, 4, (B, P), generator=g) * (torch.rand(B, P, generator=g) < 0.2)
    if kind == "dense_negatives":
        labels = (torch.rand(B, P, generator=g) < 0.01).long() * 3
    labels[0] = 0  # no positives: nothing mined
    _check_mining(cuda_native, loss, labels, ratio)


@pytest.mark.parametrize("dtype", [*HALF_DTYPES, torch.float64])
def test_hard_negative_mask_dtypes(cuda_native, dtype):
    loss = torch.rand(3, 500, generator=gen(5)).to(dtype)
    labels = (torch.rand(3, 500, generator=gen(6)) < 0.05).int()
    _check_mining(cuda_native, loss, labels, 3)


def test_hard_negative_mask_ssd300_batch64(cuda_native):
    loss = torch.rand(64, 8732, generator=gen(8))
    labels = (torch.rand(64, 8732, generator=gen(9)) < 0.01).long() * 7
    labels[3, :100] = -1
    _check_mining(cuda_native, loss, labels, 3)


def test_hard_negative_mask_empty(cuda_native):
    for shape in ((0, 5), (3, 0)):
        out = cuda_native.hard_negative_mask(*cuda(torch.zeros(shape), torch.zeros(shape, dtype=torch.long)), 3)
        assert out.shape == shape and out.dtype == torch.bool


# ----------------------------------------------------------------------------- batched_nms


def _check_nms(native, boxes, scores, idxs, thr, torchvision_too=False):
    keep = native.batched_nms(*cuda(boxes, scores, idxs), thr)
    assert keep.is_cuda and keep.dtype == torch.int64
    assert torch.equal(keep.cpu(), ref.batched_nms(boxes, scores, idxs, thr))
    assert torch.equal(keep.cpu(), native.batched_nms(boxes, scores, idxs, thr))
    if torchvision_too:
        assert torch.equal(keep, _torchvision_batched_nms(*cuda(boxes.float(), scores.float(), idxs), thr))
    return keep.cpu()


def _torchvision_batched_nms(boxes, scores, idxs, thr):
    # torchvision's per-category loop: its coordinate-offset trick (used below 5000 boxes) shifts the
    # boxes, which perturbs IoUs in the last bits and can flip a decision at the threshold.
    import torchvision.ops.boxes as tvb

    if hasattr(tvb, "_batched_nms_vanilla"):
        return tvb._batched_nms_vanilla(boxes, scores, idxs, thr)
    return tvb.batched_nms(boxes, scores, idxs, thr)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 500, 3000])
@pytest.mark.parametrize("classes", [1, 3, 81, 1000])
def test_batched_nms_random(cuda_native, n, classes):
    g = gen(n * 7 + classes)
    boxes = random_boxes(n, max_size=0.3, generator=g)
    scores = torch.randperm(n, generator=g).float() / n  # distinct: torchvision's order is defined
    idxs = torch.randint(0, classes, (n,), generator=g)
    for thr in (0.5, 0.0, 1.0):
        _check_nms(cuda_native, boxes, scores, idxs, thr, torchvision_too=True)


def test_batched_nms_adversarial(cuda_native):
    g = gen(30)
    n = 700
    boxes = random_boxes(n, max_size=0.5, generator=g)
    boxes[::9] = boxes[0]  # many duplicates
    boxes[5::17] = torch.tensor([0.4, 0.4, 0.3, 0.9])  # degenerate
    scores = (torch.rand(n, generator=g) * 5).floor() / 5  # heavy ties
    scores[::23] = float("nan")  # NaN first, as torch.sort
    idxs = torch.randint(-5, 5, (n,), generator=g).int()  # negative categories, int32
    _check_nms(cuda_native, boxes, scores, idxs, 0.5)
    _check_nms(cuda_native, boxes.half(), scores.half(), idxs.long(), 0.3)


def test_batched_nms_hand_case(cuda_native):
    boxes = torch.tensor(
        [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.6, 0.6, 0.9, 0.9]]
    )
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5, 0.7])
    idxs = torch.tensor([0, 0, 1, 0, 0, 0])
    assert _check_nms(cuda_native, boxes, scores, idxs, 0.5).tolist() == [3, 5, 0, 2]


@pytest.mark.parametrize("n,classes", [(20000, 81), (6000, 1)])
def test_batched_nms_large(cuda_native, n, classes):
    g = gen(n + classes)
    boxes = random_boxes(n, max_size=0.1, generator=g)
    scores = torch.randperm(n, generator=g).float()
    idxs = torch.randint(0, classes, (n,), generator=g)
    keep = cuda_native.batched_nms(*cuda(boxes, scores, idxs), 0.5)
    assert torch.equal(keep, _torchvision_batched_nms(*cuda(boxes, scores, idxs), 0.5))


def test_batched_nms_empty(cuda_native):
    keep = cuda_native.batched_nms(*cuda(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64 and keep.is_cuda


# ----------------------------------------------------------------------------- ssd_postprocess


def _check_post(native, loc, scores, priors, st=0.01, it=0.45, top_k=200, max_det=200, cpu_too=True):
    """CUDA == reference on the same GPU (and == CPU native): num, labels, scores exact; boxes close.

    The reference on the GPU decodes with the same CUDA expf, so its boxes (hence every NMS decision)
    are the kernel's. The CPU's exp may differ in the last bit, which in a large batch can flip an
    IoU sitting at the threshold: large cases compare with the GPU reference only (cpu_too=False).
    """
    args = (V, st, it, top_k, max_det)
    out = native.ssd_postprocess(*cuda(loc, scores, priors), *args)
    assert [t.dtype for t in out] == [loc.dtype, scores.dtype, torch.int64, torch.int64]
    assert [tuple(t.shape) for t in out] == [(loc.shape[0], max_det, 4), (loc.shape[0], max_det), (loc.shape[0], max_det), (loc.shape[0],)]
    expectations = [ref.ssd_postprocess(*cuda(loc, scores, priors), *args)]
    if cpu_too:
        expectations.append(native.ssd_postprocess(loc, scores, priors, *args))
    for expected in expectations:
        assert torch.equal(out[3].cpu(), expected[3].cpu())
        assert torch.equal(out[2].cpu(), expected[2].cpu())
        assert torch.equal(out[1].cpu(), expected[1].cpu())
        _close(out[0], expected[0], 1e-5 if loc.dtype == torch.float32 else 1e-2)
    return cpu(out)


def _inputs(batch, P, classes, seed, peaked=True, sharp=3.0):
    g = gen(seed)
    loc = torch.randn(batch, P, 4, generator=g) * 0.3
    logits = torch.randn(batch, P, classes, generator=g) * sharp
    if peaked:
        logits[..., 0] += 4
    return loc, torch.softmax(logits, -1)


@pytest.mark.parametrize("classes", [2, 5, 21])
@pytest.mark.parametrize("top_k,max_det", [(1, 1), (5, 10), (200, 200), (1000, 50), (1000, 300)])
def test_ssd_postprocess_random(cuda_native, classes, top_k, max_det):
    priors = grid_priors()
    loc, scores = _inputs(3, priors.shape[0], classes, seed=classes * 31 + top_k, peaked=False)
    boxes, sc, labels, num = _check_post(cuda_native, loc, scores, priors, top_k=top_k, max_det=max_det)
    for b in range(3):
        n = int(num[b])
        assert (sc[b, n:] == 0).all() and (labels[b, n:] == 0).all() and (boxes[b, n:] == 0).all()


def test_ssd_postprocess_many_candidates_per_class(cuda_native, priors_8732):
    # Dense scores: > 256 candidates per class, so the class kernel takes several chunks (top_k = P),
    # and more than 1024 detections, so the merge takes several chunks too.
    loc, scores = _inputs(2, 8732, 6, seed=3, peaked=False, sharp=0.5)
    for top_k, max_det in ((8732, 2000), (400, 3000), (300, 100)):
        _check_post(cuda_native, loc, scores, priors_8732, top_k=top_k, max_det=max_det, cpu_too=False)


def test_ssd_postprocess_thresholds(cuda_native):
    priors = grid_priors()
    loc, scores = _inputs(2, priors.shape[0], 4, seed=5, peaked=False)
    for st, it in ((0.0, 0.45), (1.0, 0.45), (0.2, 0.0), (0.2, 1.0)):
        _check_post(cuda_native, loc, scores, priors, st=st, it=it, top_k=50, max_det=80)


def test_ssd_postprocess_ties_nan_and_hand_case(cuda_native):
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])
    loc = torch.zeros(1, 3, 4)
    scores = torch.tensor([[[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.9, 0.05, 0.05]]])
    boxes, sc, labels, num = _check_post(cuda_native, loc, scores, priors, max_det=5)
    assert num.tolist() == [4] and labels[0, :4].tolist() == [1, 2, 1, 2]
    # Quantized scores (heavy ties) and NaN scores (never candidates).
    P = grid_priors().shape[0]
    loc, scores = _inputs(2, P, 5, seed=6, peaked=False)
    scores = (scores * 8).round() / 8
    scores[:, ::7, 1:] = float("nan")
    _check_post(cuda_native, loc, scores, grid_priors(), top_k=20, max_det=30)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_ssd_postprocess_half(cuda_native, priors_8732, dtype):
    loc, scores = _inputs(2, 8732, 21, seed=7)
    _check_post(cuda_native, loc.to(dtype), scores.to(dtype), priors_8732)


@pytest.mark.slow
def test_ssd_postprocess_batch64_coco(cuda_native, priors_8732):
    loc, scores = _inputs(64, 8732, 81, seed=8)
    _check_post(cuda_native, loc, scores, priors_8732, cpu_too=False)
    loc, scores = _inputs(8, 8732, 81, seed=9, peaked=False, sharp=1.0)  # dense: thousands of candidates per class
    _check_post(cuda_native, loc, scores, priors_8732, cpu_too=False)


def test_ssd_postprocess_empty(cuda_native):
    priors = grid_priors()
    P = priors.shape[0]
    out = cuda_native.ssd_postprocess(*cuda(torch.zeros(0, P, 4), torch.zeros(0, P, 5), priors), V, 0.01, 0.45, 200, 7)
    assert [tuple(t.shape) for t in out] == [(0, 7, 4), (0, 7), (0, 7), (0,)]
    out = cuda_native.ssd_postprocess(*cuda(torch.zeros(2, P, 4), torch.ones(2, P, 1), priors), V, 0.01, 0.45, 200, 7)
    assert out[3].tolist() == [0, 0] and (out[0] == 0).all()
    out = cuda_native.ssd_postprocess(*cuda(torch.zeros(2, P, 4), torch.zeros(2, P, 5), priors), V, 0.01, 0.45, 200, 7)
    assert out[3].tolist() == [0, 0] and (out[1] == 0).all()


# ----------------------------------------------------------------------------- streams, syncs, graphs, compile


def test_ops_other_than_nms_do_not_synchronize(cuda_native, priors_8732):
    priors = priors_8732.to(DEV)
    gt = random_boxes(8, 5, generator=gen(60)).to(DEV)
    gl = torch.randint(1, 21, (8, 5), generator=gen(61)).to(DEV)
    loc, scores = cuda(*_inputs(8, 8732, 21, seed=62))
    loss = torch.rand(8, 8732, device=DEV)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels, _ = cuda_native.ssd_targets(priors, gt, gl, 0.5, V)
        cuda_native.match_priors(priors, gt, gl, 0.5)
        cuda_native.hard_negative_mask(loss, labels, 3)
        cuda_native.ssd_postprocess(loc, scores, priors, V, 0.01, 0.45, 200, 200)
        cuda_native.box_iou(gt[0], gt[1])
        cuda_native.decode_boxes(loc, priors, V)
        cuda_native.encode_boxes(gt[:, :1].expand(8, 8732, 4), priors, V)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_side_stream(cuda_native, priors_8732):
    loc, scores = _inputs(4, 8732, 21, seed=63)
    expected = cuda_native.ssd_postprocess(*cuda(loc, scores, priors_8732), V, 0.01, 0.45, 200, 100)
    stream = torch.cuda.Stream()
    inputs = cuda(loc, scores, priors_8732)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = cuda_native.ssd_postprocess(*inputs, V, 0.01, 0.45, 200, 100)
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(out, expected):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device(cuda_native):
    g = gen(64)
    a, b = random_boxes(30, generator=g), random_boxes(40, generator=g)
    out = cuda_native.box_iou(a.to("cuda:1"), b.to("cuda:1"))
    assert out.device == torch.device("cuda:1") and torch.equal(out.cpu(), ref.box_iou(a, b))
    loc, scores = _inputs(2, grid_priors().shape[0], 5, seed=65)
    out = cuda_native.ssd_postprocess(loc.to("cuda:1"), scores.to("cuda:1"), grid_priors().to("cuda:1"), V, 0.01, 0.45, 50, 20)
    assert out[0].device == torch.device("cuda:1")
    assert torch.equal(out[2].cpu(), ref.ssd_postprocess(loc, scores, grid_priors(), V, 0.01, 0.45, 50, 20)[2])


def test_ssd_postprocess_cuda_graph_capture(cuda_native, priors_8732):
    priors = priors_8732.to(DEV)
    loc0, scores0 = cuda(*_inputs(8, 8732, 21, seed=66))
    static_loc, static_scores = loc0.clone(), scores0.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture (allocator, lazy init)
        for _ in range(2):
            cuda_native.ssd_postprocess(static_loc, static_scores, priors, V, 0.01, 0.45, 200, 200)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = cuda_native.ssd_postprocess(static_loc, static_scores, priors, V, 0.01, 0.45, 200, 200)
    for seed in (67, 68):
        loc, scores = cuda(*_inputs(8, 8732, 21, seed=seed))
        static_loc.copy_(loc)
        static_scores.copy_(scores)
        graph.replay()
        expected = cuda_native.ssd_postprocess(loc, scores, priors, V, 0.01, 0.45, 200, 200)
        for a, b in zip(static_out, expected):
            assert torch.equal(a, b)


@pytest.mark.parametrize("index", range(8), ids=lambda i: ["box_iou", "encode_boxes", "decode_boxes", "match_priors", "ssd_targets", "hard_negative_mask", "batched_nms", "ssd_postprocess"][i])
def test_opcheck_cuda(cuda_native, index):
    name, args = sample_calls(70, DEV)[index]
    op = getattr(torch.ops.ssdfast, name).default
    test_utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name != "batched_nms":  # data-dependent output size
        test_utils += ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(op, args, test_utils=test_utils)


def test_torch_compile_fullgraph_cuda(cuda_native):
    priors = grid_priors().to(DEV)
    g = gen(71)
    gt = random_boxes(2, 3, generator=g).to(DEV)
    gl = torch.tensor([[1, 2, -1], [3, -1, -1]], device=DEV)
    conf = torch.randn(2, priors.shape[0], 4, generator=g).to(DEV)
    loc = (torch.randn(2, priors.shape[0], 4, generator=g) * 0.1).to(DEV)

    def fn(conf, loc, gt, gl):
        labels, targets = ops.ssd_targets(priors, gt, gl)
        neg = -torch.log_softmax(conf, -1)[..., 0]
        mask = ops.hard_negative_mask(neg, labels, 3)
        det = ops.ssd_postprocess(loc, torch.softmax(conf, -1), priors)
        return labels, targets, mask, det

    exp = fn(conf, loc, gt, gl)
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        got = torch.compile(fn, fullgraph=True, backend=backend)(conf, loc, gt, gl)
        assert torch.equal(got[0], exp[0]) and torch.equal(got[2], exp[2])
        _close(got[1], exp[1])
        for a, b in zip(got[3], exp[3]):
            assert torch.equal(a, b)


def test_public_wrappers_route_cuda_tensors_to_cuda_kernels(cuda_native):
    # ssdfast.ops on CUDA tensors: same answers as the reference (the wrapper dispatches natively).
    priors = ssd300_like_priors()
    loc, scores = _inputs(2, priors.shape[0], 21, seed=72)
    out = ops.ssd_postprocess(*cuda(loc, scores, priors))
    exp = ref.ssd_postprocess(*cuda(loc, scores, priors))
    assert torch.equal(out[2], exp[2]) and torch.equal(out[3], exp[3])
