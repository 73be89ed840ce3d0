"""Every ssdfast op once on each of its kernel paths, for compute-sanitizer (memcheck, racecheck, ...).

    compute-sanitizer --tool memcheck  --error-exitcode 1 python -m benchmarks.sanitize_ops
    compute-sanitizer --tool racecheck --error-exitcode 1 python -m benchmarks.sanitize_ops --small
    python -m benchmarks.sanitize_ops --device cpu      # the same calls on the CPU kernels

Paths covered: box_iou's grid-stride rows; match_priors / ssd_targets with several prior tiles, padding,
an image without gts and > 48 KiB of dynamic shared memory; hard_negative_mask with NaN at prior 0 and
k = num_neg - 1; batched_nms with one large category, many small ones, categories equal in their low 32
bits (the two-sort fallback) and the global-memory walk (SSDFAST_NMS_SMEM_LIMIT); ssd_postprocess with
candidates compacted in shared memory, the keys cut to the top_k while the column is read (> 2560
candidates in a class; with ascending scores, cut at every batch up to the last slot), the column-rescan
path (top_k > 2560 and > 3584 candidates), several 256-candidate chunks per class and several
1024-detection merge chunks. Each result is compared with the CPU kernel, or for ssd_postprocess with the
reference on the same device (exit 1 on a mismatch). --small shrinks the sizes for the slower tools
(racecheck).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

if __package__ in (None, ""):  # run as a script: make `ssdfast` importable from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssdfast import check, ops  # noqa: E402
from ssdfast.ops import reference, sample_cases  # noqa: E402
from ssdfast.ops.sample_cases import TOLS, V  # noqa: E402


def calls(small: bool) -> list[tuple[str, str, tuple, dict]]:
    """(op, label, CPU arguments, environment) for every path; sizes cut down with ``small``."""
    g = torch.Generator().manual_seed(0)
    big = sample_cases.make_ssd300_priors()
    sp = sample_cases.make_small_priors()
    P = big.shape[0]
    B = 2 if small else 8
    out: list[tuple[str, str, tuple, dict]] = []

    def add(op: str, label: str, args: tuple, env: dict | None = None) -> None:
        out.append((op, label, args, env or {}))

    rows = 530_000 if not small else 70_000  # > 65535 * 8 rows: the grid-stride loop (not with --small)
    add("box_iou", f"{rows} x 3", (sample_cases.make_boxes(rows, g=g), sample_cases.make_boxes(3, g=g)))
    add("box_iou", "0 x 3", (torch.zeros(0, 4), sample_cases.make_boxes(3, g=g)))
    add("encode_boxes", f"B={B}, P={P}", (sample_cases.make_boxes(B, P, g=g), big, V))
    add("decode_boxes", f"B={B}, P={P}", (torch.randn(B, P, 4, generator=g), big, V))
    gt, gl = sample_cases.make_gt(B, 30, g)
    add("match_priors", f"B={B}, P={P}, G=30", (big, gt, gl, 0.5))
    add("ssd_targets", f"B={B}, P={P}, G=30", (big, gt, gl, 0.5, V))
    G = 1600  # 51 KB of dynamic shared memory: the opt-in above 48 KB
    add("match_priors", f"B=1, P={sp.shape[0]}, G={G}",
        (sp, sample_cases.make_boxes(1, G, g=g, max_size=0.3), torch.randint(1, 5, (1, G), generator=g), 0.5))
    add("ssd_targets", "G=0", (sp, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5, V))
    loss, labels = sample_cases.make_mining(B, P, g, special=True)
    add("hard_negative_mask", f"B={B}, P={P}, NaN / inf / ties", (loss, labels, 3))
    add("hard_negative_mask", "k = num_neg - 1", sample_cases.make_mining_nan_case())
    n = 1000 if small else 4000
    add("batched_nms", f"N={n}, 1 class", sample_cases.make_nms_inputs(n, 1, g) + (0.5,))
    add("batched_nms", f"N={n}, 81 classes, NaN and ties",
        sample_cases.make_nms_inputs(n, 81, g, adversarial=True) + (0.5,))
    add("batched_nms", f"N={n}, {n // 3} classes", sample_cases.make_nms_inputs(n, n // 3, g) + (0.5,))
    boxes, scores, idxs = sample_cases.make_nms_inputs(n, 4, g)
    add("batched_nms", "idxs 2^32 apart", (boxes, scores, idxs + (torch.randint(0, 2, (n,), generator=g) << 32), 0.5))
    add("batched_nms", "global-memory walk", sample_cases.make_nms_inputs(n, 3, g) + (0.5,),
        {"SSDFAST_NMS_SMEM_LIMIT": "8"})
    add("batched_nms", "N=0", (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5))
    loc, sc = sample_cases.make_post_inputs(B, P, 21, g)
    add("ssd_postprocess", f"B={B}, P={P}, C=21", (loc, sc, big, V, 0.01, 0.45, 200, 200))
    loc, sc = sample_cases.make_post_inputs(1, P, 4, g, peaked=False, sharp=0.5)  # ~P candidates per class
    add("ssd_postprocess", "dense: cut while read, 3 class + 2 merge chunks", (loc, sc, big, V, 0.01, 0.45, 600, 1500))
    loc, sc = sample_cases.make_post_inputs(2, P, 3, g, peaked=False, sharp=2.0)
    add("ssd_postprocess", "~2600 candidates per class, cut at the end: fp16",
        (loc, sc.half(), big, V, 0.5, 0.45, 400, 300))
    loc, sc = sample_cases.make_post_inputs(1, P, 3, g, peaked=False, sharp=0.5)
    add("ssd_postprocess", "dense, top_k 3000: column rescans", (loc, sc, big, V, 0.01, 0.45, 3000, 400))
    rising = 0.02 + 0.4 * torch.arange(P, dtype=torch.float32) / P  # every batch of 1024 beats all before
    sc = torch.stack((1 - rising, rising), -1)[None]
    add("ssd_postprocess", "ascending scores, top_k 2560: cut at every batch", (loc, sc, big, V, 0.01, 0.45, 2560, 300))
    return out


def _expected(op: str, cpu_args: tuple, dev_args: tuple):
    """The CPU kernel's result; for ssd_postprocess the reference on the same device, which decodes with
    the same expf (the CPU's exp may differ in the last bit and flip an IoU sitting at the threshold)."""
    if op == "ssd_postprocess":
        return reference.ssd_postprocess(*dev_args)
    return getattr(torch.ops.ssdfast, op)(*cpu_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--small", action="store_true", help="smaller inputs, for racecheck and the other slow tools")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if ops.backend() != "native":
        print("sanitize_ops: ssdfast._C is not built", file=sys.stderr)
        return 1
    native = torch.ops.ssdfast
    failures = 0
    for op, label, cpu_args, env in calls(args.small):
        start = time.perf_counter()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            dev_args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in cpu_args)
            got = getattr(native, op)(*dev_args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            detail = ("" if device.type == "cpu"
                      else check.compare(got, _expected(op, cpu_args, dev_args), TOLS.get(op, ())))
        except Exception as exc:  # reported, then the next call
            detail = f"error: {type(exc).__name__}: {exc}"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        failures += bool(detail)
        print(f"{'FAIL' if detail else 'ok  '}  {op:<19} {label:<52} {time.perf_counter() - start:6.2f} s", flush=True)
        if detail:
            print(f"      {detail}", flush=True)
    print(f"sanitize_ops: {failures} failed" if failures else "sanitize_ops: all calls ran and matched the CPU kernels")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
