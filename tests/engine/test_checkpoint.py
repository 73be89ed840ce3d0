"""Checkpoints: the agreed format, exact round trips, atomic writes and clear errors."""
from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np
import pytest
import torch

import ssdfast.engine.checkpoint as checkpoint_module
from ssdfast.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from ssdfast.models import create_model

CLASSES = ["BACKGROUND", "cat", "dog"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=64).eval()


def test_round_trip(model, tmp_path):
    path = tmp_path / "run" / "last.pth"  # the folder is created
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": None,
        "scaler": None,
        "epoch": 3,
        "step": 120,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1][:4]},
        "metrics": {"mAP": np.float64(0.5), "losses": [1.0, 0.5]},
        "args": argparse.Namespace(net="mb2-ssd-lite", datasets=[pathlib.Path("/data/voc")], lr=0.01),
    }
    save_checkpoint(path, model, CLASSES, category_ids=[0, 17, 18], train_state=train_state)
    ckpt = torch.load(path, weights_only=True)  # readable without trusting the file
    assert list(ckpt) == ["format", "version", "net", "config", "class_names", "category_ids", "model", "train_state"]
    assert ckpt["format"] == "ssdfast-checkpoint" and ckpt["version"] == 1 and ckpt["net"] == "mb2-ssd-lite"
    assert ckpt["config"] == model.config.to_dict()
    assert ckpt["class_names"] == CLASSES and ckpt["category_ids"] == [0, 17, 18]
    state = ckpt["train_state"]
    assert state["epoch"] == 3 and state["step"] == 120
    assert state["args"] == {"net": "mb2-ssd-lite", "datasets": ["/data/voc"], "lr": 0.01}
    assert state["metrics"]["mAP"] == 0.5 and isinstance(state["rng"]["numpy"], torch.Tensor)
    assert state["rng"]["torch"].dtype == torch.uint8

    assert load_checkpoint(path)["net"] == "mb2-ssd-lite"
    rebuilt, names = model_from_checkpoint(path)
    assert names == CLASSES and not rebuilt.training
    assert rebuilt.config == model.config and torch.equal(rebuilt.priors, model.priors)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            assert torch.equal(a, b)
    rebuilt2, _ = model_from_checkpoint(load_checkpoint(path))  # from the loaded dict too
    assert rebuilt2.state_dict().keys() == model.state_dict().keys()


def test_wrapped_models_save_the_plain_network(model, tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, torch.compile(model), CLASSES)
    keys = list(load_checkpoint(path)["model"])
    assert keys == list(model.state_dict()) and not any(k.startswith("_orig_mod") for k in keys)
    assert load_checkpoint(path)["train_state"] is None


def test_atomic_write_leaves_no_partial_file(model, tmp_path, monkeypatch):
    path = tmp_path / "best.pth"
    save_checkpoint(path, model, CLASSES)
    good = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, CLASSES)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new.pth", model, CLASSES)
    assert path.read_bytes() == good  # the previous checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["best.pth"]  # no temporary or partial file


def test_errors_name_the_file(model, tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError, match=f"checkpoint {missing} does not exist"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pth"
    save_checkpoint(corrupt, model, CLASSES)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"cannot read checkpoint {corrupt}"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "mb2-ssd-lite-mp-0_686.pth"
    torch.save(model.state_dict(), foreign)  # a pytorch-ssd style bare state dict
    with pytest.raises(ValueError, match=f"{foreign} is not an ssdfast checkpoint.*--pretrained-ssd"):
        model_from_checkpoint(foreign)
    future = tmp_path / "future.pth"
    torch.save({"format": "ssdfast-checkpoint", "version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)
    with pytest.raises(ValueError, match="2 class names for a model of 3 classes"):
        save_checkpoint(tmp_path / "x.pth", model, CLASSES[:2])
    with pytest.raises(CheckpointError, match=r"train_state\['args'\]\['f'\]"):
        save_checkpoint(tmp_path / "x.pth", model, CLASSES, train_state={"args": {"f": object()}})
    assert issubclass(CheckpointError, ValueError)
