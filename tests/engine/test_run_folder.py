"""The checkpoint folder: leftovers of killed saves removed, a previous run's files moved (never
deleted), every checkpoint stamped with its run's id."""
from __future__ import annotations

import pytest
import torch

from ssdfast.engine import Trainer
from ssdfast.engine.run_folder import PREVIOUS_RUNS, move_previous_run, remove_temp_leftovers

pytestmark = pytest.mark.usefixtures("one_thread")


def _short(tiny_config, data, folder, **overrides):
    return tiny_config(data, folder, iterations=1, num_epochs=None, validation_dataset="none", **overrides)


def test_temp_files_of_a_killed_save_are_removed_and_logged(voc_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    folder.mkdir()
    leftover = folder / ".last.pth.k2j3h4_x.tmp"  # what checkpoint's atomic write leaves when killed
    leftover.write_bytes(b"\0" * 4096)
    others = [folder / ".notes.tmp", folder / "last.pth.tmp", folder / ".best.pth.partial"]
    for path in others:
        path.write_text("not ours")
    Trainer(_short(tiny_config, voc_data, folder)).fit()
    assert not leftover.exists() and all(p.exists() for p in others)
    assert "Removed 1 temporary file(s) left by an interrupted checkpoint save: .last.pth.k2j3h4_x.tmp" in (
        folder / "train.log").read_text()
    assert remove_temp_leftovers(tmp_path / "nowhere") == []


def test_a_new_run_moves_the_previous_runs_files_aside(voc_data, tmp_path, tiny_config):
    folder = tmp_path / "models" / "fruit"
    Trainer(_short(tiny_config, voc_data, folder)).fit()
    first = torch.load(folder / "last.pth", weights_only=True)
    first_id = first["train_state"]["run_id"]
    assert isinstance(first_id, str) and first_id
    # what a pytorch-ssd run and an export leave in a jetson-inference model folder
    pretrained = folder / "mb2-ssd-lite-Epoch-0-Loss-9.9.pth"
    torch.save(first["model"], pretrained)  # used by the next run: stays
    (folder / "mb2-ssd-lite-Epoch-1-Loss-8.8.pth").write_bytes(b"old")
    (folder / "ssd-mobilenet.onnx").write_bytes(b"old")
    (folder / "ssd-mobilenet.onnx.1.1.8201.GPU.FP16.engine").write_bytes(b"old")
    (folder / "notes.txt").write_text("the user's own file")

    Trainer(_short(tiny_config, voc_data, folder, pretrained_ssd=str(pretrained))).fit()
    [previous] = list((folder / PREVIOUS_RUNS).iterdir())
    moved = sorted(p.name for p in previous.iterdir())
    for name in ("last.pth", "labels.txt", "metrics.jsonl", "train.log", "curves.png",
                 "mb2-ssd-lite-Epoch-1-Loss-8.8.pth", "ssd-mobilenet.onnx",
                 "ssd-mobilenet.onnx.1.1.8201.GPU.FP16.engine"):
        assert name in moved, moved
    assert pretrained.exists() and (folder / "notes.txt").exists()
    assert torch.load(previous / "last.pth", weights_only=True)["train_state"]["run_id"] == first_id
    second_id = torch.load(folder / "last.pth", weights_only=True)["train_state"]["run_id"]
    assert second_id != first_id
    log = (folder / "train.log").read_text()
    assert "held another run's files: moved" in log and str(previous) in log and "ssd-mobilenet.onnx" in log
    assert "Weights: --pretrained-ssd" in log


def test_move_previous_run_never_overwrites(tmp_path):
    for _ in range(2):
        (tmp_path / "last.pth").write_bytes(b"x")
        destination, moved = move_previous_run(tmp_path)
        assert moved == ["last.pth"] and (destination / "last.pth").exists()
    assert len(list((tmp_path / PREVIOUS_RUNS).iterdir())) == 2
    assert move_previous_run(tmp_path) == (None, [])
