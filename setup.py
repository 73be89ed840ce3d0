"""Build ssdfast._C from csrc/ against the torch already installed.

    pip install --no-build-isolation -e .      # or: pip install --no-build-isolation .

CUDA sources are compiled when a CUDA toolkit is found (or FORCE_CUDA=1); FORCE_CUDA=0 builds the
CPU kernels only. With no GPU visible, TORCH_CUDA_ARCH_LIST defaults to the list below, which covers
Turing to Hopper and Jetson Orin (8.7). MAX_JOBS limits parallel compile jobs (ninja).
"""
from __future__ import annotations

import glob
import os
import re
import site
import sys

from setuptools import setup

_DEFAULT_ARCHS = "7.5;8.0;8.6;8.7;8.9;9.0+PTX"


def _find_cuda_home() -> str | None:
    """CUDA_HOME if set, else /usr/local/cuda, else the parent of nvcc's bin/ (symlinks resolved)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    from shutil import which

    nvcc = which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        home = os.path.dirname(os.path.dirname(real))
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def _pip_cuda_include_dirs() -> list[str]:
    """Headers of the CUDA libraries pip's torch depends on (cusparse.h, cublas_v2.h, ...)."""
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    found: list[str] = []
    for root in roots:
        for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
            for d in sorted(glob.glob(os.path.join(root, pattern))):
                if os.path.isdir(d) and d not in found:
                    found.append(d)
    return found


cuda_home = _find_cuda_home()
if cuda_home:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import.
    os.environ["CUDA_HOME"] = cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA")
    if force is not None:
        return force == "1"
    return cuda_home is not None and torch.version.cuda is not None


def get_extensions():
    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join(here, "csrc")
    sources = [os.path.join("csrc", "ssdfast.cpp")] + sorted(
        os.path.relpath(p, here) for p in glob.glob(os.path.join(csrc, "cpu", "*.cpp"))
    )
    # -ffp-contract=off: no fused multiply-adds, so IoUs equal the reference's bit for bit.
    # -fno-trapping-math lets float compares/selects vectorize; it changes no results.
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fvisibility=hidden"]
    if sys.platform != "win32":
        cxx.append("-fopenmp")
    extra = {"cxx": cxx}
    define_macros: list = []
    include_dirs = [csrc]
    if _want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = _DEFAULT_ARCHS
        sources += sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(csrc, "cuda", "*.cu")))
        # -isystem, not -I: these come after the toolkit's own headers, so a pip CUDA newer than
        # nvcc (e.g. 13.2 headers with nvcc 13.0) cannot shadow them.
        pip_inc = [flag for d in _pip_cuda_include_dirs() for flag in ("-isystem", d)]
        cxx += pip_inc
        # --fmad=false for the same reason as -ffp-contract=off above.
        extra["nvcc"] = ["-O3", "--fmad=false", "--expt-relaxed-constexpr", "-lineinfo"] + pip_inc
        define_macros.append(("SSDFAST_WITH_CUDA", None))
        # Recorded for ssdfast._C.build_info() (`python -m ssdfast.check`), in ssdfast.cpp only (C++ flags:
        # nvcc would split the value at its commas); commas, not semicolons, for the shell that runs g++.
        archs = re.sub(r"[^0-9A-Za-z.+_]+", ",", os.environ.get("TORCH_CUDA_ARCH_LIST", "")).strip(",")
        if archs:
            cxx.append(f"-DSSDFAST_TORCH_CUDA_ARCH_LIST={archs}")
        ext = CUDAExtension
    else:
        ext = CppExtension
    return [
        ext(
            "ssdfast._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"] if sys.platform != "win32" else [],
            define_macros=define_macros,
        )
    ]


setup(
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
