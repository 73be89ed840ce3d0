"""Threads and worker processes sized from the cores this process may use, so that two runs sharing
a machine each get about half of it instead of starving each other.

Every command that computes on the CPU (training, evaluation, detection) calls :func:`plan_cpu` once
with the data-loading workers it will start: the main process then runs one intra-op thread per core
left to it (at least one); each worker runs one thread. Command-line entry points call
:func:`quiet_openmp` before importing torch: OpenMP threads then sleep when they wait instead of
spinning, which is what made two trainings on 2 cores take 5x the time of one (each run's spinning
threads burning the time slices the other run's threads needed).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

__all__ = ["available_cores", "default_num_workers", "plan_cpu", "planned_cpu", "quiet_openmp"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_num_workers(limit: int = 4) -> int:
    """Data-loading workers when the user gave none: one core is kept for the network, at most ``limit``.

    One worker keeps a CPU training step fed (decoding and augmenting a batch takes a fraction of a
    CPU step); on 1 core, none (the main process loads the data).
    """
    return max(0, min(limit, available_cores() - 1))


def plan_cpu(num_workers: int, device_type: str = "cpu", *, limit: int | None = None, busy_workers: bool = True) -> int:
    """Set torch's intra-op threads for a run with ``num_workers`` loader workers; returns the count.

    On CPU the network gets the cores the workers leave (at least one), or every core when the
    workers are mostly idle (``busy_workers=False``: CPU training, whose step is ~10x slower than its
    data pipeline); on a GPU one thread is enough beside the workers, which do the CPU work.
    ``limit``: never more threads than this (e.g. the count set before, when the caller chose fewer).
    ``OMP_NUM_THREADS`` set in the environment is the user's choice and wins.
    """
    import torch

    cores = available_cores()
    chosen = os.environ.get("OMP_NUM_THREADS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:
        threads = int(chosen)
    else:
        reserved = max(0, int(num_workers)) if busy_workers else 0
        threads = 1 if device_type != "cpu" else max(1, cores - reserved)
        threads = min(threads, cores, limit if limit is not None and limit > 0 else cores)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def planned_cpu(num_workers: int | None, device_type: str = "cpu", **options) -> Iterator[int]:
    """:func:`plan_cpu` for the block, with ``num_workers`` None meaning :func:`default_num_workers`;
    yields the number of workers. Torch's thread count is as it was after the block (for callers
    of a command's ``main()`` in their own process)."""
    import torch

    before = torch.get_num_threads()
    workers = default_num_workers() if num_workers is None else int(num_workers)
    plan_cpu(workers, device_type, **options)
    try:
        yield workers
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def quiet_openmp() -> bool:
    """Make OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
    policy. Effective only before torch is imported (OpenMP reads it when it loads); returns whether
    it took effect. Data workers inherit it."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "torch" not in sys.modules
