"""Sample inputs of every op, shared by ``python -m ssdfast.check``, the op tests and the benchmarks:
small, large and adversarial arguments (ties, NaN, infinities, empty tensors) and the tolerance of
each output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import reference
from .settings import EVALUATION

__all__ = [
    "OPS", "TOL", "TOLS", "V", "Case", "cases",
    "make_generator", "make_boxes", "make_small_priors", "make_ssd300_priors", "make_gt", "make_mining",
    "make_mining_nan_case", "make_nms_inputs",
    "make_post_inputs",
]

V = (0.1, 0.2)
#: ssd_postprocess's thresholds in the cases: its defaults.
ST, IT = EVALUATION.score_threshold, EVALUATION.iou_threshold
OPS = tuple(reference.__all__)  # every function of the reference is an op's twin
TOL = 1e-5  # floats through exp/log (encode, decode, the boxes of ssd_postprocess)
#: Per op, the tolerance of each output: None or missing = exact (labels, masks, keep lists, IoUs).
TOLS: dict[str, tuple[float | None, ...]] = {
    "encode_boxes": (TOL,),
    "decode_boxes": (TOL,),
    "ssd_targets": (None, TOL),  # labels exact, encoded offsets close
    "ssd_postprocess": (TOL,),  # boxes close; counts, labels, scores exact
}


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (every input below is drawn from one)."""
    return torch.Generator().manual_seed(seed)


def make_boxes(*shape: int, g: torch.Generator | None, max_size: float = 0.4) -> Tensor:
    """Valid xyxy boxes in [0, 1]: ``[*shape, 4]``."""
    xy = torch.rand(*shape, 2, generator=g) * (1 - max_size)
    wh = torch.rand(*shape, 2, generator=g) * max_size + 1e-3
    return torch.cat((xy, xy + wh), -1)


def make_small_priors() -> Tensor:
    """252 cxcywh priors: square and 2:1 boxes on 8x8, 4x4 and 2x2 grids."""
    out = []
    for n, s in ((8, 0.2), (4, 0.45), (2, 0.8)):
        c = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        for w, h in ((s, s), (s * 1.41, s / 1.41), (s / 1.41, s * 1.41)):
            out.append(torch.stack((cx.flatten(), cy.flatten(), torch.full((n * n,), w), torch.full((n * n,), h)), -1))
    return torch.cat(out)


def make_ssd300_priors() -> Tensor:
    """SSD300's 8732 priors (cxcywh), as vgg16-ssd uses them."""
    from ..priors import VGG_SSD300_SPEC, generate_priors

    return generate_priors(VGG_SSD300_SPEC)


def _xyxy(priors: Tensor) -> Tensor:
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def make_gt(batch: int, max_gt: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Padded ground truth: ``[B, G, 4]`` boxes and labels with -1 padding, image 1 without gts."""
    boxes = make_boxes(batch, max_gt, g=g, max_size=0.6)
    labels = torch.randint(1, 81, (batch, max_gt), generator=g)
    counts = torch.randint(0, max_gt + 1, (batch,), generator=g)
    labels[torch.arange(max_gt)[None, :] >= counts[:, None]] = -1
    if batch > 1:
        labels[1] = -1
    return boxes, labels


def make_mining(batch: int, priors: int, g: torch.Generator, special: bool) -> tuple[Tensor, Tensor]:
    loss = torch.randn(batch, priors, generator=g)
    if special:  # NaN (the largest loss) at prior 0 and elsewhere, infinities, ties, signed zeros
        loss = (loss * 2).round()
        loss[:, 0] = float("nan")
        loss[:, 7::31] = float("nan")
        loss[:, 1::11] = float("-inf")
        loss[:, 2::13] = float("inf")
        loss[:, 3::17] = -0.0
    labels = torch.randint(-1, 4, (batch, priors), generator=g) * (torch.rand(batch, priors, generator=g) < 0.05)
    labels[:, 0] = 0
    return loss, labels


def make_mining_nan_case() -> tuple[Tensor, Tensor, int]:
    """hard_negative_mask's arguments with NaN at prior 0, a -inf negative, an ignored prior and
    k = num_neg - 1 (where a NaN key once left the selection one short)."""
    loss = torch.tensor([[float("nan"), 1.0, float("-inf"), 0.5, 0.3, 2.0]])
    return loss, torch.tensor([[0, 0, 0, 1, -1, 0]]), 3


def make_nms_inputs(n: int, classes: int, g: torch.Generator,
                    adversarial: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    boxes = make_boxes(n, g=g, max_size=0.3)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, classes, (n,), generator=g)
    if adversarial:
        boxes[::9] = boxes[0].clone()  # duplicates
        boxes[5::17] = torch.tensor([0.4, 0.4, 0.3, 0.9])  # degenerate
        scores = (scores * 5).floor() / 5  # heavy ties: lower index first
        scores[::23] = float("nan")  # NaN first, as torch.sort
        idxs = idxs - classes // 2  # negative categories
    return boxes, scores, idxs


def make_post_inputs(batch: int, priors: int, classes: int, g: torch.Generator, peaked: bool = True,
                     sharp: float = 3.0):
    loc = torch.randn(batch, priors, 4, generator=g) * 0.3
    logits = torch.randn(batch, priors, classes, generator=g) * sharp
    if peaked:  # like a trained model: most priors confidently background
        logits[..., 0] += 4
    return loc, torch.softmax(logits, -1)


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    op: str
    label: str
    make: Callable[[], tuple]  # the op's arguments, tensors on the CPU
    large: bool = False  # skipped by --quick
    tols: Sequence[float | None] = ()  # per output: None = exact; missing = exact (TOLS[op])


def cases(device: torch.device, quick: bool) -> list[Case]:
    """The checks run on ``device`` (sizes grow on a GPU, where the reference is fast too)."""
    gpu = device.type == "cuda"
    out: list[Case] = []

    def add(op: str, label: str, make: Callable[[], tuple], large: bool = False) -> None:
        if not (quick and large):
            out.append(Case(op, label, make, large, TOLS.get(op, ())))

    sp = make_small_priors()
    big = make_ssd300_priors()
    P = big.shape[0]

    # box_iou: exact (same float32 operations, no FMA contraction)
    def iou_small():
        g = make_generator(1)
        a, b = make_boxes(5, g=g), make_boxes(7, g=g)
        a[1] = torch.tensor([0.3, 0.3, 0.3, 0.6])  # degenerate: IoU 0, never NaN
        a[2] = b[0]  # identical: IoU 1
        return a, b

    add("box_iou", "5 x 7, degenerate and identical boxes", iou_small)
    add("box_iou", "empty: 0 x 5", lambda: (torch.zeros(0, 4), make_boxes(5, g=make_generator(2))))
    add("box_iou", f"{P} priors x 200 boxes", lambda: (_xyxy(big), make_boxes(200, g=make_generator(3))), large=True)
    if gpu:  # more than 65535 * 8 rows: the kernel's grid-stride loop
        add("box_iou", "600000 x 5 (grid-stride rows)",
            lambda: (make_boxes(600_000, g=make_generator(4)), make_boxes(5, g=make_generator(5))), large=True)

    # encode / decode: close (exp/log)
    def enc(batch, priors, seed):
        def make():
            boxes = make_boxes(batch, priors.shape[0], g=make_generator(seed))
            boxes[..., 0, :] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # degenerate: clamped, finite
            return boxes, priors, V

        return make

    def dec(batch, priors, seed):
        def make():
            loc = torch.randn(batch, priors.shape[0], 4, generator=make_generator(seed)) * 0.5
            loc[..., 1, 2:] = 1e4  # exp argument clamped: never inf
            return loc, priors, V

        return make

    add("encode_boxes", f"B=2, P={sp.shape[0]}, degenerate box", enc(2, sp, 6))
    add("encode_boxes", f"B={64 if gpu else 8}, P={P}", enc(64 if gpu else 8, big, 7), large=True)
    add("decode_boxes", f"B=2, P={sp.shape[0]}, clamped exp", dec(2, sp, 8))
    add("decode_boxes", f"B={64 if gpu else 8}, P={P}", dec(64 if gpu else 8, big, 9), large=True)

    # match_priors / ssd_targets: labels and boxes exact, encoded loc close
    def match_adversarial():
        priors = torch.cat((sp, sp[:10]))  # duplicate priors: ties on prior index
        gt = torch.tensor(
            [
                [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.7], [0.6, 0.6, 0.95, 0.95]],
                [[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.25, 0.25], [0.2, 0.2, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0]],
            ]
        )  # duplicate gts (later gt wins a shared prior), a degenerate gt (forces nothing), a tiny gt
        p0 = priors[5]
        gt[1, 3] = torch.cat((p0[:2] - p0[2:] / 2, p0[:2] + p0[2:] / 2))  # a gt equal to a prior
        labels = torch.tensor([[1, 2, 3, -1], [5, 6, 0, 7]])
        return priors, gt, labels, 0.5

    def match_random(batch, max_gt, seed):
        def make():
            gt, labels = make_gt(batch, max_gt, make_generator(seed))
            return big, gt, labels, 0.5

        return make

    def empty_gt():
        return sp, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5

    batch = 64 if gpu else 8
    for op, extra in (("match_priors", ()), ("ssd_targets", (V,))):
        add(op, "ties, duplicates, degenerate and padded gts", lambda extra=extra: match_adversarial() + extra)
        add(op, "no gts (G = 0)", lambda extra=extra: empty_gt() + extra)
        add(op, f"B={batch}, P={P}, G<=30 padded",
            lambda extra=extra: match_random(batch, 30, 10)() + extra, large=True)

    # hard_negative_mask: exact
    add("hard_negative_mask", "NaN at prior 0, -inf, ignored prior, k = num_neg - 1", make_mining_nan_case)
    add("hard_negative_mask", "B=5, P=1000: NaN, +-inf, ties, -0",
        lambda: make_mining(5, 1000, make_generator(11), True) + (3,))
    add("hard_negative_mask", "ratio 2^40 (k = num_neg)",
        lambda: make_mining(5, 1000, make_generator(12), True) + (2**40,))
    add("hard_negative_mask", "empty: B=0", lambda: (torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.long), 3))
    add("hard_negative_mask", f"B={batch}, P={P}",
        lambda: make_mining(batch, P, make_generator(13), False) + (3,), large=True)

    # batched_nms: exact keep lists (order included)
    def nms_hand():
        boxes = torch.tensor(
            [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5],
             [0.3, 0.3, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.6, 0.6, 0.9, 0.9]]
        )
        return boxes, torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5, 0.7]), torch.tensor([0, 0, 1, 0, 0, 0]), 0.5

    def nms_collide():
        boxes, scores, idxs = make_nms_inputs(2000, 4, make_generator(14))
        return boxes, scores, idxs + (torch.randint(0, 2, idxs.shape, generator=make_generator(15)) << 32), 0.5

    add("batched_nms", "hand case: ties, duplicates, degenerate box", nms_hand)
    add("batched_nms", "empty: N=0", lambda: (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5))
    add("batched_nms", "N=700, NaN and tied scores, negative idxs",
        lambda: make_nms_inputs(700, 10, make_generator(16), True) + (0.5,))
    add("batched_nms", "N=3000, 81 classes", lambda: make_nms_inputs(3000, 81, make_generator(17)) + (0.5,), large=True)
    add("batched_nms", "N=2000, idxs 2^32 apart", nms_collide, large=True)
    add("batched_nms", "N=3000, 1 class", lambda: make_nms_inputs(3000, 1, make_generator(18)) + (0.5,), large=True)
    add("batched_nms", "N=2000, 300 classes",
        lambda: make_nms_inputs(2000, 300, make_generator(19)) + (0.5,), large=True)
    if gpu:
        add("batched_nms", "N=100000, 80 classes",
            lambda: make_nms_inputs(100_000, 80, make_generator(20)) + (0.5,), large=True)
        add("batched_nms", "N=20000, 1 class",
            lambda: make_nms_inputs(20_000, 1, make_generator(21)) + (0.5,), large=True)

    # ssd_postprocess: num, labels, scores exact; boxes close

    def post(batch, priors, classes, seed, top_k=200, max_det=200, **kw):
        def make():
            loc, scores = make_post_inputs(batch, priors.shape[0], classes, make_generator(seed), **kw)
            return loc, scores, priors, V, ST, IT, top_k, max_det

        return make

    def post_ties_nan():
        loc, scores = make_post_inputs(2, sp.shape[0], 5, make_generator(22), peaked=False)
        scores = (scores * 8).round() / 8  # heavy ties: lower class, then lower prior first
        scores[:, ::7, 1:] = float("nan")  # never candidates
        return loc, scores, sp, V, ST, IT, 20, 30

    add("ssd_postprocess", f"B=2, P={sp.shape[0]}, C=5, ties and NaN scores", post_ties_nan)
    add("ssd_postprocess", "empty: B=0 and C=1",
        lambda: (torch.zeros(0, 5, 4), torch.zeros(0, 5, 1), sp[:5], V, ST, IT, 200, 7))
    if gpu:
        add("ssd_postprocess", f"B=16, P={P}, C=81", post(16, big, 81, 23), large=True)
        add("ssd_postprocess", f"B=2, P={P}, C=601", post(2, big, 601, 24, sharp=2.0), large=True)
    else:
        add("ssd_postprocess", f"B=2, P={P}, C=21", post(2, big, 21, 23), large=True)
    # Flat scores: thousands of candidates per class (more than the CUDA kernel keeps in shared memory).
    add(
        "ssd_postprocess",
        f"B=1, P={P}, C=6, dense candidates",
        post(1, big, 6, 25, top_k=400, max_det=500, peaked=False, sharp=0.5),
        large=True,
    )
    return out
