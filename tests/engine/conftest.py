"""Fixtures of the training-loop tests: a tiny VOC set, a copy of it with the problems real data sets
have, and tiny training settings (mb2-ssd-lite x0.25 at 96 px: a step takes milliseconds)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from ssdfast.engine import TrainConfig

#: Settings every tiny run shares; tests override what they are about.
TINY_SETTINGS: dict[str, Any] = dict(
    dataset_type="voc", net="mb2-ssd-lite", mb2_width_mult=0.25, resolution=96, batch_size=4, num_epochs=1,
    num_workers=0, lr=0.01, scheduler="cosine", debug_steps=1, device="cpu", progress=False, seed=0,
)


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., TrainConfig]:
    """``tiny_config(data, folder, **overrides)``: tiny settings training on ``data`` into ``folder``
    (12 training images and batch 4 on :func:`voc_data`: 3 steps an epoch)."""

    def make(data: Path, folder: Path, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**TINY_SETTINGS, "datasets": [str(data)], "checkpoint_folder": str(folder), **overrides})

    return make


@pytest.fixture(scope="session")
def voc_data(tmp_path_factory) -> Path:
    """A generated VOC set: 15 images of 96 px, 3 classes (12 train / 3 test). Read-only by convention."""
    from ssdfast.data.synthetic import generate

    root = tmp_path_factory.mktemp("voc")
    generate(root, format="voc", num_images=15, image_size=96, seed=0, num_classes=3)
    return root


def training_ids(root: Path) -> list[str]:
    """The image ids of a VOC set's training split."""
    return (root / "ImageSets" / "Main" / "trainval.txt").read_text().split()


@pytest.fixture
def broken_voc(voc_data, tmp_path) -> dict[str, Any]:
    """A copy of :func:`voc_data` with, among its training images, one truncated JPEG (80% of its bytes:
    used with a warning), one unreadable file (skipped) and one box reaching past its image (clipped).
    -> ``{"root", "truncated", "unreadable", "clipped_annotation"}``."""
    root = Path(shutil.copytree(voc_data, tmp_path / "broken"))
    ids = training_ids(root)
    truncated = root / "JPEGImages" / f"{ids[0]}.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.8)])
    unreadable = root / "JPEGImages" / f"{ids[1]}.jpg"
    unreadable.write_bytes(b"this is not an image " * 20)
    annotation = root / "Annotations" / f"{ids[2]}.xml"
    text = annotation.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    end = text.index("</xmax>")
    annotation.write_text(text[:start] + "5000" + text[end:])
    return {"root": root, "truncated": truncated, "unreadable": unreadable, "clipped_annotation": annotation}
