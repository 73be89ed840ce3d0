"""Warnings reach train.log and metrics.jsonl once each; --strict turns them into one-line errors."""
from __future__ import annotations

import shutil
import warnings

import pytest

from ssdfast.engine import Hook, Trainer
from ssdfast.engine.run_logs import read_metrics
from ssdfast.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_skipped_and_truncated_images_reach_log_and_metrics_once(broken_voc, tmp_path, tiny_config):
    folder = tmp_path / "run"
    Trainer(tiny_config(broken_voc["root"], folder, num_epochs=2, validation_dataset="none")).fit()
    unreadable, truncated = str(broken_voc["unreadable"]), str(broken_voc["truncated"])
    log = (folder / "train.log").read_text()
    # each file once in the whole run, although both come back every epoch
    assert log.count(unreadable) == 1 and log.count(truncated) == 1, log
    records = read_metrics(folder / "metrics.jsonl")
    warned = [r for r in records if r["kind"] == "warning"]
    assert len([r for r in warned if unreadable in r["message"]]) == 1
    assert len([r for r in warned if truncated in r["message"] and "truncated" in r["message"]]) == 1
    assert all(r["source"] in ("data", "log") and isinstance(r["step"], int)
               for r in warned if "JPEGImages" in r["message"])
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [(r["skipped_images"], r["images_with_warnings"]) for r in epochs] == [(1, 1), (1, 1)]
    assert log.count("1 unreadable images skipped, 1 used with a warning") == 2  # the per-epoch counts


def test_dataset_counts_and_notes_reach_log_and_metrics(broken_voc, tmp_path, tiny_config):
    folder = tmp_path / "run"
    Trainer(tiny_config(broken_voc["root"], folder, iterations=1, num_epochs=None, validation_dataset="none")).fit()
    data = [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "data"]
    assert [r["role"] for r in data] == ["training"] and data[0]["images"] == 12
    assert data[0]["stats"]["clipped_boxes"] == 1
    assert any("clipped" in note for note in data[0]["notes"])
    assert "clipped" in (folder / "train.log").read_text()


class _Warn(Hook):
    def after_step(self, trainer, output):
        if trainer.step == 1:
            warnings.warn("a warning raised while training", UserWarning, stacklevel=1)


def test_python_warnings_reach_the_log(voc_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    Trainer(tiny_config(voc_data, folder, validation_dataset="none"), hooks=[_Warn()]).fit()
    assert "UserWarning: a warning raised while training" in (folder / "train.log").read_text()
    warned = [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "warning"]
    assert [(r["source"], r["step"]) for r in warned] == [("python", 1)]


@pytest.mark.parametrize("workers", [0, 1])
def test_strict_stops_at_a_truncated_image_with_one_line_naming_it(voc_data, broken_voc, tmp_path, tiny_config,
                                                                   workers):
    root = broken_voc["root"]
    shutil.copy(voc_data / "JPEGImages" / broken_voc["unreadable"].name,
                broken_voc["unreadable"])  # only the truncated one left
    with pytest.raises(DataError) as info:
        Trainer(tiny_config(root, tmp_path / "run", strict=True, num_workers=workers, validation_dataset="none")).fit()
    message = str(info.value)
    assert str(broken_voc["truncated"]) in message and "truncated" in message and "\n" not in message, message


def test_strict_stops_at_an_unreadable_image(broken_voc, tmp_path, tiny_config, voc_data):
    shutil.copy(voc_data / "JPEGImages" / broken_voc["truncated"].name,
                broken_voc["truncated"])  # only the unreadable one
    with pytest.raises(DataError) as info:
        Trainer(tiny_config(broken_voc["root"], tmp_path / "run", strict=True, validation_dataset="none")).fit()
    assert str(broken_voc["unreadable"]) in str(info.value) and "\n" not in str(info.value)
