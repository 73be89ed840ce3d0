"""Fixtures shared across the test packages."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Idle OpenMP threads sleep instead of spinning (as the command-line tools set it): with pytest-xdist
# the test processes share the cores, and a spinning pool steals the other process's time slices.
# Set before torch loads OpenMP; a policy the user chose stays.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# Models exported on the fly for a runtime (ssdfast.runtimes.cache) go to a folder of this test run, never
# to the user's cache.
_CACHE = tempfile.mkdtemp(prefix="ssdfast-test-cache-")
atexit.register(shutil.rmtree, _CACHE, True)
os.environ["SSDFAST_CACHE_DIR"] = _CACHE

import pytest  # noqa: E402
import torch  # noqa: E402

from ssdfast.threads import available_cores  # noqa: E402


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without xdist installed, pytest must still run
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one test process per core this process may use (its CPU affinity, as the tools count)."""
    return available_cores()


def pytest_configure(config):
    """Under pytest-xdist (``-n``), each test process takes its share of the cores for torch's threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        torch.set_num_threads(max(1, available_cores() // workers))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot on a busy 2-core machine
    (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A briefly trained mb2-ssd-lite and the generated VOC set it was trained on (see tests/_trained.py):
    ``{"data", "checkpoint", "class_names"}``. Read-only by convention."""
    from tests._trained import train_briefly

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: a second thread only costs on a busy machine
    try:
        return train_briefly(tmp_path_factory.mktemp("trained"))
    finally:
        torch.set_num_threads(threads)
