"""Reproducible data order and augmentation, and the RNG states a checkpoint stores.

Everything random in an epoch is a function of ``(seed, epoch)``: :class:`EpochSampler` orders the
epoch with ``seed + epoch`` (as :class:`~torch.utils.data.DistributedSampler` does) and gives each
sample a seed derived from ``(seed, epoch, index)``; :class:`SeededSamples` loads the sample under
RNGs seeded with it, whatever the number of data workers and whatever was loaded before. That is what
lets a run resume in the middle of an epoch exactly.

Data workers report a strict dataset's error as a :class:`SampleError` inside the batch instead of
raising there (PyTorch would re-raise it in the main process wrapped in a multi-line worker
traceback); :func:`batches` raises it in the main process as the one-line ``DataError`` it is.
"""
from __future__ import annotations

import contextlib
import random
import signal
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = [
    "derive_seed",
    "isolated_rng",
    "SeededSamples",
    "GuardedSamples",
    "EpochSampler",
    "epoch_loader",
    "SampleError",
    "collate_batch",
    "batches",
    "worker_init",
    "get_rng_state",
    "set_rng_state",
    "seed_everything",
]


def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from a few non-negative integers (numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with torch, ``random`` and numpy seeded from ``seed``, then put the old states back."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass
class SampleError:
    """A sample whose loading raised a data error (a strict dataset's bad image): ``message`` names the file."""

    index: int
    message: str


class GuardedSamples(Dataset):
    """``dataset`` whose :class:`~ssdfast.errors.DataError` (a strict dataset's bad image) comes back as a
    :class:`SampleError` for :func:`batches` to raise in the main process."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        from ..errors import DataError

        try:
            return self.dataset[index]
        except DataError as exc:
            return SampleError(index, str(exc))


class SeededSamples(GuardedSamples):
    """Wraps a dataset so ``self[(index, seed)]`` loads ``dataset[index]`` under RNGs seeded with ``seed``.

    This makes a sample's augmentation independent of which worker loads it and of what was loaded
    before. A :class:`~ssdfast.errors.DataError` (of a strict dataset) comes back as a
    :class:`SampleError` for :func:`collate_batch` to raise in the main process, as in
    :class:`GuardedSamples`.
    """

    def __getitem__(self, key: tuple[int, int]) -> Any:  # type: ignore[override]
        index, seed = key
        with isolated_rng(seed):
            return super().__getitem__(index)


def collate_batch(batch: Sequence[Any]) -> Any:
    """:func:`ssdfast.data.collate_detection`, or the batch's first :class:`SampleError` (collating runs
    in the data worker: :func:`batches` raises it in the main process)."""
    from ..data import collate_detection

    for item in batch:
        if isinstance(item, SampleError):
            return item
    return collate_detection(batch)


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The :class:`~ssdfast.data.DetectionBatch` es of a loader whose ``collate_fn`` is
    :func:`collate_batch`; a :class:`SampleError` is raised here as the one-line ``DataError`` it is."""
    from ..errors import DataError

    for batch in loader:
        if isinstance(batch, SampleError):
            raise DataError(batch.message)
        yield batch


class EpochSampler(DistributedSampler):
    """:class:`DistributedSampler` for one epoch that can start part-way and seeds every sample.

    The order is DistributedSampler's (``seed + epoch``, padded so every rank gets the same count,
    rank ``r`` taking every ``world_size``-th index); ``start`` skips this rank's first ``start``
    indices (a resumed epoch). Yields ``(index, sample_seed)`` with ``sample_seed`` a function of
    ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Dataset, *, epoch: int, seed: int, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0, start: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        for index in indices:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def epoch_loader(dataset: Dataset, *, epoch: int, seed: int, batch_size: int, start: int = 0, num_replicas: int = 1,
                 rank: int = 0, num_workers: int = 0, drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """The batches of ``dataset`` for ``epoch`` on process ``rank`` of ``num_replicas``, from this rank's sample
    ``start`` on: their order and every sample's randomness are functions of ``(seed, epoch)``."""
    sampler = EpochSampler(dataset, epoch=epoch, seed=seed, shuffle=True, num_replicas=num_replicas, rank=rank,
                           start=start)
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, epoch, 1 << 40))
    return DataLoader(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_batch, drop_last=drop_last, generator=generator, pin_memory=pin_memory,
                      worker_init_fn=worker_init if num_workers > 0 else None)


def worker_init(worker_id: int) -> None:
    """Data workers run one thread each (they are the parallelism and must not starve the network)
    and leave Ctrl-C to the main process, which stops at the end of a step and saves."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------ RNG states
def get_rng_state() -> dict:
    """torch, python ``random``, numpy (and CUDA) RNG states as tensors / lists / numbers, so a
    checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": [int(x) for x in py_state], "gauss_next": gauss},
        "numpy": {"kind": str(np_kind), "keys": np_keys.tolist(), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(x) for x in py["state"]), py["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
