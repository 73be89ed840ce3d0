"""CUDA tensors on an extension built without CUDA kernels: the reference runs them, after one warning.

No GPU is needed: the "no CUDA kernels" state is the module's cached flag, and a CUDA tensor is a CPU
tensor that answers ``is_cuda`` (the one device test the op wrappers make), so the reference's results
can be compared with the kernels' on the CPU.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from ssdfast import ops
from ssdfast.ops import reference as reference_module
from ssdfast.ops import wrappers

from .conftest import sample_calls

CALLS = sample_calls(91)


class _CudaLooking(torch.Tensor):
    """A CPU tensor that says it is on a CUDA device."""

    @property
    def is_cuda(self) -> bool:
        return True


def _looking_cuda(args: tuple) -> tuple:
    return tuple(a.as_subclass(_CudaLooking) if isinstance(a, torch.Tensor) else a for a in args)


def _leaves(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture
def reference_calls(native, monkeypatch):
    """The names of the reference ops called during the test (each still computes its result)."""
    called: list[str] = []
    for name, _ in CALLS:
        original = getattr(reference_module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            called.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(reference_module, name, spy)
    monkeypatch.setattr(wrappers, "_CUDA_FALLBACK_WARNED", False)
    monkeypatch.delenv("SSDFAST_BACKEND", raising=False)
    return called


def _run_all(args_of) -> tuple[dict, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = {name: getattr(ops, name)(*args_of(args)) for name, args in CALLS}
        outs_again = {name: getattr(ops, name)(*args_of(args)) for name, args in CALLS}
    for name in outs:  # the same results on a second round (the warning only once, below)
        assert all(torch.equal(a, b) for a, b in zip(_leaves(outs[name]), _leaves(outs_again[name]))), name
    return outs, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_the_flag_says_whether_the_extension_has_cuda_kernels(native):
    from ssdfast import _C

    assert wrappers._CUDA_KERNELS is bool(_C.build_info()["with_cuda"])
    assert wrappers._CUDA_KERNELS is torch._C._dispatch_has_kernel_for_dispatch_key("ssdfast::box_iou", "CUDA")


def test_cuda_tensors_without_cuda_kernels_run_the_reference_with_one_warning(reference_calls, monkeypatch):
    monkeypatch.setattr(wrappers, "_CUDA_KERNELS", False)
    outs, caught = _run_all(_looking_cuda)
    names = [name for name, _ in CALLS]
    assert all(reference_calls.count(name) >= 2 for name in names), reference_calls  # every op, every time
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "without CUDA kernels" in message and "FORCE_CUDA=1 pip install --no-build-isolation" in message
    assert caught[0].filename == __file__  # pointed at the op's caller
    for name, args in CALLS:  # the reference's results, equal to the CPU kernels' on these inputs
        expected = getattr(torch.ops.ssdfast, name)(*args)
        for got, exp in zip(_leaves(outs[name]), _leaves(expected)):
            assert got.dtype == exp.dtype and got.shape == exp.shape, name
            torch.testing.assert_close(got.as_subclass(torch.Tensor), exp, rtol=1e-5, atol=1e-5, msg=name)


def test_cpu_tensors_keep_the_cpu_kernels(reference_calls, monkeypatch):
    monkeypatch.setattr(wrappers, "_CUDA_KERNELS", False)
    _, caught = _run_all(lambda args: args)
    assert reference_calls == [] and caught == []


def test_cuda_tensors_with_cuda_kernels_run_them(reference_calls, monkeypatch):
    monkeypatch.setattr(wrappers, "_CUDA_KERNELS", True)  # here the kernels that run are the CPU ones underneath
    _, caught = _run_all(_looking_cuda)
    assert reference_calls == [] and caught == []


def test_backend_native_makes_it_an_error(reference_calls, monkeypatch):
    monkeypatch.setattr(wrappers, "_CUDA_KERNELS", False)
    monkeypatch.setenv("SSDFAST_BACKEND", "native")
    for name, args in CALLS:
        with pytest.raises(RuntimeError, match="SSDFAST_BACKEND=native but ssdfast._C was built without CUDA kernels"):
            getattr(ops, name)(*_looking_cuda(args))
    assert reference_calls == []
