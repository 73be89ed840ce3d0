"""GPU timings of the ssdfast CUDA kernels, printed as one Markdown table.

    python -m benchmarks.bench_cuda                 # full table (a few minutes on an H100)
    python -m benchmarks.bench_cuda --quick         # fewer rounds, batch 64 only (about 2 minutes)
    python -m benchmarks.bench_cuda --out benchmarks/results/cuda-H100.md
    python -m benchmarks.bench_cuda --dry-run       # every row once at tiny sizes on the CPU (seconds)

Every contender runs on the same GPU and is timed with CUDA events in interleaved rounds (median
of the rounds): the compiled kernel (``torch.ops.ssdfast``), its pure-PyTorch twin
(``ssdfast.ops.reference``), and the code SSD users run today (``benchmarks/baselines.py``: the
torchvision-style post-processing loop, pytorch-ssd's per-image matching loop, the double-argsort
mining) or ``torchvision.ops.batched_nms``. Sizes: SSD300 (P = 8732), 81 classes (COCO) and 601 (Open
Images), batch 1, 8 and 64 (64 only with --quick); ssd_postprocess also with flat scores (~3,400
candidates per class) and with an untrained model's scores (every prior a candidate in every class, the
kernel's worst case); batched_nms at 1k to 100k boxes and with many categories. A second table gives
the peak scratch memory of the ops whose memory grew with the input (ssd_postprocess, batched_nms).
Without a CUDA device it prints a note and exits 0. ``--dry-run`` builds and calls every row of the
table on the CPU at tiny sizes, one call per round, timed with the wall clock: it checks this script,
and measures nothing worth keeping.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

V = [0.1, 0.2]


@dataclass(frozen=True)
class Sizes:
    """The sizes of the table's rows."""

    batches: tuple[int, ...]  # ssd_targets, hard_negative_mask, ssd_postprocess
    classes: int  # COCO: 81
    many_classes: int  # Open Images: 601, at batch many_batch
    many_batch: int
    nms: tuple[int, ...]  # batched_nms boxes in `classes` categories
    nms_special: tuple[tuple[int, int, str], ...]  # (boxes, categories, label)
    nms_memory: tuple[tuple[int, int], ...]  # (boxes, categories) of the memory table
    gt_boxes: int  # box_iou's second operand
    ssd300: bool  # SSD300's 8732 priors, else 252 small ones


FULL = Sizes(
    batches=(1, 8, 64),
    classes=81,
    many_classes=601,
    many_batch=8,
    nms=(1000, 2000, 5000, 10000, 20000),
    nms_special=((5000, 1, "1 class"), (20000, 5000, "5000 classes"), (100000, 80, "80 classes")),
    nms_memory=((20000, 81), (100000, 80), (100000, 1)),
    gt_boxes=200,
    ssd300=True,
)
QUICK = replace(FULL, batches=(64,))
DRY = Sizes(
    batches=(2,),
    classes=6,
    many_classes=9,
    many_batch=2,
    nms=(100, 300),
    nms_special=((100, 1, "1 class"), (300, 120, "120 classes"), (500, 4, "4 classes")),
    nms_memory=((300, 6), (500, 4), (500, 1)),
    gt_boxes=20,
    ssd300=False,
)


def _measure(device: str) -> Callable[[Callable, int], float]:
    """``measure(fn, reps)``: milliseconds of ``reps`` calls, with CUDA events on a GPU, else the wall clock."""
    if torch.device(device).type != "cuda":

        def wall(fn: Callable, reps: int) -> float:
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - start) * 1e3

        return wall

    def events(fn: Callable, reps: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return events


def _median_ms(contenders: dict[str, Callable], rounds: int, min_time: float, device: str) -> dict[str, float]:
    """Median milliseconds per call of each contender (interleaved rounds)."""
    measure = _measure(device)
    reps: dict[str, int] = {}
    with torch.inference_mode():
        for name, fn in contenders.items():
            fn()  # warm-up: allocator, lazy init, cuBLAS/cub workspaces
            reps[name] = max(1, min(1000, int(min_time * 1e3 / max(measure(fn, 1), 1e-3))))
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                samples[name].append(measure(fn, reps[name]) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def _fmt(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _ratio(native: float, other: float | None) -> str:
    return f"{other / native:.1f}x" if other else "—"


# ----------------------------------------------------------------------------- cases


def _random_boxes(*shape: int, max_size: float, g: torch.Generator, device: str) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=g) * (1 - max_size)
    wh = torch.rand(*shape, 2, generator=g) * max_size + 0.02
    return torch.cat((xy, xy + wh), -1).to(device)


def _post_inputs(batch: int, priors: int, classes: int, g: torch.Generator, device: str, sharp: float = 2.0,
                 peaked: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``ssd_postprocess``'s locations and softmax scores; ``peaked``: like a trained model, most priors
    confidently background."""
    loc = (torch.randn(batch, priors, 4, generator=g) * 0.2).to(device)
    logits = torch.randn(batch, priors, classes, generator=g) * sharp
    if peaked:
        logits[..., 0] += 4
    return loc, torch.softmax(logits, -1).to(device)


def _nms_inputs(n: int, classes: int, max_size: float, g: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    """``batched_nms``'s boxes, scores and categories for ``n`` boxes in ``classes`` categories."""
    boxes = _random_boxes(n, max_size=max_size, g=g, device=device)
    return boxes, torch.rand(n, generator=g).to(device), torch.randint(0, classes, (n,), generator=g).to(device)


def _gt(batch: int, max_gt: int, classes: int, g: torch.Generator, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gt = _random_boxes(batch, max_gt, max_size=0.5, g=g, device=device)
    counts = torch.randint(1, max_gt + 1, (batch,), generator=g)
    labels = torch.randint(1, classes, (batch, max_gt), generator=g)
    labels[torch.arange(max_gt)[None, :] >= counts[:, None]] = -1
    return gt, labels.to(device)


def _priors(sizes: Sizes, device: str) -> torch.Tensor:
    from benchmarks.ops_cases import ssd300_priors
    from ssdfast.ops.sample_cases import make_small_priors

    return ssd300_priors(device) if sizes.ssd300 else make_small_priors().to(device)


def _cases(device: str, sizes: Sizes) -> list[tuple[str, str, dict[str, Callable]]]:
    """(op, size, contenders) rows; contenders: native, reference, and baseline when there is one."""
    import torchvision

    from benchmarks import baselines
    from ssdfast import ops
    from ssdfast.ops import reference as ref

    ops.backend()  # loads ssdfast._C, which registers torch.ops.ssdfast
    nat = torch.ops.ssdfast
    priors = _priors(sizes, device)
    P, C = priors.shape[0], sizes.classes
    priors_xyxy = torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)
    g = torch.Generator().manual_seed(0)
    rows: list[tuple[str, str, dict[str, Callable]]] = []

    gt_boxes = _random_boxes(sizes.gt_boxes, max_size=0.5, g=g, device=device)
    rows.append(
        (
            "box_iou",
            f"{P} x {sizes.gt_boxes}",
            {
                "native": lambda: nat.box_iou(priors_xyxy, gt_boxes),
                "reference": lambda: ref.box_iou(priors_xyxy, gt_boxes),
                "baseline": lambda: torchvision.ops.box_iou(priors_xyxy, gt_boxes),
            },
        )
    )
    B = sizes.batches[-1]
    loc_b = (torch.randn(B, P, 4, generator=g) * 0.2).to(device)
    boxes_b = _random_boxes(B, P, max_size=0.5, g=g, device=device)
    rows.append(("encode_boxes", f"B={B}, P={P}", {"native": lambda: nat.encode_boxes(boxes_b, priors, V),
                                                   "reference": lambda: ref.encode_boxes(boxes_b, priors, V)}))
    rows.append(("decode_boxes", f"B={B}, P={P}", {"native": lambda: nat.decode_boxes(loc_b, priors, V),
                                                   "reference": lambda: ref.decode_boxes(loc_b, priors, V)}))

    for B in sizes.batches:
        gt, gl = _gt(B, 20, C, g, device)
        rows.append(
            (
                "ssd_targets",
                f"B={B}, P={P}, G<=20",
                {
                    "native": lambda gt=gt, gl=gl: nat.ssd_targets(priors, gt, gl, 0.5, V),
                    "reference": lambda gt=gt, gl=gl: ref.ssd_targets(priors, gt, gl, 0.5, V),
                    "baseline": lambda gt=gt, gl=gl: baselines.per_image_matching(priors, gt, gl, 0.5, V),
                },
            )
        )
    for B in sizes.batches:
        loss = torch.rand(B, P, generator=g).to(device)
        labels = ((torch.rand(B, P, generator=g) < 0.005).long() * 5).to(device)
        rows.append(
            (
                "hard_negative_mask",
                f"B={B}, P={P}",
                {
                    "native": lambda loss=loss, labels=labels: nat.hard_negative_mask(loss, labels, 3),
                    "reference": lambda loss=loss, labels=labels: ref.hard_negative_mask(loss, labels, 3),
                    "baseline": lambda loss=loss, labels=labels: baselines.double_argsort_mining(loss, labels, 3),
                },
            )
        )
    # The training tail the loss runs every step: targets + mining (the "< 0.5 ms at B=64" goal).
    B = sizes.batches[-1]
    gt, gl = _gt(B, 20, C, g, device)
    conf = torch.randn(B, P, C, generator=g).to(device)
    neg_loss = -torch.log_softmax(conf, -1)[..., 0]

    def _tail(impl_targets, impl_mining):
        def run():
            labels, loc = impl_targets(priors, gt, gl, 0.5, V)
            return impl_mining(neg_loss, labels, 3), loc

        return run

    rows.append(
        (
            "ssd_targets + hard_negative_mask",
            f"B={B}, P={P}, G<=20",
            {
                "native": _tail(nat.ssd_targets, nat.hard_negative_mask),
                "reference": _tail(ref.ssd_targets, ref.hard_negative_mask),
                "baseline": _tail(baselines.per_image_matching, baselines.double_argsort_mining),
            },
        )
    )

    args = (V, 0.01, 0.45, 200, 200)

    def _post_row(op: str, size: str, loc: torch.Tensor, scores: torch.Tensor, reference: bool = True):
        contenders = {"native": lambda: nat.ssd_postprocess(loc, scores, priors, *args)}
        if reference:
            contenders["reference"] = lambda: ref.ssd_postprocess(loc, scores, priors, *args)
        contenders["baseline"] = lambda: baselines.torchvision_postprocess(loc, scores, priors, *args)
        rows.append((op, size, contenders))

    for B in sizes.batches:
        _post_row("ssd_postprocess", f"B={B}, P={P}, C={C}", *_post_inputs(B, P, C, g, device))
    # Flat scores: thousands of candidates in every class (~3,400 of 8732 at C=81, score_threshold 0.01:
    # most classes' candidates still fit the kernel's shared memory).
    B = sizes.batches[-1]
    loc, scores = _post_inputs(B, P, C, g, device, sharp=1.0, peaked=False)
    _post_row("ssd_postprocess (flat scores)", f"B={B}, P={P}, C={C}, {_candidates(scores)}", loc, scores)
    # An untrained model: near-uniform softmax (every score ~1/C > 0.01), so (nearly) every prior is a
    # candidate in every class -- more than the kernel's shared memory holds: its worst case. Drawn from
    # a generator of its own, so the other rows' inputs stay what they were.
    loc, scores = _post_inputs(B, P, C, torch.Generator().manual_seed(2), device, sharp=0.1, peaked=False)
    _post_row("ssd_postprocess (untrained model)", f"B={B}, P={P}, C={C}, {_candidates(scores)}", loc, scores)

    for n in sizes.nms:
        boxes, sc, idxs = _nms_inputs(n, C, 0.2, g, device)
        rows.append(
            (
                "batched_nms (vs torchvision)",
                f"N={n}, {C} classes",
                {
                    "native": lambda boxes=boxes, sc=sc, idxs=idxs: nat.batched_nms(boxes, sc, idxs, 0.5),
                    "reference": lambda boxes=boxes, sc=sc, idxs=idxs: ref.batched_nms(boxes, sc, idxs, 0.5),
                    "baseline": lambda boxes=boxes, sc=sc, idxs=idxs: torchvision.ops.batched_nms(boxes, sc, idxs, 0.5),
                },
            )
        )
    for n, classes, label in sizes.nms_special:
        boxes, sc, idxs = _nms_inputs(n, classes, 0.2 if n <= 20000 else 0.05, g, device)
        contenders = {
            "native": lambda boxes=boxes, sc=sc, idxs=idxs: nat.batched_nms(boxes, sc, idxs, 0.5),
            "baseline": lambda boxes=boxes, sc=sc, idxs=idxs: torchvision.ops.batched_nms(boxes, sc, idxs, 0.5),
        }
        if classes <= 100:  # the reference loops over the categories in Python
            contenders["reference"] = lambda boxes=boxes, sc=sc, idxs=idxs: ref.batched_nms(boxes, sc, idxs, 0.5)
        rows.append(("batched_nms (vs torchvision)", f"N={n}, {label}", contenders))

    # Open Images: 601 classes (the reference's per-image loop is left out: seconds per call).
    B, C = sizes.many_batch, sizes.many_classes
    _post_row("ssd_postprocess", f"B={B}, P={P}, C={C}", *_post_inputs(B, P, C, g, device), reference=False)
    return rows


def _candidates(scores: torch.Tensor, threshold: float = 0.01) -> str:
    """"~N candidates per class": the mean number of priors above the threshold per (image, class >= 1)."""
    return f"~{float((scores[..., 1:] > threshold).sum(1).float().mean()):.0f} candidates per class"


def _memory_rows(device: str, sizes: Sizes) -> list[str]:
    """Peak CUDA memory of one native call beyond its inputs, for the ops whose scratch used to grow with
    B x C x P (ssd_postprocess) or N^2 (batched_nms)."""
    nat = torch.ops.ssdfast
    priors = _priors(sizes, device)
    P = priors.shape[0]
    g = torch.Generator().manual_seed(1)
    lines = ["| op | size | peak scratch MiB |", "|---|---|---:|"]
    cases = []
    for B, C in ((sizes.batches[-1], sizes.classes), (sizes.many_batch, sizes.many_classes)):
        loc, scores = _post_inputs(B, P, C, g, device, peaked=False)
        cases.append(("ssd_postprocess", f"B={B}, P={P}, C={C}", lambda loc=loc, scores=scores:
                      nat.ssd_postprocess(loc, scores, priors, V, 0.01, 0.45, 200, 200)))
    for n, classes in sizes.nms_memory:
        boxes, sc, idxs = _nms_inputs(n, classes, 0.05, g, device)
        cases.append(("batched_nms", f"N={n}, {classes} classes", lambda boxes=boxes, sc=sc, idxs=idxs:
                      nat.batched_nms(boxes, sc, idxs, 0.5)))
    on_cuda = torch.device(device).type == "cuda"
    for op, size, fn in cases:
        if not on_cuda:  # the dry run: the call only
            fn()
            lines.append(f"| {op} | {size} | — |")
            continue
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        lines.append(f"| {op} | {size} | {(torch.cuda.max_memory_allocated() - before) / 2**20:.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def run(device: str = "cuda", quick: bool = False, dry_run: bool = False) -> str:
    """Measure every case on ``device`` and return the Markdown table (``dry_run``: tiny sizes, one call
    per round, any device)."""
    sizes = DRY if dry_run else QUICK if quick else FULL
    rounds, min_time = (1, 0.0) if dry_run else (3, 0.05) if quick else (7, 0.2)
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        where = (f"CUDA kernels on {torch.cuda.get_device_name(device)} (torch {torch.__version__}, "
                 f"CUDA {torch.version.cuda})")
        clock = "timed with CUDA events"
    else:
        where = f"Kernels on the CPU ({platform.processor() or platform.machine()}, torch {torch.__version__})"
        clock = "timed with the wall clock"
    header = [
        (f"DRY RUN at tiny sizes, not a measurement. {where}" if dry_run else where)
        + f"; milliseconds per call, median of interleaved rounds {clock}. baseline: the torchvision-style loop "
        "(post-processing), pytorch-ssd's per-image matching loop (targets), the double-argsort mining, "
        "or torchvision.ops.batched_nms.",
        "",
        "| op | size | native ms | reference ms | baseline ms | native vs reference | native vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines = list(header)
    for op, size, contenders in _cases(device, sizes):
        t = _median_ms(contenders, rounds, min_time, device)
        native = t["native"]
        lines.append(
            f"| {op} | {size} | {_fmt(native)} | {_fmt(t.get('reference'))} | {_fmt(t.get('baseline'))} | "
            f"{_ratio(native, t.get('reference'))} | {_ratio(native, t.get('baseline'))} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
        if on_cuda:
            torch.cuda.empty_cache()
    lines += ["", "Peak CUDA memory allocated during one native call (scratch and outputs):", ""]
    lines += _memory_rows(device, sizes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, batch 64 only (about 2 minutes)")
    parser.add_argument("--device", default=None, help="device to measure (default: cuda; cpu with --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every row once at tiny sizes (default on the CPU): checks the script")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("bench_cuda: no CUDA device visible; nothing to measure.")
        return 0
    from ssdfast import ops

    if ops.backend() != "native":
        print("bench_cuda: the ssdfast._C extension is not built (pip install --no-build-isolation -e .)",
              file=sys.stderr)
        return 1
    table = run(device, args.quick, args.dry_run)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
