"""Threads and worker processes sized from the cores this process may use, so that two runs sharing
a machine each get about half of it instead of starving each other.

Every command that computes on the CPU (training, evaluation, detection) calls :func:`plan_cpu` once
with the data-loading workers it will start: the main process then runs one intra-op thread per core
left to it (at least one). More busy threads than cores makes OpenMP spin-wait, which costs far more
than it gains.
"""
from __future__ import annotations

import os

__all__ = ["available_cores", "default_num_workers", "plan_cpu"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_num_workers(limit: int = 4) -> int:
    """Data-loading workers when the user gave none: one core is kept for the network, at most ``limit``."""
    return max(0, min(limit, available_cores() - 1))


def plan_cpu(num_workers: int, device_type: str = "cpu") -> int:
    """Set torch's intra-op threads for a run with ``num_workers`` loader workers; returns the count.

    On CPU the network gets the cores the workers leave (at least one); on a GPU one thread is
    enough beside the workers, which do the CPU work.
    """
    import torch

    cores = available_cores()
    threads = 1 if device_type != "cpu" else max(1, cores - max(0, int(num_workers)))
    threads = min(threads, cores)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
