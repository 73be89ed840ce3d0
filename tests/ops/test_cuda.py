"""CUDA kernels held to the CPU kernels and to ssdfast.ops.reference (same tie rules, same results).

Every test is skipped when no CUDA device is visible. Comparisons:
- IoU-driven results (labels, matches, masks, keep lists, detections and their order) are exact;
- box_iou and match_priors boxes are exact (same float32 operations, no FMA contraction);
- values through exp/log (encode, decode, the boxes of ssd_postprocess) are allclose: the CUDA and
  CPU math libraries may differ in the last bit.
"""
from __future__ import annotations

import threading
import zlib

import pytest
import torch

from ssdfast import ops
from ssdfast.ops import reference as ref
from ssdfast.ops.sample_cases import make_post_inputs

from .conftest import V, gen, grid_priors, random_boxes, sample_calls

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

HALF_DTYPES = [torch.float16, torch.bfloat16]
DEV = "cuda"
OP_NAMES = [name for name, _ in sample_calls(0)]


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


def test_box_iou_grid_stride_rows(cuda_native):
    # More than 65535 * 8 = 524,280 rows: the grid's y dimension is capped and rows are grid-strided.
    g = gen(9)
    a, b = random_boxes(600_000, generator=g), random_boxes(37, generator=g)
    a[-1] = b[3]  # IoU 1 in the last row, reached only by the stride loop
    out = cuda_native.box_iou(*cuda(a, b))
    assert out.shape == (600_000, 37)
    assert torch.equal(out.cpu(), ref.box_iou(a, b))
    assert out[-1, 3].item() == 1.0


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
    for labels in (torch.tensor([[1, 2, 3, 4], [5, 6, 0, 7]]),
                   torch.tensor([[1, 2, 3, -1], [5, -1, 6, 7]], dtype=torch.int32)):
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


def test_match_priors_shared_memory_limit_is_a_clear_error(cuda_native):
    # G gts need 32 G bytes of shared memory per block: one more than the device allows is refused with
    # a message, not a failed launch.
    optin = torch.cuda.get_device_properties(DEV).shared_memory_per_block_optin
    G = optin // 32 + 1
    gt_boxes = random_boxes(1, G, generator=gen(13))
    with pytest.raises(RuntimeError, match="shared memory"):
        cuda_native.match_priors(*cuda(grid_priors(), gt_boxes, torch.ones(1, G, dtype=torch.long)), 0.5)


def test_concurrent_calls_with_different_shared_memory_sizes(cuda_native):
    # Host threads launching the same kernels with different dynamic shared-memory sizes at once: the
    # opt-in attribute is only ever raised, so no launch can find it lowered by another thread.
    priors = grid_priors()
    cases = []
    for i, G in enumerate((8, 1600, 400, 1900, 60, 1200)):  # 0.3 to 61 KB: within any GPU's opt-in
        g = gen(200 + i)
        gt_boxes = random_boxes(2, G, max_size=0.3, generator=g)
        gt_labels = torch.randint(1, 5, (2, G), generator=g)
        boxes = random_boxes(300 * (i + 1), max_size=0.2, generator=g)
        scores = torch.rand(boxes.shape[0], generator=g)
        idxs = torch.randint(0, 1 + 3 * i, (boxes.shape[0],), generator=g)  # different largest categories
        cases.append(
            (
                cuda(priors, gt_boxes, gt_labels),
                ref.match_priors(priors, gt_boxes, gt_labels, 0.5),
                cuda(boxes, scores, idxs),
                ref.batched_nms(boxes, scores, idxs, 0.5),
            )
        )
    barrier = threading.Barrier(len(cases))
    errors: list[BaseException] = []

    def work(case):
        match_args, (exp_labels, exp_boxes), nms_args, exp_keep = case
        stream = torch.cuda.Stream()
        try:
            barrier.wait()
            with torch.cuda.stream(stream):
                for _ in range(20):
                    labels, boxes = cuda_native.match_priors(*match_args, 0.5)
                    keep = cuda_native.batched_nms(*nms_args, 0.5)
                    assert torch.equal(labels.cpu(), exp_labels) and torch.equal(boxes.cpu(), exp_boxes)
                    assert torch.equal(keep.cpu(), exp_keep)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.cuda.synchronize()
    assert not errors, errors[0]


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_match_priors_half(cuda_native, dtype):
    priors = grid_priors()
    gt = random_boxes(3, 5, max_size=0.6, generator=gen(11)).to(dtype)
    _check_match(cuda_native, priors.to(dtype), gt, torch.randint(1, 4, (3, 5), generator=gen(12)))


def test_match_priors_empty(cuda_native):
    priors = grid_priors()
    P = priors.shape[0]
    labels, boxes = cuda_native.match_priors(*cuda(priors, torch.zeros(2, 0, 4),
                                                   torch.zeros(2, 0, dtype=torch.long)), 0.5)
    assert labels.shape == (2, P) and (labels == 0).all() and boxes.shape == (2, P, 4) and (boxes == 0).all()
    labels, loc = cuda_native.ssd_targets(*cuda(priors, torch.zeros(2, 0, 4),
                                                torch.zeros(2, 0, dtype=torch.long)), 0.5, V)
    _close(loc, ref.ssd_targets(priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5, V)[1])
    labels, loc = cuda_native.ssd_targets(*cuda(priors, torch.zeros(0, 3, 4),
                                                torch.zeros(0, 3, dtype=torch.long)), 0.5, V)
    assert labels.shape == (0, P) and loc.shape == (0, P, 4)
    labels, loc = cuda_native.ssd_targets(*cuda(priors[:0], torch.zeros(2, 3, 4),
                                                torch.ones(2, 3, dtype=torch.long)), 0.5, V)
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


def test_hard_negative_mask_nan_at_prior_zero(cuda_native):
    # NaN ranks as the largest loss. At prior 0 its key was the largest possible one, which the radix
    # select's exclusive bound left out while the marking pass still took it: one negative too many,
    # and with k = num_neg - 1 and a -inf negative the whole row (ignored priors included).
    loss = torch.tensor([[float("nan"), 1.0, float("-inf"), 0.5, 0.3, 2.0]])
    labels = torch.tensor([[0, 0, 0, 1, -1, 0]])  # 4 negatives, 1 positive: ratio 3 gives k = num_neg - 1
    _check_mining(cuda_native, loss, labels, 3)
    assert ref.hard_negative_mask(loss, labels, 3).tolist() == [[True, True, False, True, False, True]]
    # Random rows with NaN at prior 0 (and elsewhere), -inf negatives and 40 ignored priors; one positive
    # per row, so every row has num_neg = P - 41 and ratio num_neg - 1 gives k = num_neg - 1 in each.
    g = gen(14)
    B, P = 64, 300
    loss = torch.randn(B, P, generator=g)
    loss[:, 0] = float("nan")
    loss[:, 5::37] = float("nan")
    loss[:, 3::11] = float("-inf")
    labels = torch.zeros(B, P, dtype=torch.long)
    for row in range(B):
        perm = torch.randperm(P - 1, generator=g) + 1  # prior 0 stays a negative
        labels[row, perm[:40]] = -1
        labels[row, perm[40]] = 1 + row % 3
    num_neg = P - 41
    for ratio in (1, 3, num_neg - 2, num_neg - 1, num_neg):
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
        [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9],
         [0.6, 0.6, 0.9, 0.9]]
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


def _peak_bytes_during(fn):
    """(result, peak CUDA memory allocated during fn beyond what was allocated before)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - before


def test_batched_nms_100k_boxes_memory_bounded_by_largest_category(cuda_native):
    # 100k boxes in 80 categories: the IoU mask is sized by the categories (about sum n_c^2 / 128 words
    # plus a word or two per box, ~8 MB here), not N x N / 64 words (1.25 GB).
    g = gen(40)
    n = 100_000
    boxes = random_boxes(n, max_size=0.05, generator=g)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 80, (n,), generator=g)
    args = cuda(boxes, scores, idxs)
    keep, peak = _peak_bytes_during(lambda: cuda_native.batched_nms(*args, 0.5))
    assert peak < 64 * 2**20, f"batched_nms used {peak / 2**20:.0f} MiB at 100k boxes"
    assert torch.equal(keep, _torchvision_batched_nms(*args, 0.5))
    assert torch.equal(keep.cpu(), cuda_native.batched_nms(boxes, scores, idxs, 0.5))  # the CPU kernel


@pytest.mark.parametrize("n,classes", [(30_000, 20_000), (20_000, 1), (5_000, 2)])
def test_batched_nms_many_and_large_categories(cuda_native, n, classes):
    # Many categories of a few boxes (many runs per 64-box row block); one category of 20k boxes (a run
    # of 313 mask words, walked by one block); two categories.
    g = gen(n + classes)
    boxes = random_boxes(n, max_size=0.2, generator=g)
    scores = torch.rand(n, generator=g)
    scores[::17] = scores[1::17]  # ties: lower index first
    idxs = torch.randint(0, classes, (n,), generator=g) * 7 - 3  # sparse and negative categories
    keep = cuda_native.batched_nms(*cuda(boxes, scores, idxs), 0.5)
    # The CPU kernel (held to the reference by test_ops.py): the reference loops over the categories in
    # Python, too slow at 20k of them. torchvision's order among ties is undefined.
    assert torch.equal(keep.cpu(), cuda_native.batched_nms(boxes, scores, idxs, 0.5))
    if classes <= 2:
        assert torch.equal(keep.cpu(), ref.batched_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_categories_equal_in_their_low_32_bits(cuda_native):
    # idxs 2^32 apart share the packed sort key's 32 category bits: detected, and grouped by the full
    # category instead (two stable sorts).
    g = gen(41)
    n = 3000
    boxes = random_boxes(n, max_size=0.3, generator=g)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 5, (n,), generator=g) + (torch.randint(0, 2, (n,), generator=g) << 32)
    _check_nms(cuda_native, boxes, scores, idxs, 0.5)
    _check_nms(cuda_native, boxes, scores, idxs - (1 << 62), 0.3)


def test_batched_nms_global_memory_walk(cuda_native, monkeypatch):
    # A category too large for the walk kernel's shared memory keeps its removed bits in global memory.
    # Real inputs need ~400k boxes in one category for that; SSDFAST_NMS_SMEM_LIMIT forces it here.
    monkeypatch.setenv("SSDFAST_NMS_SMEM_LIMIT", "8")
    g = gen(42)
    for n, classes in ((5000, 1), (4000, 3), (700, 40)):
        boxes = random_boxes(n, max_size=0.2, generator=g)
        scores = (torch.rand(n, generator=g) * 50).floor()  # ties
        idxs = torch.randint(0, classes, (n,), generator=g)
        _check_nms(cuda_native, boxes, scores, idxs, 0.5)


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
    assert [tuple(t.shape) for t in out] == [(loc.shape[0], max_det, 4), (loc.shape[0], max_det),
                                             (loc.shape[0], max_det), (loc.shape[0],)]
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
    return make_post_inputs(batch, P, classes, gen(seed), peaked=peaked, sharp=sharp)


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
    # Dense scores: > 256 candidates per class, so the class kernel takes several chunks (top_k = P:
    # more than its shared memory holds, so every pass reads the score column again; top_k 400 and 300:
    # the keys cut to the top_k while the column is read), and more than 1024 detections, so the merge
    # takes several chunks too.
    loc, scores = _inputs(2, 8732, 6, seed=3, peaked=False, sharp=0.5)
    for top_k, max_det in ((8732, 2000), (400, 3000), (300, 100)):
        _check_post(cuda_native, loc, scores, priors_8732, top_k=top_k, max_det=max_det, cpu_too=False)


def test_ssd_postprocess_untrained_model_every_prior_a_candidate(cuda_native, priors_8732):
    # An untrained model's near-uniform scores (~1/81 > 0.01): ~8,560 candidates in every class, more than
    # the 3,584 keys the class kernel holds in shared memory, so each class's keys are cut to its top_k
    # while its score column is read (once). The case bench_cuda's "untrained model" row times.
    loc, scores = _inputs(4, 8732, 81, seed=15, peaked=False, sharp=0.1)
    assert ((scores[..., 1:] > 0.01).sum(1) > 3584).all()
    _check_post(cuda_native, loc, scores, priors_8732, cpu_too=False)


@pytest.mark.parametrize("order", ["ascending", "descending", "tied"])
@pytest.mark.parametrize("top_k", [1, 200, 2560, 2561])
def test_ssd_postprocess_candidates_cut_while_reading(cuda_native, priors_8732, order, top_k):
    # Every prior a candidate, in score orders that stress the cut of the shared-memory keys: ascending
    # along the priors (each batch of 1,024 appends keys better than all before, so the keys are cut
    # again and again, up to the last slot), descending (nothing is appended after the first cut), and
    # four tied levels (the prior index decides). 2560 is the largest top_k the keys are cut to
    # (3584 - 1024); 2561 reads the column again on every pass instead; 1 keeps a single key.
    P = 8732
    g = gen(16)
    ramp = {
        "ascending": torch.arange(P, dtype=torch.float32) / P,
        "descending": torch.arange(P, 0, -1, dtype=torch.float32) / P,
        "tied": torch.randint(0, 4, (P,), generator=g).float() / 4,
    }[order]
    scores = torch.empty(2, P, 3)
    for b in range(2):
        for c in (1, 2):
            scores[b, :, c] = 0.02 + 0.4 * ramp.roll((2 * b + c) * P // 5)
    scores[..., 0] = 1 - scores[..., 1:].sum(-1)
    loc = torch.randn(2, P, 4, generator=g) * 0.3
    _check_post(cuda_native, loc, scores, priors_8732, top_k=top_k, max_det=300, cpu_too=False)


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


def test_ssd_postprocess_scratch_memory(cuda_native, priors_8732):
    # B=64, C=81, P=8732: the scratch is a candidate bitmask (5.6 MB) and the kept entries (64 x 80 x 200
    # x 8 bytes = 8 MB), not a B x (C-1) x P array of 32-bit keys (179 MB).
    loc, scores = cuda(*_inputs(64, 8732, 81, seed=12))
    priors = priors_8732.to(DEV)
    out, peak = _peak_bytes_during(lambda: cuda_native.ssd_postprocess(loc, scores, priors, V, 0.01, 0.45, 200, 200))
    assert peak < 32 * 2**20, f"ssd_postprocess used {peak / 2**20:.0f} MiB of scratch"
    expected = ref.ssd_postprocess(loc[:4], scores[:4], priors, V, 0.01, 0.45, 200, 200)
    for a, b in zip(out, expected):
        if a.dtype == torch.float32 and a.dim() == 3:
            _close(a[:4], b)
        else:
            assert torch.equal(a[:4], b)


def test_ssd_postprocess_open_images_classes(cuda_native, priors_8732):
    # 601 classes (Open Images): 600 blocks per image; flat-ish scores, so some classes have more
    # candidates than fit in shared memory (their keys cut to the top_k while read) and others fewer.
    loc, scores = _inputs(2, 8732, 601, seed=13, peaked=False, sharp=2.0)
    scores[0, :, 1:50] = torch.rand(8732, 49, generator=gen(14)) * 0.5  # dense classes: > 3584 candidates
    _check_post(cuda_native, loc, scores, priors_8732, top_k=100, max_det=300, cpu_too=False)


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


def _equal_or_close(got, expected) -> None:
    got, expected = cpu(got), cpu(expected)
    if isinstance(expected, torch.Tensor):
        got, expected = (got,), (expected,)
    for a, b in zip(got, expected):
        if a.is_floating_point():
            _close(a, b)
        else:
            assert torch.equal(a, b)


@pytest.mark.parametrize("index", range(8), ids=lambda i: OP_NAMES[i])
def test_kernels_run_on_the_current_stream(cuda_native, index):
    # The op runs on a side stream that is held at a gate (an event recorded after a ~0.2 s sleep on a
    # third stream), and its inputs are written on that side stream after the gate. A kernel launched on
    # any other stream (the legacy default stream, a stream of its own) does not wait for the gate, so
    # it runs early on the inputs' old contents (zeros) and the result is wrong.
    name, args = sample_calls(80, "cpu")[index]
    expected = getattr(ref, name)(*args)
    good = [a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args]
    staged = [torch.zeros_like(a) if isinstance(a, torch.Tensor) else a for a in good]
    op = getattr(cuda_native, name)
    gate_stream, side = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(side):
        # Warm-up on the side stream: kernels loaded, and the side stream's cached blocks (no cudaMalloc
        # in the gated call) hold this call's intermediates, not those of a call on the good inputs.
        op(*staged)
    torch.cuda.synchronize()
    with torch.cuda.stream(gate_stream):
        torch.cuda._sleep(400_000_000)  # ~0.2 s at 2 GHz
    gate = torch.cuda.Event()
    gate.record(gate_stream)
    side.wait_event(gate)
    with torch.cuda.stream(side):
        for dst, src in zip(staged, good):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)
        out = op(*staged)
    gate_open_early = gate.query()
    torch.cuda.synchronize()
    if name != "batched_nms":  # batched_nms waits for its own stream (the kept count): the gate is open by then
        assert not gate_open_early, "the sleep ended before the op was queued: the test proves nothing"
    _equal_or_close(out, expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device(cuda_native):
    g = gen(64)
    a, b = random_boxes(30, generator=g), random_boxes(40, generator=g)
    out = cuda_native.box_iou(a.to("cuda:1"), b.to("cuda:1"))
    assert out.device == torch.device("cuda:1") and torch.equal(out.cpu(), ref.box_iou(a, b))
    loc, scores = _inputs(2, grid_priors().shape[0], 5, seed=65)
    out = cuda_native.ssd_postprocess(loc.to("cuda:1"), scores.to("cuda:1"), grid_priors().to("cuda:1"),
                                      V, 0.01, 0.45, 50, 20)
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


@pytest.mark.parametrize("index", range(8), ids=lambda i: OP_NAMES[i])
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


def test_public_wrappers_route_cuda_tensors_to_cuda_kernels(cuda_native, monkeypatch):
    # ssdfast.ops on CUDA tensors runs the registered CUDA kernels: the native backend is loaded, every
    # op has a CUDA kernel, and a reference that raises is never called (no silent fallback).
    from ssdfast.ops import reference as reference_module

    assert ops.backend() == "native"
    for name in OP_NAMES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ssdfast::{name}", "CUDA"), name
    calls = sample_calls(73, DEV)
    expected = {name: getattr(reference_module, name)(*args) for name, args in calls}

    def no_fallback(*args, **kwargs):
        raise AssertionError("ssdfast.ops fell back to the reference for CUDA tensors")

    for name in OP_NAMES:
        monkeypatch.setattr(reference_module, name, no_fallback)
    for name, args in calls:
        out = getattr(ops, name)(*args)
        leaves = out if isinstance(out, tuple) else (out,)
        assert all(t.is_cuda for t in leaves), name
        _equal_or_close(out, expected[name])
