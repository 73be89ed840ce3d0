"""pick_model_file: the file `ssdfast-export --model-dir DIR` exports from a training folder.

pytorch-ssd folders: the lowest loss in the names, as its onnx_export.py picks. ssdfast run folders:
best.pth only when it is of the run last.pth ends (run id, else the training history), else
last.pth. A reused folder never gives back a stale model.
"""
from __future__ import annotations

import os

import pytest
import torch

from ssdfast.errors import ModelFileError
from ssdfast.model_files import pick_model_file, pytorch_ssd_loss, save_checkpoint

# Small networks gain nothing from a second thread and lose a lot on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["BACKGROUND", "cat", "dog"]


def _epoch(epoch: int, loss: float) -> dict:
    return {"kind": "epoch", "epoch": epoch, "step": 10 * (epoch + 1), "train_loss": loss, "mAP": 0.1 * epoch}


def _save(path, model, run_id=None, epochs=(0,), losses=None, best_map=None):
    history = [_epoch(e, (losses or {}).get(e, 3.0 - 0.1 * e)) for e in epochs]
    state = {"epoch": epochs[-1] + 1, "step": 10 * (epochs[-1] + 1),
             "metrics": {"history": history, "best_map": best_map}}
    if run_id is not None:
        state["run_id"] = run_id
    save_checkpoint(path, model, NAMES, train_state=state)
    return path


def _age(path, seconds_ago: float) -> None:
    t = path.stat().st_mtime - seconds_ago
    os.utime(path, (t, t))


def test_pytorch_ssd_loss_is_read_as_onnx_export_reads_it():
    assert pytorch_ssd_loss("mb1-ssd-Epoch-29-Loss-2.2.pth") == 2.2
    assert pytorch_ssd_loss("mb2-ssd-lite-Epoch-0-Loss-11.0132.pth") == pytest.approx(11.0132)
    assert pytorch_ssd_loss("12.pth") == 12.0  # no dash: the whole stem, as onnx_export.py slices it
    for name in ("best.pth", "last.pth", "mb1-ssd-Epoch-1-Loss-nan.pth", "mb1-ssd-Epoch-1-Loss-20000.pth",
                 "mb1-ssd-Epoch-1-Loss-2.2.onnx"):
        assert pytorch_ssd_loss(name) is None, name


def test_pytorch_ssd_folder_lowest_loss(tmp_path):
    for name in ("mb1-ssd-Epoch-0-Loss-5.1.pth", "mb1-ssd-Epoch-7-Loss-2.25.pth", "mb1-ssd-Epoch-9-Loss-2.3.pth",
                 "mb1-ssd-Epoch-1-Loss-nan.pth", "notes.pth"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "labels.txt").write_text("BACKGROUND\ncat\n")
    _age(tmp_path / "mb1-ssd-Epoch-7-Loss-2.25.pth", 100)  # the age of a file does not matter here
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "mb1-ssd-Epoch-7-Loss-2.25.pth" and choice.kind == "pytorch-ssd"
    assert "lowest loss (2.25)" in choice.reason


def test_best_of_the_same_run(tmp_path, model):
    _save(tmp_path / "best.pth", model, run_id="run-b", epochs=(0, 1), best_map=0.42)
    _save(tmp_path / "last.pth", model, run_id="run-b", epochs=(0, 1, 2, 3))
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "best.pth" and choice.kind == "ssdfast"
    assert "run-b" in choice.reason and "0.42" in choice.reason


def test_best_of_an_earlier_run_is_not_exported(tmp_path, model):
    _save(tmp_path / "best.pth", model, run_id="run-a", epochs=(0, 1, 2))
    _save(tmp_path / "last.pth", model, run_id="run-b", epochs=(0,))
    _age(tmp_path / "last.pth", -60)
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "last.pth" and "another run (run run-a)" in choice.reason


def test_without_run_ids_the_history_decides(tmp_path, model):
    # Checkpoints from before run ids: best.pth's epoch records must begin last.pth's.
    _save(tmp_path / "best.pth", model, epochs=(0, 1))
    _save(tmp_path / "last.pth", model, epochs=(0, 1, 2))
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "best.pth" and "no run id" in choice.reason
    # A new run in the same folder starts a new history (different losses): last.pth.
    _save(tmp_path / "last.pth", model, epochs=(0, 1, 2), losses={0: 2.9, 1: 2.7, 2: 2.5})
    assert pick_model_file(tmp_path).path == tmp_path / "last.pth"
    # One with a run id and one without (resumed from an old checkpoint): the history decides too.
    _save(tmp_path / "last.pth", model, run_id="run-c", epochs=(0, 1, 2))
    assert pick_model_file(tmp_path).path == tmp_path / "best.pth"
    # best.pth later than last.pth (its step) cannot be of the run last.pth ends.
    _save(tmp_path / "best.pth", model, epochs=(0, 1, 2, 3))
    assert pick_model_file(tmp_path).path == tmp_path / "last.pth"


def test_lone_files_and_unreadable_best(tmp_path, model):
    _save(tmp_path / "last.pth", model, run_id="r")
    assert pick_model_file(tmp_path).path == tmp_path / "last.pth"
    (tmp_path / "best.pth").write_bytes(b"not a checkpoint")
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "last.pth" and "best.pth does not read" in choice.reason
    (tmp_path / "last.pth").unlink()
    _save(tmp_path / "best.pth", model, run_id="r")
    assert pick_model_file(tmp_path).path == tmp_path / "best.pth"


def test_unreadable_last_is_an_error(tmp_path, model):
    _save(tmp_path / "best.pth", model, run_id="r")
    (tmp_path / "last.pth").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="cannot tell whether best.pth is of the latest run"):
        pick_model_file(tmp_path)


def test_a_folder_reused_by_the_other_trainer(tmp_path, model):
    _save(tmp_path / "last.pth", model, run_id="r")
    torch.save(model.state_dict(), tmp_path / "mb2-ssd-lite-Epoch-3-Loss-2.5.pth")
    _age(tmp_path / "last.pth", 3600)  # pytorch-ssd trained here after ssdfast
    choice = pick_model_file(tmp_path)
    assert choice.kind == "pytorch-ssd" and "newer than ssdfast's" in choice.reason
    _age(tmp_path / "mb2-ssd-lite-Epoch-3-Loss-2.5.pth", 7200)  # and the other way round
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "last.pth" and "newer than the pytorch-ssd" in choice.reason


def test_other_files_and_empty_folders(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"x")
    (tmp_path / "b.pth").write_bytes(b"x")
    _age(tmp_path / "b.pth", 100)
    choice = pick_model_file(tmp_path)
    assert choice.path == tmp_path / "a.pth" and choice.kind == "other"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match=f"^--model-dir {empty}: no model file in it"):
        pick_model_file(empty, flag="--model-dir")
    with pytest.raises(ModelFileError, match="not a folder"):
        pick_model_file(tmp_path / "a.pth")
