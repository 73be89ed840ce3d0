"""Interleaved timing: contenders measured round-robin in one run, so their ratio survives noise."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_contenders(
    contenders: dict[str, Callable], *, rounds: int = 7, warmup: int = 1, min_time: float = 0.05, device: str = "cpu"
) -> dict[str, float]:
    """Median seconds per call of each contender, measured in interleaved rounds.

    Each round calls every contender enough times to run at least ``min_time`` seconds (calibrated
    once after warm-up), so fast kernels are not dominated by timer resolution.
    """
    reps: dict[str, int] = {}
    with torch.inference_mode():
        for name, fn in contenders.items():
            for _ in range(warmup):
                fn()
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            reps[name] = max(1, int(min_time / max(time.perf_counter() - t, 1e-6)))
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                _sync(device)
                t = time.perf_counter()
                for _ in range(reps[name]):
                    fn()
                _sync(device)
                samples[name].append((time.perf_counter() - t) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"
