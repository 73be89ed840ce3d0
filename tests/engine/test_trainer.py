"""The training loop: schedules, parameter groups, data order, outputs, non-finite losses, AMP."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from ssdfast.engine.run_logs import read_metrics
from ssdfast.engine.trainer import (  # the names the package had before its split; also in ssdfast.engine
    EpochSampler,
    Hook,
    LrSchedule,
    NonFiniteLossError,
    SeededSamples,
    TrainConfig,
    Trainer,
    build_param_groups,
    get_rng_state,
    set_rng_state,
)
from ssdfast.errors import SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- schedules
def test_multi_step_schedule_counts_epochs():
    s = LrSchedule(kind="multi-step", steps_per_epoch=10, milestones=[2, 4], gamma=0.1)
    assert s(0) == 1.0 and s(19) == 1.0
    assert s(20) == pytest.approx(0.1) and s(39) == pytest.approx(0.1)
    assert s(40) == pytest.approx(0.01)


def test_cosine_schedule_and_warmup():
    s = LrSchedule(kind="cosine", steps_per_epoch=0, t_max=100.0, warmup=10)
    assert s(0) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))
    assert s(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 100)))
    assert s(50) == pytest.approx(0.5)
    assert s(100) == pytest.approx(0.0, abs=1e-12)
    assert s(150) == pytest.approx(0.0, abs=1e-12)  # stays at the end value past t_max


def test_milestones_parse_and_reject():
    assert TrainConfig(milestones="80, 100").milestone_list() == [80, 100]
    assert TrainConfig(milestones=[100, 80]).milestone_list() == [80, 100]
    with pytest.raises(SettingsError, match="--milestones"):
        TrainConfig(milestones="80,abc").milestone_list()


def test_param_groups_follow_pytorch_ssd():
    from ssdfast.models import create_model

    model = create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)
    cfg = TrainConfig(lr=0.01, base_net_lr=0.001, extra_layers_lr=0.005)
    groups = {g["name"]: g for g in build_param_groups(model, cfg)}
    assert groups["base_net"]["lr"] == 0.001 and groups["extra_layers"]["lr"] == 0.005 and groups["heads"]["lr"] == 0.01
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))

    model = create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)
    groups = {g["name"]: g for g in build_param_groups(model, TrainConfig(freeze_base_net=True))}
    assert "base_net" not in groups and not any(p.requires_grad for p in model.base_net.parameters())

    model = create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)
    groups = {g["name"]: g for g in build_param_groups(model, TrainConfig(freeze_net=True))}
    head_params = list(model.classification_headers.parameters()) + list(model.regression_headers.parameters())
    assert list(groups) == ["heads"] and len(groups["heads"]["params"]) == len(head_params)


# ------------------------------------------------------------------------------ data order
def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    data = list(range(10))
    a = list(EpochSampler(data, epoch=3, seed=7))
    assert a == list(EpochSampler(data, epoch=3, seed=7))
    assert [i for i, _ in a] != [i for i, _ in EpochSampler(data, epoch=4, seed=7)]
    assert sorted(i for i, _ in a) == data
    # starting part-way skips exactly the first indices, with the same sample seeds
    assert list(EpochSampler(data, epoch=3, seed=7, start=4)) == a[4:]
    # two ranks split the (padded) epoch between them
    r0 = [i for i, _ in EpochSampler(data, epoch=3, seed=7, num_replicas=2, rank=0)]
    r1 = [i for i, _ in EpochSampler(data, epoch=3, seed=7, num_replicas=2, rank=1)]
    assert len(r0) == len(r1) == 5 and sorted(r0 + r1) == data


def test_seeded_samples_are_reproducible_and_leave_global_rng_alone():
    class Noisy:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (torch.rand(1).item(), random.random(), float(np.random.rand()))

    ds = SeededSamples(Noisy())
    torch.manual_seed(1)
    before = torch.rand(3)
    torch.manual_seed(1)
    first = ds[(2, 123)]
    assert torch.equal(torch.rand(3), before)  # the global torch stream did not move
    assert ds[(2, 123)] == first
    assert ds[(2, 124)] != first


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    torch.save({"rng": get_rng_state()}, tmp_path / "rng.pth")
    expected = (torch.rand(2), random.random(), np.random.rand())
    state = torch.load(tmp_path / "rng.pth", weights_only=True)["rng"]
    set_rng_state(state)
    got = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


# ------------------------------------------------------------------------------- training
def test_training_writes_checkpoints_logs_metrics_and_curves(voc_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    cfg = tiny_config(voc_data, folder, num_epochs=2, validation_dataset=str(voc_data), validation_epochs=1)
    summary = Trainer(cfg).fit()
    assert summary["step"] == 6 and summary["epoch"] == 2
    for name in ("last.pth", "best.pth", "labels.txt", "train.log", "metrics.jsonl", "curves.png"):
        assert (folder / name).is_file(), name
    assert (folder / "labels.txt").read_text().split() == ["BACKGROUND", "circle", "square", "triangle"]

    ckpt = torch.load(folder / "last.pth", weights_only=True)
    state = ckpt["train_state"]
    assert {"optimizer", "scheduler", "scaler", "epoch", "step", "rng", "metrics", "args"} <= set(state)
    assert state["epoch"] == 2 and state["step"] == 6 and state["args"]["net"] == "mb2-ssd-lite"
    assert ckpt["class_names"][0] == "BACKGROUND"

    records = read_metrics(folder / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert len(epochs) == 2 and all(0.0 <= r["mAP"] <= 1.0 and math.isfinite(r["val_loss"]) for r in epochs)
    assert all(math.isfinite(r["loss"]) for r in steps)
    log = (folder / "train.log").read_text()
    assert "Epoch: 1" in log and "Validation mAP" in log


def test_amp_bf16_grad_clip_channels_last_iterations(voc_data, tmp_path, tiny_config):
    cfg = tiny_config(voc_data, tmp_path / "run", amp="auto", grad_clip=1.0, channels_last=True, iterations=4,
                      scheduler="multi-step", milestones="2", warmup=2, num_epochs=None)
    trainer = Trainer(cfg)
    assert trainer.amp_dtype is torch.bfloat16 and trainer.scaler is None
    summary = trainer.fit()
    assert summary["step"] == 4 and trainer.epoch == 1 and trainer.epoch_step == 1  # stopped inside epoch 2
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    # warmup over 2 iterations, then milestone 2 (iterations) multiplies by gamma
    assert lrs == pytest.approx([0.005, 0.01, 0.001, 0.001])


class _NaNAt(Trainer):
    """Makes the loss NaN at the given (1-based) steps."""

    nan_steps: set[int] = set()

    def compute_loss(self, images, gt_boxes, gt_labels):
        reg, cls = super().compute_loss(images, gt_boxes, gt_labels)
        if self.step + 1 in self.nan_steps:
            reg = reg * float("nan")
        return reg, cls


class _Weights(Hook):
    def __init__(self):
        self.after = {}

    def after_step(self, trainer, output):
        self.after[trainer.step] = [p.detach().clone() for p in trainer.model.parameters()]


def test_nonfinite_loss_skips_the_step(voc_data, tmp_path, caplog, tiny_config):
    trainer = _NaNAt(tiny_config(voc_data, tmp_path / "run"), hooks=[weights := _Weights()])
    trainer.nan_steps = {2}
    trainer.fit()
    assert trainer.step == 3 and trainer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(weights.after[1], weights.after[2]))  # step 2 changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(weights.after[2], weights.after[3]))
    assert "non-finite loss at step 2" in (tmp_path / "run" / "train.log").read_text()
    epoch = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"][0]
    assert epoch["skipped_steps"] == 1 and math.isfinite(epoch["train_loss"])


def test_nonfinite_losses_in_a_row_stop_with_the_likely_causes(voc_data, tmp_path, tiny_config):
    trainer = _NaNAt(tiny_config(voc_data, tmp_path / "run", num_epochs=3, max_nonfinite_steps=4, amp="bf16"))
    trainer.nan_steps = set(range(1, 100))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert trainer.step == 3  # the 4th step raised before it was counted
    assert "4 steps in a row" in message and "learning rate" in message and "bad boxes" in message and "AMP" in message


def test_user_mistakes_are_config_errors(voc_data, tmp_path, tiny_config):
    with pytest.raises(SettingsError, match="does not exist"):
        Trainer(tiny_config(tmp_path / "nowhere", tmp_path / "run"))
    with pytest.raises(SettingsError, match="not a known network"):
        Trainer(tiny_config(voc_data, tmp_path / "run", net="resnet-ssd"))
    with pytest.raises(SettingsError, match="--batch-size"):
        Trainer(tiny_config(voc_data, tmp_path / "run", batch_size=0))


def test_tensorboard_is_optional(tmp_path):
    import importlib.util

    from ssdfast.engine.run_logs import TensorBoardLog

    log = TensorBoardLog(tmp_path / "tb")
    assert log.enabled == (importlib.util.find_spec("tensorboard") is not None)
    log.write("train", {"loss": 1.0, "name": "x"}, 1)  # a no-op without tensorboard
    log.close()
