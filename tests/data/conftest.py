"""Small generated datasets (12-16 images, 96-128 px) shared by the data tests.

The session-wide copies are read-only by convention: a test that plants a corrupt file copies a
dataset to its own ``tmp_path`` first (:func:`copy_dataset`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssdfast.data import synthetic


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncate_file(path: Path, keep: float = 0.05) -> None:
    """Cut a file to ``keep`` of its bytes (the default leaves an image too little to be used)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory) -> Path:
    return Path(synthetic.generate(tmp_path_factory.mktemp("voc") / "shapes", "voc",
                                   num_images=12, image_size=112, seed=1, workers=1))


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    # 40 tiny images so that the empty-image and crowd cases both occur (seed chosen for that)
    return Path(synthetic.generate(tmp_path_factory.mktemp("coco") / "shapes", "coco",
                                   num_images=40, image_size=96, seed=0, workers=1))


@pytest.fixture(scope="session")
def oi_root(tmp_path_factory) -> Path:
    return Path(synthetic.generate(tmp_path_factory.mktemp("oi") / "shapes", "open_images",
                                   num_images=16, image_size=96, seed=2, workers=1))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors on a shared 2-core machine: thread hand-offs cost more than they save."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
