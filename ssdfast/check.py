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
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .ops import reference
from .ops.sample_cases import OPS, TOL, Case, cases  # noqa: F401  (OPS, TOL: part of the check's face)


def _native_ops() -> Any:
    """The compiled ops under test (a seam for tests that inject a wrong kernel)."""
    return torch.ops.ssdfast


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
            return (f"output {i} differs in {n} of {a.numel()} elements "
                    f"(first at {where}: {a[where].item()} vs {b[where].item()})")
    return ""


def run_case(case: Case, device: torch.device) -> Result:
    native, ref = _native_ops(), reference  # the module, so a function replaced at run time is the one compared
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
    from .ops import wrappers

    try:
        backend = wrappers.backend()
    except (RuntimeError, ValueError) as exc:  # SSDFAST_BACKEND=native without the extension, or a bad value
        print(f"ssdfast.check: {exc}")
        return 1
    if backend != "native":
        reason = wrappers._LOAD_ERROR or "SSDFAST_BACKEND=reference"
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
