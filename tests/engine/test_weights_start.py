"""What a run starts from is said in one start-up line (``Weights: ...``) of the console and
``train.log``: the ``--resume`` / ``--pretrained-ssd`` / ``--base-net`` file and what it gave, or from
scratch; jetson-inference's default file missing is a warning (console, train.log, metrics.jsonl)."""
from __future__ import annotations

import pytest
import torch

from ssdfast.engine import Trainer
from ssdfast.engine.run_logs import read_metrics
from ssdfast.engine.settings import JETSON_PRETRAINED, JETSON_PRETRAINED_URL
from ssdfast.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: jetson-inference's network (the one its default file is for), small enough for a test.
MB1 = dict(net="mb1-ssd", mb2_width_mult=1.0, validation_dataset="none")


def _weights_lines(folder):
    return [line.split(" INFO ", 1)[1] for line in (folder / "train.log").read_text().splitlines()
            if " INFO Weights: " in line]


def _warnings(folder):
    return [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "warning"]


def test_missing_jetson_default_warns_once_and_trains_from_scratch(voc_data, tmp_path, tiny_config, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)  # no models/mobilenet-v1-ssd-mp-0_675.pth here
    folder = tmp_path / "run"
    Trainer(tiny_config(voc_data, folder, **MB1)).fit()
    log = (folder / "train.log").read_text()
    console = capsys.readouterr().err
    assert _weights_lines(folder) == [f"Weights: from scratch ({JETSON_PRETRAINED} is missing)"]
    [record] = [r for r in _warnings(folder) if r["source"] == "weights"]
    message = record["message"]
    assert message.startswith(f"{JETSON_PRETRAINED} not found ({tmp_path / JETSON_PRETRAINED})")
    assert f"wget {JETSON_PRETRAINED_URL} -O {JETSON_PRETRAINED}" in message and "--pretrained-ssd none" in message
    for where, text in (("console", console), ("train.log", log)):
        assert text.count(message) == 1, where
    assert record["step"] == 0


def test_pretrained_ssd_none_trains_from_scratch_quietly(voc_data, tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run"
    Trainer(tiny_config(voc_data, folder, pretrained_ssd="none", **MB1))
    assert _weights_lines(folder) == ["Weights: from scratch (--pretrained-ssd none)"]
    assert not _warnings(folder) and JETSON_PRETRAINED not in capsys.readouterr().err


def test_jetson_default_present_is_named(voc_data, tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    torch.save(create_model("mb1-ssd", 21).state_dict(), tmp_path / JETSON_PRETRAINED)  # VOC's 21 classes
    folder = tmp_path / "run"
    Trainer(tiny_config(voc_data, folder, **MB1))
    [line] = _weights_lines(folder)
    assert line.startswith(f"Weights: --pretrained-ssd {JETSON_PRETRAINED} (jetson-inference default): loaded ")
    assert "re-initialised (shape differs): classification_headers.0" in line  # 21 classes there, 4 here
    assert not _warnings(folder)


def test_each_start_source_is_named(voc_data, tmp_path, tiny_config):
    small = dict(validation_dataset="none")
    # from scratch: mb2-ssd-lite has no default file
    scratch = tmp_path / "scratch"
    Trainer(tiny_config(voc_data, scratch, **small)).fit()
    assert _weights_lines(scratch) == ["Weights: from scratch (no --pretrained-ssd, --base-net or --resume given)"]
    assert not _warnings(scratch)

    # --resume of a checkpoint with its training state: the run continues
    last = scratch / "last.pth"
    resumed = Trainer(tiny_config(voc_data, scratch, resume=str(last), num_epochs=2, **small))
    assert _weights_lines(scratch)[-1] == f"Weights: --resume {last}, with its training state (its run continues)"
    assert resumed.epoch == 1

    # --pretrained-ssd of the same classes: every tensor loads
    pretrained = tmp_path / "pretrained"
    Trainer(tiny_config(voc_data, pretrained, pretrained_ssd=str(last), **small))
    [line] = _weights_lines(pretrained)
    total = len(create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96).state_dict())
    assert line.startswith(f"Weights: --pretrained-ssd {last}: loaded {total} of {total} tensors")

    # --base-net: the base net's tensors, the rest from scratch
    base_file = tmp_path / "base.pth"
    source = create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)
    torch.save(source.base_net.state_dict(), base_file)
    base = tmp_path / "base"
    Trainer(tiny_config(voc_data, base, base_net=str(base_file), **small))
    [line] = _weights_lines(base)
    assert line.startswith(f"Weights: --base-net {base_file}: loaded {len(source.base_net.state_dict())} of ")

    # --resume of a weights-only file (a pytorch-ssd state dict): all its weights, from epoch 0
    bare = tmp_path / "mb2-ssd-lite-Epoch-9-Loss-3.0.pth"
    torch.save(source.state_dict(), bare)
    weights_only = tmp_path / "weights-only"
    Trainer(tiny_config(voc_data, weights_only, resume=str(bare), **small))
    [line] = _weights_lines(weights_only)
    assert line.startswith(f"Weights: --resume {bare}: a pytorch-ssd model without training state: loaded all")

    # a model passed in keeps its own weights
    given = tmp_path / "given"
    Trainer(tiny_config(voc_data, given, **small), model=create_model("mb2-ssd-lite", 4, width_mult=0.25,
                                                                        image_size=96))
    assert _weights_lines(given) == ["Weights: those of the model given (no --pretrained-ssd, --base-net or --resume)"]


def test_each_start_file_is_read_once(voc_data, tmp_path, tiny_config, monkeypatch):
    """A --resume file gives the run its settings and its state from one read; --pretrained-ssd and
    --base-net files give the variant and the weights from one read each."""
    import os

    from ssdfast.engine import TrainConfig

    run = tmp_path / "run"
    Trainer(tiny_config(voc_data, run, validation_dataset="none")).fit()
    last = run / "last.pth"
    base_file = tmp_path / "base.pth"
    torch.save(create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96).base_net.state_dict(), base_file)
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(os.fspath(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    Trainer(tiny_config(voc_data, tmp_path / "p", pretrained_ssd=str(last), validation_dataset="none"))
    Trainer(tiny_config(voc_data, tmp_path / "b", base_net=str(base_file), validation_dataset="none"))
    assert reads == [str(last), str(base_file)]
    reads.clear()
    # as ssdfast-train --resume builds its settings, then the run; and the Python API's TrainConfig(resume=...)
    Trainer(TrainConfig.resumed_from(last, num_epochs=2, device="cpu", num_workers=0, progress=False))
    assert reads == [str(last)]
    reads.clear()
    Trainer(TrainConfig(resume=str(last), num_epochs=2, device="cpu", num_workers=0, progress=False))
    assert reads == [str(last)]
