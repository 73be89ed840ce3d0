"""collate_detection, make_loader, and corrupt images with and without strict."""
from __future__ import annotations

import gc
import logging
import time

import pytest
import torch

from ssdfast.data import SkippedSample, build_dataset, collate_detection, make_loader
from ssdfast.data.transforms import EvalTransform, TrainTransform
from ssdfast.errors import DataError

from .conftest import copy_dataset, truncate_file

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_collate_pads_and_counts_skipped():
    a = (torch.zeros(3, 8, 8), {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5]]), "labels": torch.tensor([2]), "index": 4})
    b = (torch.ones(3, 8, 8), {"boxes": torch.rand(3, 4), "labels": torch.tensor([1, 1, 3]), "index": 7})
    c = (torch.ones(3, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "index": 9})
    images, boxes, labels, indices, skipped, _notes = collate_detection([a, None, b, c, None])
    assert images.shape == (3, 3, 8, 8) and boxes.shape == (3, 3, 4) and labels.shape == (3, 3)
    assert labels.tolist() == [[2, -1, -1], [1, 1, 3], [-1, -1, -1]]
    assert indices == [4, 7, 9] and skipped == 2
    assert boxes[0, 1:].abs().sum() == 0
    images, boxes, labels, indices, skipped, _notes = collate_detection([None, None])
    assert images.shape[0] == 0 and indices == [] and skipped == 2


def test_loader_batches_and_is_reproducible(voc_root):
    ds = build_dataset("voc", [str(voc_root)], transform=TrainTransform(64, MEAN, STD))
    # workers draw their augmentation from seeds of the loader's generator: same seed, same batches
    loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=2, seed=3)
    first = [(b[3], b[1]) for b in loader]
    again = [(b[3], b[1]) for b in make_loader(ds, batch_size=4, shuffle=True, num_workers=2, seed=3)]
    assert [i for i, _ in first] == [i for i, _ in again]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(first, again))
    assert sorted(i for idx, _ in first for i in idx) == list(range(len(ds)))
    images, boxes, labels, indices, skipped, _notes = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and skipped == 0
    assert ((labels == -1) | (labels >= 1)).all()


def test_distributed_sampler(voc_root):
    ds = build_dataset("voc", [str(voc_root)], transform=EvalTransform(32, MEAN, STD))
    if not torch.distributed.is_available():
        pytest.skip("no torch.distributed")
    from torch.utils.data.distributed import DistributedSampler

    parts = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        parts.append(list(sampler))
    assert not set(parts[0]) & set(parts[1]) or len(ds) % 2
    with pytest.raises((ValueError, RuntimeError)):  # no process group: the sampler asks for one
        make_loader(ds, 2, True, 0, distributed=True)


@pytest.fixture()
def corrupt_voc(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    ds = build_dataset("voc", [str(root)])
    bad = ds.image_path(2)
    truncate_file(__import__("pathlib").Path(bad))
    return root, bad


def test_corrupt_image_skipped_with_count(corrupt_voc, caplog):
    root, bad = corrupt_voc
    ds = build_dataset("voc", [str(root)], transform=EvalTransform(32, MEAN, STD))
    with caplog.at_level(logging.WARNING, logger="ssdfast.data"):
        sample = ds[2]
        assert isinstance(sample, SkippedSample) and sample.path == bad
    assert bad in caplog.text and ds.stats["unreadable_images"] == 1
    seen = skipped = 0
    for images, _boxes, _labels, indices, n_skipped, notes in make_loader(ds, batch_size=3,
                                                                          shuffle=False, num_workers=2):
        seen += images.shape[0]
        skipped += n_skipped
        assert 2 not in indices
        assert (bad in " ".join(notes)) == (n_skipped == 1)  # the skip reaches the main process
    assert skipped == 1 and seen == len(ds) - 1


def test_corrupt_image_strict_raises_naming_the_path(corrupt_voc):
    root, bad = corrupt_voc
    ds = build_dataset("voc", [str(root)], transform=EvalTransform(32, MEAN, STD), strict=True)
    with pytest.raises(DataError, match=bad):
        ds[2]
    loader = make_loader(ds, batch_size=2, shuffle=False, num_workers=2)
    start = time.perf_counter()
    for _epoch in range(2):  # the persistent workers are restarted after the failure
        with pytest.raises(DataError, match=bad):
            for _ in loader:
                pass
    del loader
    gc.collect()
    assert time.perf_counter() - start < 5.0  # the workers were stopped, not left to time out


def test_persistent_workers_several_epochs(voc_root):
    ds = build_dataset("voc", [str(voc_root)], transform=EvalTransform(32, MEAN, STD))
    loader = make_loader(ds, batch_size=5, shuffle=True, num_workers=2, drop_last=True)
    assert len(loader) == len(ds) // 5
    for _epoch in range(2):
        batches = list(loader)
        assert len(batches) == len(ds) // 5 and all(b[0].shape == (5, 3, 32, 32) for b in batches)


def test_missing_image_skipped(tmp_path, voc_root):
    root = copy_dataset(voc_root, tmp_path / "voc")
    ds = build_dataset("voc", [str(root)])
    __import__("os").remove(ds.image_path(0))
    assert isinstance(ds[0], SkippedSample)
    with pytest.raises(DataError, match=ds.image_path(0)):
        build_dataset("voc", [str(root)], strict=True)[0]


def test_synthetic_type_detects_format_and_generates(tmp_path, coco_root, monkeypatch):
    ds = build_dataset("synthetic", [str(coco_root)], split="val")
    assert ds.category_ids == [0, 1, 3, 7, 8, 12]
    calls = []
    import ssdfast.data.synthetic as synthetic

    real = synthetic.generate

    def small(out, **kw):  # keep the test fast: 6 images instead of the default 1000
        calls.append(kw)
        return real(out, **{**kw, "num_images": 6, "image_size": 64})

    monkeypatch.setattr(synthetic, "generate", small)
    ds = build_dataset("synthetic", [str(tmp_path / "new")], split="train")
    assert calls and calls[0]["format"] == "voc" and len(ds) >= 1
    assert (tmp_path / "new" / "Annotations").is_dir()
