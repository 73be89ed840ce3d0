"""pytest-benchmark: each op, native vs reference vs today's loop, at SSD300 sizes (CPU).

    python -m pytest benchmarks/test_bench_ops.py --benchmark-autosave  # JSON in benchmarks/results/pytest-benchmark/
    python -m pytest benchmarks/test_bench_ops.py --benchmark-compare   # against the last saved run
"""
from __future__ import annotations

import pytest
import torch

from ssdfast import ops

from .ops_cases import all_cases

pytestmark = pytest.mark.skipif(ops.backend() != "native", reason="ssdfast._C is not built")

_CASES = all_cases("cpu")
_PARAMS = [(case, who) for case, contenders in _CASES.items() for who in contenders]


@pytest.mark.parametrize("case,who", _PARAMS, ids=[f"{c.split(' ')[0]}-{w}" for c, w in _PARAMS])
def test_op(benchmark, case, who):
    fn = _CASES[case][who]
    benchmark.group = case
    with torch.inference_mode():
        benchmark(fn)
