"""read_model_file: the one torch.load of ssdfast. What a file is (ssdfast checkpoint, pytorch-ssd
detector, other weights), its state dict unwrapped, and one-line errors naming the flag and the file."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from ssdfast.errors import ModelFileError, UserError
from ssdfast.model_files import load_weights, read_model_file, save_checkpoint
from ssdfast.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["BACKGROUND", "cat", "dog"]


def test_what_a_file_is(model, tmp_path):
    ckpt = tmp_path / "last.pth"
    save_checkpoint(ckpt, model, CLASSES, train_state={"args": {"lr": 0.5}, "run_id": "r1", "step": 3})
    read = read_model_file(ckpt, flag="--resume")
    assert (read.kind, read.path, read.flag) == ("ssdfast", str(ckpt), "--resume")
    assert read.checkpoint["class_names"] == CLASSES and read.state_dict.keys() == model.state_dict().keys()
    assert read.continues_run and read.saved_settings == {"lr": 0.5} and read.run_id == "r1"

    # a pytorch-ssd detector saved from DataParallel inside a {"state_dict": ...} wrapper
    wrapped = tmp_path / "mb2-ssd-lite-Epoch-3-Loss-2.0.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, wrapped)
    read = read_model_file(wrapped)
    assert read.kind == "pytorch-ssd" and read.checkpoint is None and not read.continues_run
    assert read.saved_settings == {} and read.run_id is None
    for key, value in model.state_dict().items():
        assert torch.equal(read.state_dict[key], value)

    base = tmp_path / "imagenet.pth"
    torch.save(model.base_net.state_dict(), base)
    assert read_model_file(base).kind == "weights"


def test_zip_files_are_memory_mapped_legacy_ones_read_whole(model, tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        calls.append(kwargs)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    new, legacy = tmp_path / "new.pth", tmp_path / "legacy.pth"
    torch.save(model.state_dict(), new)
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    for path in (new, legacy):
        assert read_model_file(path).state_dict.keys() == model.state_dict().keys()
    read_model_file(new, mmap=False)  # whole: for tensors that live on (a resumed optimizer's state)
    assert [(c["mmap"], c["weights_only"], c["map_location"]) for c in calls] == [
        (True, True, "cpu"), (False, True, "cpu"), (False, True, "cpu")]


def test_errors_are_one_line_naming_the_flag_and_the_file(tmp_path):
    missing = tmp_path / "missing.pth"
    pickled = tmp_path / "whole-model.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, pickled)  # a pickled module, not a plain weights file
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    no_tensors = tmp_path / "settings.pth"
    torch.save({"epoch": 3, "lr": 0.1}, no_tensors)
    objects = "not a plain weights file: it stores Python objects (torch.nn.modules.linear.Linear)"
    for path, problem in [(missing, "no such file"),
                          (pickled, objects),
                          (garbage, "not a torch weights file (corrupt, truncated or another format)"),
                          (no_tensors, "neither an ssdfast checkpoint nor a state dict")]:
        with pytest.raises(ModelFileError) as info:
            read_model_file(path, flag="--pretrained-ssd")
        message = str(info.value)
        assert message.startswith(f"--pretrained-ssd {path}: {problem}") and "\n" not in message, message
        with pytest.raises(ModelFileError, match=f"^{path}: "):  # no flag: the file alone
            read_model_file(path)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_load_weights_names_the_flag_and_the_network_in_one_line(model, tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(create_model("mb1-ssd", 3, image_size=64).state_dict(), path)
    with pytest.raises(ModelFileError) as info:
        load_weights(model, path, flag="--pretrained-ssd")
    message = str(info.value)
    assert message.startswith(f"--pretrained-ssd {path}: {path} does not fit mb2-ssd-lite")
    assert "the file is a pytorch-ssd mb1-ssd" in message and "\n" not in message and len(message) < 600


def test_only_read_py_calls_torch_load():
    """One reader: no other module of ssdfast calls torch.load."""
    package = Path(__file__).resolve().parents[2] / "ssdfast"
    callers = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                callers.append(str(path.relative_to(package)))
    assert callers == ["model_files/read.py"]
