"""pytest-benchmark runs of benchmarks/ keep their JSON in the repository, per machine:

    python -m pytest benchmarks --benchmark-autosave        # saves benchmarks/results/pytest-benchmark/<machine>/NNNN_<commit>.json
    python -m pytest benchmarks --benchmark-compare         # this commit against the last saved run
    python -m pytest benchmarks --benchmark-compare=0001 --benchmark-compare-fail=mean:10%

so a commit's numbers can be compared with any earlier commit's saved file (``--benchmark-storage``
given on the command line still wins).
"""  # noqa: E501
from __future__ import annotations

import os

import pytest

STORAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pytest-benchmark")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    storage = getattr(config.option, "benchmark_storage", None)
    if storage is not None and storage in ("file://./.benchmarks", "./.benchmarks"):
        config.option.benchmark_storage = "file://" + STORAGE
