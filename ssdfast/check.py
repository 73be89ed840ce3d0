"""Self-check of an installed ssdfast: ``python -m ssdfast.check``.

Prints the versions, how the extension was built (its backends and CUDA architectures) and the devices
found, then runs every op (``torch.ops.ssdfast.*``) on every available device and compares it with
:mod:`ssdfast.ops.reference`, the pure-PyTorch twin, as that module stands at run time, on small, large
and adversarial inputs (ties, NaN, infinities, empty tensors). One line per check; exits 1 on any
mismatch or error, 0 when everything agrees.

    python -m ssdfast.check                   # every device, small and large inputs (well under a minute)
    python -m ssdfast.check --quick           # small inputs only (a few seconds)
    python -m ssdfast.check --device cuda:1   # one device: cpu, cuda (all of them) or cuda:N

Comparisons, as in the test suite: IoU-driven results (labels, masks, keep lists, detections and their
order) and IoUs are exact; values through exp/log (encoded offsets, decoded boxes) are close (1e-5).
On a GPU the reference runs on the same GPU, so both sides decode with the same ``expf``.
"""
from __future__ import annotations

import argparse
import importlib
import math
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

V = (0.1, 0.2)
OPS = (
    "box_iou",
    "encode_boxes",
    "decode_boxes",
    "match_priors",
    "ssd_targets",
    "hard_negative_mask",
    "batched_nms",
    "ssd_postprocess",
)
TOL = 1e-5  # floats through exp/log (encode, decode, the boxes of ssd_postprocess)


def _native_ops() -> Any:
    """The compiled ops under test (a seam for tests that inject a wrong kernel)."""
    return torch.ops.ssdfast


def _reference() -> Any:
    """ssdfast.ops.reference as it stands now (imported, never copied)."""
    return importlib.import_module("ssdfast.ops.reference")


# ----------------------------------------------------------------------------- inputs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _boxes(*shape: int, g: torch.Generator, max_size: float = 0.4) -> Tensor:
    """Valid xyxy boxes in [0, 1]: ``[*shape, 4]``."""
    xy = torch.rand(*shape, 2, generator=g) * (1 - max_size)
    wh = torch.rand(*shape, 2, generator=g) * max_size + 1e-3
    return torch.cat((xy, xy + wh), -1)


def _small_priors() -> Tensor:
    """252 cxcywh priors: square and 2:1 boxes on 8x8, 4x4 and 2x2 grids."""
    out = []
    for n, s in ((8, 0.2), (4, 0.45), (2, 0.8)):
        c = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        for w, h in ((s, s), (s * 1.41, s / 1.41), (s / 1.41, s * 1.41)):
            out.append(torch.stack((cx.flatten(), cy.flatten(), torch.full((n * n,), w), torch.full((n * n,), h)), -1))
    return torch.cat(out)


def _ssd300_priors() -> Tensor:
    """SSD300's 8732 priors (cxcywh), as vgg16-ssd uses them."""
    from .priors import VGG_SSD300_SPEC, generate_priors

    return generate_priors(VGG_SSD300_SPEC)


def _xyxy(priors: Tensor) -> Tensor:
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def _gt(batch: int, max_gt: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Padded ground truth: ``[B, G, 4]`` boxes and labels with -1 padding, image 1 without gts."""
    boxes = _boxes(batch, max_gt, g=g, max_size=0.6)
    labels = torch.randint(1, 81, (batch, max_gt), generator=g)
    counts = torch.randint(0, max_gt + 1, (batch,), generator=g)
    labels[torch.arange(max_gt)[None, :] >= counts[:, None]] = -1
    if batch > 1:
        labels[1] = -1
    return boxes, labels


def _mining(batch: int, priors: int, g: torch.Generator, special: bool) -> tuple[Tensor, Tensor]:
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


def _nms_inputs(n: int, classes: int, g: torch.Generator, adversarial: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    boxes = _boxes(n, g=g, max_size=0.3)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, classes, (n,), generator=g)
    if adversarial:
        boxes[::9] = boxes[0].clone()  # duplicates
        boxes[5::17] = torch.tensor([0.4, 0.4, 0.3, 0.9])  # degenerate
        scores = (scores * 5).floor() / 5  # heavy ties: lower index first
        scores[::23] = float("nan")  # NaN first, as torch.sort
        idxs = idxs - classes // 2  # negative categories
    return boxes, scores, idxs


def _post_inputs(batch: int, priors: int, classes: int, g: torch.Generator, peaked: bool = True, sharp: float = 3.0):
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
    tols: Sequence[float | None] = ()  # per output: None = exact; missing = exact


def cases(device: torch.device, quick: bool) -> list[Case]:
    """The checks run on ``device`` (sizes grow on a GPU, where the reference is fast too)."""
    gpu = device.type == "cuda"
    out: list[Case] = []

    def add(op: str, label: str, make: Callable[[], tuple], large: bool = False, tols: Sequence = ()) -> None:
        if not (quick and large):
            out.append(Case(op, label, make, large, tols))

    sp = _small_priors()
    big = _ssd300_priors()
    P = big.shape[0]

    # box_iou: exact (same float32 operations, no FMA contraction)
    def iou_small():
        g = _gen(1)
        a, b = _boxes(5, g=g), _boxes(7, g=g)
        a[1] = torch.tensor([0.3, 0.3, 0.3, 0.6])  # degenerate: IoU 0, never NaN
        a[2] = b[0]  # identical: IoU 1
        return a, b

    add("box_iou", "5 x 7, degenerate and identical boxes", iou_small)
    add("box_iou", "empty: 0 x 5", lambda: (torch.zeros(0, 4), _boxes(5, g=_gen(2))))
    add("box_iou", f"{P} priors x 200 boxes", lambda: (_xyxy(big), _boxes(200, g=_gen(3))), large=True)
    if gpu:  # more than 65535 * 8 rows: the kernel's grid-stride loop
        add("box_iou", "600000 x 5 (grid-stride rows)", lambda: (_boxes(600_000, g=_gen(4)), _boxes(5, g=_gen(5))), large=True)

    # encode / decode: close (exp/log)
    def enc(batch, priors, seed):
        def make():
            boxes = _boxes(batch, priors.shape[0], g=_gen(seed))
            boxes[..., 0, :] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # degenerate: clamped, finite
            return boxes, priors, V

        return make

    def dec(batch, priors, seed):
        def make():
            loc = torch.randn(batch, priors.shape[0], 4, generator=_gen(seed)) * 0.5
            loc[..., 1, 2:] = 1e4  # exp argument clamped: never inf
            return loc, priors, V

        return make

    add("encode_boxes", f"B=2, P={sp.shape[0]}, degenerate box", enc(2, sp, 6), tols=(TOL,))
    add("encode_boxes", f"B={64 if gpu else 8}, P={P}", enc(64 if gpu else 8, big, 7), large=True, tols=(TOL,))
    add("decode_boxes", f"B=2, P={sp.shape[0]}, clamped exp", dec(2, sp, 8), tols=(TOL,))
    add("decode_boxes", f"B={64 if gpu else 8}, P={P}", dec(64 if gpu else 8, big, 9), large=True, tols=(TOL,))

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
            gt, labels = _gt(batch, max_gt, _gen(seed))
            return big, gt, labels, 0.5

        return make

    def empty_gt():
        return sp, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), 0.5

    batch = 64 if gpu else 8
    for op, extra, tols in (("match_priors", (), ()), ("ssd_targets", (V,), (None, TOL))):
        add(op, "ties, duplicates, degenerate and padded gts", lambda extra=extra: match_adversarial() + extra, tols=tols)
        add(op, "no gts (G = 0)", lambda extra=extra: empty_gt() + extra, tols=tols)
        add(op, f"B={batch}, P={P}, G<=30 padded", lambda extra=extra: match_random(batch, 30, 10)() + extra, large=True, tols=tols)

    # hard_negative_mask: exact
    def mining_issue_case():
        # NaN at prior 0, a -inf negative, an ignored prior, k = num_neg - 1.
        loss = torch.tensor([[float("nan"), 1.0, float("-inf"), 0.5, 0.3, 2.0]])
        return loss, torch.tensor([[0, 0, 0, 1, -1, 0]]), 3

    add("hard_negative_mask", "NaN at prior 0, -inf, ignored prior, k = num_neg - 1", mining_issue_case)
    add("hard_negative_mask", "B=5, P=1000: NaN, +-inf, ties, -0", lambda: _mining(5, 1000, _gen(11), True) + (3,))
    add("hard_negative_mask", "ratio 2^40 (k = num_neg)", lambda: _mining(5, 1000, _gen(12), True) + (2**40,))
    add("hard_negative_mask", "empty: B=0", lambda: (torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.long), 3))
    add("hard_negative_mask", f"B={batch}, P={P}", lambda: _mining(batch, P, _gen(13), False) + (3,), large=True)

    # batched_nms: exact keep lists (order included)
    def nms_hand():
        boxes = torch.tensor(
            [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0.6, 0.6, 0.9, 0.9]]
        )
        return boxes, torch.tensor([0.5, 0.5, 0.5, 0.9, 0.5, 0.7]), torch.tensor([0, 0, 1, 0, 0, 0]), 0.5

    def nms_collide():
        boxes, scores, idxs = _nms_inputs(2000, 4, _gen(14))
        return boxes, scores, idxs + (torch.randint(0, 2, idxs.shape, generator=_gen(15)) << 32), 0.5

    add("batched_nms", "hand case: ties, duplicates, degenerate box", nms_hand)
    add("batched_nms", "empty: N=0", lambda: (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5))
    add("batched_nms", "N=700, NaN and tied scores, negative idxs", lambda: _nms_inputs(700, 10, _gen(16), True) + (0.5,))
    add("batched_nms", "N=3000, 81 classes", lambda: _nms_inputs(3000, 81, _gen(17)) + (0.5,), large=True)
    add("batched_nms", "N=2000, idxs 2^32 apart", nms_collide, large=True)
    add("batched_nms", "N=3000, 1 class", lambda: _nms_inputs(3000, 1, _gen(18)) + (0.5,), large=True)
    add("batched_nms", "N=2000, 300 classes", lambda: _nms_inputs(2000, 300, _gen(19)) + (0.5,), large=True)
    if gpu:
        add("batched_nms", "N=100000, 80 classes", lambda: _nms_inputs(100_000, 80, _gen(20)) + (0.5,), large=True)
        add("batched_nms", "N=20000, 1 class", lambda: _nms_inputs(20_000, 1, _gen(21)) + (0.5,), large=True)

    # ssd_postprocess: num, labels, scores exact; boxes close
    post_tols = (TOL, None, None, None)

    def post(batch, priors, classes, seed, top_k=200, max_det=200, **kw):
        def make():
            loc, scores = _post_inputs(batch, priors.shape[0], classes, _gen(seed), **kw)
            return loc, scores, priors, V, 0.01, 0.45, top_k, max_det

        return make

    def post_ties_nan():
        loc, scores = _post_inputs(2, sp.shape[0], 5, _gen(22), peaked=False)
        scores = (scores * 8).round() / 8  # heavy ties: lower class, then lower prior first
        scores[:, ::7, 1:] = float("nan")  # never candidates
        return loc, scores, sp, V, 0.01, 0.45, 20, 30

    add("ssd_postprocess", f"B=2, P={sp.shape[0]}, C=5, ties and NaN scores", post_ties_nan, tols=post_tols)
    add("ssd_postprocess", "empty: B=0 and C=1", lambda: (torch.zeros(0, 5, 4), torch.zeros(0, 5, 1), sp[:5], V, 0.01, 0.45, 200, 7), tols=post_tols)
    if gpu:
        add("ssd_postprocess", f"B=16, P={P}, C=81", post(16, big, 81, 23), large=True, tols=post_tols)
        add("ssd_postprocess", f"B=2, P={P}, C=601", post(2, big, 601, 24, sharp=2.0), large=True, tols=post_tols)
    else:
        add("ssd_postprocess", f"B=2, P={P}, C=21", post(2, big, 21, 23), large=True, tols=post_tols)
    # Flat scores: thousands of candidates per class (more than the CUDA kernel keeps in shared memory).
    add(
        "ssd_postprocess",
        f"B=1, P={P}, C=6, dense candidates",
        post(1, big, 6, 25, top_k=400, max_det=500, peaked=False, sharp=0.5),
        large=True,
        tols=post_tols,
    )
    return out


# ----------------------------------------------------------------------------- running


@dataclass
class Result:
    device: str
    case: Case
    ok: bool
    seconds: float
    detail: str = ""


def _to(x: Any, device: torch.device) -> Any:
    return x.to(device) if isinstance(x, Tensor) else x


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def compare(got: Any, expected: Any, tols: Sequence[float | None] = ()) -> str:
    """Empty string when ``got`` matches ``expected`` (exactly, or within tols[i] for float output i)."""
    got, expected = _as_tuple(got), _as_tuple(expected)
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected)):
        if not isinstance(a, Tensor):
            return f"output {i} is {type(a).__name__}, not a tensor"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"output {i}: {a.dtype} {tuple(a.shape)}, expected {b.dtype} {tuple(b.shape)}"
        a, b = a.cpu(), b.cpu()
        tol = tols[i] if i < len(tols) else None
        if tol is not None and a.is_floating_point():
            a32, b32 = a.float(), b.float()
            bad = ~torch.isclose(a32, b32, rtol=tol, atol=tol, equal_nan=True)
        else:
            bad = a != b
            if a.is_floating_point():
                bad &= ~(torch.isnan(a) & torch.isnan(b))
        if bad.any():
            n = int(bad.sum())
            where = tuple(int(j) for j in bad.nonzero()[0])
            return f"output {i} differs in {n} of {a.numel()} elements (first at {where}: {a[where].item()} vs {b[where].item()})"
    return ""


def run_case(case: Case, device: torch.device) -> Result:
    native, ref = _native_ops(), _reference()
    start = time.perf_counter()
    try:
        args = tuple(_to(a, device) for a in case.make())
        got = getattr(native, case.op)(*args)
        expected = getattr(ref, case.op)(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        detail = compare(got, expected, case.tols)
        leaves = _as_tuple(got)
        if not detail and any(isinstance(t, Tensor) and t.device != device for t in leaves):
            detail = f"output on {leaves[0].device}, expected {device}"
    except Exception as exc:  # a failing kernel is a failed check, not a crash of the checker
        detail = f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return Result(str(device), case, not detail, time.perf_counter() - start, detail)


def _line(r: Result) -> str:
    status = "PASS" if r.ok else "FAIL"
    text = f"{status}  {r.device:<7} {r.case.op:<19} {r.case.label:<52} {r.seconds:6.2f} s"
    return text + (f"\n      {r.detail}" if r.detail else "")


# ----------------------------------------------------------------------------- report


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _archs(nvcc_list: str) -> str:
    """nvcc's "750,800,900" -> "sm_75 sm_80 sm_90"."""
    out = []
    for item in nvcc_list.split(","):
        item = item.strip()
        if item.isdigit():
            out.append(f"sm_{int(item) // 10}")
    return " ".join(out) or "unknown"


def _header(devices: list[torch.device]) -> tuple[list[str], dict[str, str]]:
    """Report lines, and {device: reason} for devices whose op checks cannot run."""
    import ssdfast
    from ssdfast import ops

    lines = [
        f"ssdfast {ssdfast.__version__} ({ssdfast.__file__.rsplit('/', 2)[0]})",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), torchvision {_version('torchvision')}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}",
    ]
    unusable: dict[str, str] = {}
    from ssdfast import _C

    info = _C.build_info()
    built = info.get("torch_version", "?")
    lines.append(f"extension: {ops.backend()} backend, ssdfast._C built against torch {built}")
    if built.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
        lines.append(f"  warning: running torch {torch.__version__}; rebuild: pip install --no-build-isolation -e .")
    if info.get("with_cuda"):
        requested = info.get("torch_cuda_arch_list") or "chosen by torch at build time"
        lines.append(
            f"  kernels: CPU; CUDA {info.get('cuda_version')} for {_archs(info.get('cuda_arch_list', ''))} "
            f"(TORCH_CUDA_ARCH_LIST={requested.replace(',', ';')})"
        )
    else:
        lines.append("  kernels: CPU only (built without CUDA)")
    lines.append("devices:")
    for dev in devices:
        if dev.type == "cpu":
            lines.append(f"  cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
            continue
        props = torch.cuda.get_device_properties(dev)
        desc = f"  {dev}: {props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB"
        if not info.get("with_cuda"):
            unusable[str(dev)] = "ssdfast._C has no CUDA kernels: reinstall with a CUDA toolkit (FORCE_CUDA=1)"
            lines.append(desc + ": no CUDA kernels")
            continue
        try:
            binary, ptx = _C.cuda_kernel_image(dev.index)
            how = "SASS" if binary == props.major * 10 + props.minor else "JIT from PTX"
            lines.append(desc + f": kernels sm_{binary} (PTX compute_{ptx}), {how}")
        except RuntimeError as exc:
            unusable[str(dev)] = (
                f"{exc}; rebuild for this GPU: TORCH_CUDA_ARCH_LIST={props.major}.{props.minor} "
                "pip install --no-build-isolation -e ."
            )
            lines.append(desc + ": no usable kernel image")
    return lines, unusable


def _devices(spec: str) -> list[torch.device]:
    cuda = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if spec == "all":
        return [torch.device("cpu")] + cuda
    if spec == "cpu":
        return [torch.device("cpu")]
    if spec == "cuda":
        if not cuda:
            raise SystemExit("ssdfast.check: --device cuda, but torch sees no CUDA device")
        return cuda
    dev = torch.device(spec)
    if dev.type == "cuda" and (dev.index or 0) >= len(cuda):
        raise SystemExit(f"ssdfast.check: --device {spec}, but torch sees {len(cuda)} CUDA device(s)")
    return [torch.device("cuda", dev.index or 0) if dev.type == "cuda" else dev]


def run(devices: list[torch.device], quick: bool = False, out=None) -> list[Result]:
    """Runs the checks on ``devices``, printing one line each (to ``out``, default stdout); returns the results."""
    out = out or sys.stdout
    lines, unusable = _header(devices)
    print("\n".join(lines), file=out, flush=True)
    results: list[Result] = []
    for dev in devices:
        if str(dev) in unusable:
            r = Result(str(dev), Case("(all ops)", "kernel image", lambda: ()), False, 0.0, unusable[str(dev)])
            results.append(r)
            print(_line(r), file=out, flush=True)
            continue
        for case in cases(dev, quick):
            r = run_case(case, dev)
            results.append(r)
            print(_line(r), file=out, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssdfast.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs only")
    parser.add_argument("--device", default="all", help="cpu, cuda (every CUDA device), cuda:N, or all (default)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    from ssdfast import ops

    try:
        backend = ops.backend()
    except (RuntimeError, ValueError) as exc:  # SSDFAST_BACKEND=native without the extension, or a bad value
        print(f"ssdfast.check: {exc}")
        return 1
    if backend != "native":
        reason = ops._LOAD_ERROR or "SSDFAST_BACKEND=reference"
        print(f"ssdfast.check: the compiled kernels are not in use ({reason}); nothing to check.")
        print("Build them with `pip install --no-build-isolation -e .` (or unset SSDFAST_BACKEND).")
        return 1
    devices = _devices(args.device)
    results = run(devices, args.quick)
    failed = [r for r in results if not r.ok]
    names = ", ".join(str(d) for d in devices)
    print(
        f"ssdfast.check: {len(results)} checks on {names}: {len(results) - len(failed)} passed, "
        f"{len(failed)} failed ({time.perf_counter() - start:.1f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
