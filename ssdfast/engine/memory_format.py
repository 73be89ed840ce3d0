"""The memory format a run trains in: channels-last or NCHW, measured on the machine that trains.

Which layout trains a network faster depends on the network and on the processor: on GPUs the
tensor-core kernels want channels-last (AMP); on CPUs oneDNN's kernels differ by instruction set, so
the same VGG16 trains faster in NCHW on one x86 CPU and in channels-last on another (AVX-512 / AMX).
So ``ssdfast-train`` without ``--channels-last`` times the network's forward and backward pass in
both layouts on a small batch before training (:func:`measure_memory_format`) and trains in the
faster one; the choice and both times are logged and stored with the run's settings (a resumed run
keeps it, measuring nothing). ``--channels-last true|false`` skips the measurement.

The measurement leaves no trace: the images are drawn from a private generator (no global RNG is
advanced, no training batch is used), and the model's parameters, gradients, BatchNorm statistics and
layout are restored afterwards.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from .settings import TrainConfig

__all__ = ["LayoutChoice", "layout", "measure_memory_format", "training_memory_format"]

#: Images in the measuring batch (the layouts' relative speed, not the batch's, is what is measured).
MEASURE_BATCH = 2
#: Timed passes per layout, after one warm-up pass each (the best one counts).
MEASURE_ROUNDS = 2


@dataclass(frozen=True)
class LayoutChoice:
    """A measured layout: ``channels_last``, and the best seconds of a forward + backward pass of
    ``batch`` images in each layout (``nchw_s``, ``channels_last_s``; None when not measured)."""

    channels_last: bool
    nchw_s: float | None = None
    channels_last_s: float | None = None
    batch: int = MEASURE_BATCH

    @property
    def memory_format(self) -> torch.memory_format:
        return layout(self.channels_last)

    def describe(self) -> str:
        """One line for the log."""
        chosen = "channels-last" if self.channels_last else "NCHW"
        if self.nchw_s is None or self.channels_last_s is None:
            return f"Memory format: {chosen}"
        return (f"Memory format: {chosen}, measured faster here (forward + backward of {self.batch} images: "
                f"NCHW {self.nchw_s * 1000:.0f} ms, channels-last {self.channels_last_s * 1000:.0f} ms; "
                "--channels-last true|false skips the measurement)")


def layout(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` or ``torch.contiguous_format`` (NCHW)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def measure_memory_format(model: nn.Module, image_size: int, device: torch.device, *,
                          amp_dtype: torch.dtype | None = None, batch: int = MEASURE_BATCH,
                          rounds: int = MEASURE_ROUNDS, combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          timer: Callable[[], float] | None = None) -> LayoutChoice:
    """Time ``model``'s forward and backward pass on ``batch`` random images of ``image_size`` in NCHW and
    in channels-last (interleaved, one warm-up pass each, the best of ``rounds``) and return the faster.

    On a GPU nothing is timed: channels-last (the tensor-core layout). ``combine`` sums the two times
    over the processes of a distributed run (so every process picks the same layout). The model comes
    back exactly as it was: parameters, gradients, buffers (BatchNorm statistics) and layout.
    """
    if device.type != "cpu":
        return LayoutChoice(True)
    timer = timer or time.perf_counter
    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_grads = [p.grad for p in model.parameters()]
    for p in model.parameters():  # backward must not accumulate into the kept gradients
        p.grad = None
    was_training = model.training
    was_channels_last = _is_channels_last(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, image_size, image_size, generator=generator).to(device)
    formats = (torch.contiguous_format, torch.channels_last)
    best = [float("inf"), float("inf")]
    try:
        model.train()
        for round_ in range(rounds + 1):
            for i, memory_format in enumerate(formats):
                model.to(memory_format=memory_format)
                x = images.contiguous(memory_format=memory_format)
                start = timer()
                _forward_backward(model, x, device, amp_dtype)
                if round_ > 0:  # round 0 warms each layout up (oneDNN primitives, allocations)
                    best[i] = min(best[i], timer() - start)
    finally:
        with torch.no_grad():
            model.load_state_dict(saved_state)
        for p, g in zip(model.parameters(), saved_grads):
            p.grad = g
        model.train(was_training)
        model.to(memory_format=layout(was_channels_last))
    times = torch.tensor(best, dtype=torch.float64)
    if combine is not None:
        times = combine(times)
    nchw, channels_last = (float(t) for t in times)
    return LayoutChoice(channels_last < nchw, nchw, channels_last, batch)


def training_memory_format(model: nn.Module, config: TrainConfig, device: torch.device,
                           log: logging.Logger) -> torch.memory_format:
    """The layout a run trains ``model`` in: ``config.channels_last`` when given; else measured
    (:func:`measure_memory_format`, agreed by every process of a distributed run), logged, and stored in
    ``config.channels_last`` so that the run's checkpoints (and a ``--resume``) keep it."""
    from .distributed import all_reduce_sum
    from .optim import amp_dtype

    if config.channels_last is None:
        choice = measure_memory_format(model, model.config.image_size, device,  # type: ignore[attr-defined]
                                       amp_dtype=amp_dtype(config, device), combine=all_reduce_sum)
        config.channels_last = choice.channels_last
        log.info(choice.describe())
    return layout(config.channels_last)


def _forward_backward(model: nn.Module, x: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None) -> None:
    """One forward and backward pass with a loss shaped like the training one (every output used)."""
    with torch.enable_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        confidences, locations = model(x)
        loss = confidences.float().logsumexp(-1).mean() + locations.float().abs().mean()
    loss.backward()
    for p in model.parameters():
        p.grad = None


def _is_channels_last(model: nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not \
        weight.is_contiguous()
