"""Checkpoints: the agreed format, exact round trips, atomic writes and clear errors; load_model_file,
every command's loader."""
from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np
import pytest
import torch

import ssdfast.model_files.checkpoint as checkpoint_module
from ssdfast.errors import DataError, ModelFileError, UserError
from ssdfast.model_files import (
    load_checkpoint,
    load_model_file,
    model_from_checkpoint,
    save_checkpoint,
)
from ssdfast.models import create_model

CLASSES = ["BACKGROUND", "cat", "dog"]


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
    with pytest.raises(ModelFileError, match=f"^{missing}: no such file$"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pth"
    save_checkpoint(corrupt, model, CLASSES)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"^--checkpoint {corrupt}: not a torch weights file"):
        load_checkpoint(corrupt, flag="--checkpoint")
    foreign = tmp_path / "mb2-ssd-lite-mp-0_686.pth"
    torch.save(model.state_dict(), foreign)  # a pytorch-ssd style bare state dict
    with pytest.raises(ValueError, match=f"{foreign}: not an ssdfast checkpoint.*--net and --label-file"):
        model_from_checkpoint(foreign)
    future = tmp_path / "future.pth"
    torch.save({"format": "ssdfast-checkpoint", "version": 99}, future)
    with pytest.raises(ModelFileError, match="version 99"):
        load_checkpoint(future)
    damaged = tmp_path / "damaged.pth"
    torch.save({"format": "ssdfast-checkpoint", "version": 1, "net": "mb2-ssd-lite", "config": {}, "class_names": []},
               damaged)
    with pytest.raises(ModelFileError, match=f"{damaged}: a damaged checkpoint: 'model' should be a dict, got "):
        load_checkpoint(damaged)
    with pytest.raises(ValueError, match=r"class names of 1 class \+ background for a model of 2 classes \+ "):
        save_checkpoint(tmp_path / "x.pth", model, CLASSES[:2])
    with pytest.raises(TypeError, match=r"train_state\['args'\]\['f'\]"):
        save_checkpoint(tmp_path / "x.pth", model, CLASSES, train_state={"args": {"f": object()}})
    # one error type for a model file, which the command lines print as one line (a UserError), and a ValueError
    assert issubclass(ModelFileError, UserError) and issubclass(ModelFileError, ValueError)


# ------------------------------------------------------------------ load_model_file: every command's loader
def _outputs(model, seed=0):
    x = torch.randn(2, 3, model.config.image_size, model.config.image_size,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_load_model_file_reads_an_ssdfast_checkpoint(tmp_path, model):
    path = tmp_path / "best.pth"
    save_checkpoint(path, model, CLASSES)
    loaded = load_model_file(path)
    assert loaded.kind == "ssdfast" and loaded.class_names == CLASSES and loaded.checkpoint is not None
    assert loaded.model.config.antialias is True
    for a, b in zip(_outputs(loaded.model), _outputs(model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    labels = tmp_path / "names.txt"
    labels.write_text("kitten,puppy\n", encoding="utf-8")
    assert load_model_file(path, net="MB2_SSD_Lite", label_file=labels).class_names == ["BACKGROUND", "kitten", "puppy"]
    with pytest.raises(ModelFileError, match=f"^--model {path}: holds a mb2-ssd-lite network, not vgg16-ssd"):
        load_model_file(path, net="vgg16-ssd", flag="--model")
    labels.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=rf"predicts 2 classes \+ background \(cat, dog\) but label file {labels} "
                                             r"has 3 classes \+ background"):
        load_model_file(path, label_file=labels)
    with pytest.raises(ModelFileError, match="takes 64x64 images, not resolution 512"):
        load_model_file(path, resolution=512)
    with pytest.raises(DataError, match="cannot read label file"):  # the label file's own error, naming it
        load_model_file(path, label_file=tmp_path / "no-labels.txt")


def test_load_model_file_reads_a_pytorch_ssd_state_dict(tmp_path, model):
    folder = tmp_path / "models" / "fruit"
    folder.mkdir(parents=True)
    path = folder / "mb2-ssd-lite-Epoch-9-Loss-2.1.pth"
    torch.save(model.state_dict(), path)  # what pytorch-ssd's net.save() writes: a bare state dict
    with pytest.raises(ModelFileError, match="--net"):
        load_model_file(path)
    with pytest.raises(ModelFileError, match="--label-file"):
        load_model_file(path, net="mb2-ssd-lite", width_mult=0.25, resolution=64)
    (folder / "labels.txt").write_text("cat\ndog\n", encoding="utf-8")  # dusty-nv's: no BACKGROUND
    loaded = load_model_file(path, net="mb2-ssd-lite", width_mult=0.25, resolution=64)
    assert loaded.kind == "pytorch-ssd" and loaded.checkpoint is None
    assert loaded.class_names == CLASSES and loaded.label_file == str(folder / "labels.txt")
    assert loaded.model.config.antialias is False  # fed as pytorch-ssd fed it
    assert not loaded.model.training
    for a, b in zip(_outputs(loaded.model), _outputs(model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = tmp_path / "voc-model-labels.txt"
    other.write_text("BACKGROUND,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"4 classes \+ background of .*voc-model-labels.txt"):
        load_model_file(path, net="mb2-ssd-lite", width_mult=0.25, resolution=64, label_file=other)
    with pytest.raises(ModelFileError, match="does not load as a pytorch-ssd mb1-ssd"):
        load_model_file(path, net="mb1-ssd", resolution=64)


def test_load_model_file_identifies_a_pytorch_ssd_file_without_net(tmp_path):
    """No --net: the network and its variant come from the file's keys and shapes."""
    from tests.models import pytorch_ssd_reference as ref
    from tests.models.test_pytorch_ssd import randomize

    source = randomize(ref.create("mb3-small-ssd-lite", 3), seed=2)
    path = tmp_path / "mb3-small-ssd-lite.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(ModelFileError,
                       match=r"a pytorch-ssd mb3-small-ssd-lite \(--net mb3-small-ssd-lite\), .*--label-file"):
        load_model_file(path)
    (tmp_path / "labels.txt").write_text("cat\ndog\n", encoding="utf-8")
    loaded = load_model_file(path)
    assert loaded.kind == "pytorch-ssd" and loaded.model.config.name == "mb3-small-ssd-lite"
    assert loaded.model.config.backbone == "pytorch-ssd" and loaded.class_names == CLASSES
    x = torch.randn(2, 3, 300, 300)
    with torch.no_grad():
        for a, b in zip(loaded.model(x), source(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelFileError, match=r"a pytorch-ssd mb3-small-ssd-lite, not at width multiplier 0.5"):
        load_model_file(path, width_mult=0.5)
    junk = tmp_path / "junk.pth"
    torch.save({"base_net.0.weight": torch.zeros(4, 3, 3, 3)}, junk)
    with pytest.raises(ModelFileError, match="give its network with --net .*none of pytorch-ssd's networks"):
        load_model_file(junk)


def test_old_checkpoints_rebuild_their_variant(tmp_path):
    """Checkpoints written before ``conv4_3_norm`` / ``backbone`` existed (their config lacks them):
    vgg16-ssd was the L2Norm one, mb3-*-ssd-lite were on torchvision's MobileNetV3."""
    for name, options, size in [("vgg16-ssd", {"conv4_3_norm": "l2norm"}, 272),
                                ("mb3-large-ssd-lite", {"backbone": "torchvision"}, 64)]:
        model = create_model(name, 3, image_size=size, **options).eval()
        path = tmp_path / f"{name}.pth"
        save_checkpoint(path, model, CLASSES)
        ckpt = torch.load(path, weights_only=True)
        for field in ("conv4_3_norm", "backbone", "antialias"):
            del ckpt["config"][field]
        torch.save(ckpt, path)
        loaded = load_model_file(path)
        assert loaded.model.config.options == options
        for a, b in zip(_outputs(loaded.model), _outputs(model)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
