"""Kill-and-resume gives the uninterrupted run's losses (to 1e-6 on CPU), at an epoch end and mid-epoch."""
from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

from ssdfast.engine import TrainingInterrupted
from ssdfast.engine.run_logs import read_metrics
from ssdfast.engine.trainer import Hook, TrainConfig, Trainer
from ssdfast.errors import ModelFileError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resume_config(tiny_config):
    """The tiny settings over 2 epochs of 3 steps; augmentation on, momentum on, cosine schedule with warmup."""
    return lambda data, folder, **overrides: tiny_config(data, folder,
                                                         **{"num_epochs": 2, "warmup": 2, "seed": 3, **overrides})


class _Kill(Hook):
    """Stops the run like a kill: after step ``at_step`` or after epoch ``at_epoch``."""

    def __init__(self, at_step=None, at_epoch=None):
        self.at_step, self.at_epoch = at_step, at_epoch

    def after_step(self, trainer, output):
        if trainer.step == self.at_step:
            raise KeyboardInterrupt

    def after_epoch(self, trainer, record):
        if record["epoch"] == self.at_epoch:
            raise KeyboardInterrupt


def _step_losses(folder) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def straight(voc_data, tmp_path_factory, resume_config):
    """The uninterrupted run: 2 epochs of 3 steps, no data workers."""
    folder = tmp_path_factory.mktemp("straight")
    trainer = Trainer(resume_config(voc_data, folder))
    trainer.fit()
    return trainer, folder


def _assert_same_run(straight, resumed: Trainer, folder):
    trainer, straight_folder = straight
    a, b = _step_losses(straight_folder), _step_losses(folder)
    assert sorted(a) == sorted(b) == list(range(1, 7))  # the resumed log has no duplicated steps
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    for p, q in zip(trainer.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_resume_after_an_epoch_repeats_the_uninterrupted_losses(voc_data, straight, tmp_path, resume_config):
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        Trainer(resume_config(voc_data, folder), hooks=[_Kill(at_epoch=0)]).fit()
    ckpt = torch.load(folder / "last.pth", weights_only=True)
    assert ckpt["train_state"]["epoch"] == 1 and ckpt["train_state"]["step"] == 3
    resumed = Trainer(resume_config(voc_data, folder, resume=str(folder / "last.pth")))
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit()
    _assert_same_run(straight, resumed, folder)


def test_resume_mid_epoch_with_workers(voc_data, straight, tmp_path, resume_config):
    """--checkpoint-every-steps 2, killed at step 5 (epoch 2, step 2 of 3): only step 5 is redone.

    The interrupted and resumed runs load data in a worker process, the straight run in the main
    process: the augmentation does not depend on who loads a sample.
    """
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        Trainer(resume_config(voc_data, folder, checkpoint_every_steps=2, num_workers=1),
                hooks=[_Kill(at_step=5)]).fit()
    state = torch.load(folder / "last.pth", weights_only=True)["train_state"]
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 1, 4)
    resumed = Trainer(resume_config(voc_data, folder, checkpoint_every_steps=2, num_workers=1,
                                    resume=str(folder / "last.pth")))
    resumed.fit()
    _assert_same_run(straight, resumed, folder)


def test_resume_refuses_another_network(voc_data, tmp_path, resume_config):
    folder = tmp_path / "a"
    Trainer(resume_config(voc_data, folder, num_epochs=1)).fit()
    last = folder / "last.pth"
    with pytest.raises(ModelFileError,
                       match=f"^--resume {last}: a mb2-ssd-lite checkpoint but --net is mb3-small-ssd-lite"):
        Trainer(resume_config(voc_data, tmp_path / "b", net="mb3-small-ssd-lite", resume=str(last)))
    with pytest.raises(ModelFileError, match="width_mult"):
        Trainer(resume_config(voc_data, tmp_path / "b", mb2_width_mult=0.5, resume=str(folder / "last.pth")))


class _Signal(Hook):
    """Sends this process ``signum`` (as Ctrl-C or ``kill`` would) after step ``at_step``."""

    def __init__(self, at_step, signum):
        self.at_step, self.signum = at_step, signum

    def after_step(self, trainer, output):
        if trainer.step == self.at_step:
            os.kill(os.getpid(), self.signum)


def test_ctrl_c_stops_after_the_step_saves_and_says_how_to_resume(voc_data, straight, tmp_path, resume_config):
    """SIGINT here; SIGTERM: tests/cli/test_train_cli.py, on a real ssdfast-train process."""
    folder, signum = tmp_path / "b", signal.SIGINT
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(resume_config(voc_data, folder, num_workers=1), hooks=[_Signal(4, signum)]).fit()
    message = str(info.value)
    assert info.value.signal_number == signum and info.value.checkpoint == str(folder / "last.pth")
    assert (message.endswith(f"continue with: ssdfast-train --resume {folder / 'last.pth'} --device cpu")
            and "\n" not in message)
    assert message in (folder / "train.log").read_text()
    state = torch.load(folder / "last.pth", weights_only=True)["train_state"]
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 1, 4)  # nothing of the 4 steps lost

    # the Python API resumes as the command line does: settings left at their defaults come from the file
    resumed = Trainer(TrainConfig(resume=str(folder / "last.pth"), device="cpu"))
    assert resumed.config.datasets == [str(voc_data)] and (resumed.config.seed, resumed.config.warmup) == (3, 2)
    assert (resumed.epoch, resumed.step) == (1, 4) and resumed.run_id == state["run_id"]
    resumed.fit()
    _assert_same_run(straight, resumed, folder)
    assert torch.load(folder / "last.pth", weights_only=True)["train_state"]["run_id"] == state["run_id"]


def test_resumed_settings_precedence_in_python(straight):
    last = straight[1] / "last.pth"
    inherited = TrainConfig(resume=str(last)).inherit_resumed()
    assert (inherited.scheduler, inherited.warmup, inherited.seed, inherited.net) == ("cosine", 2, 3, "mb2-ssd-lite")
    assert inherited.progress is True and inherited.device == "auto"  # where and how a run executes: not inherited
    changed = TrainConfig(resume=str(last), lr=0.5).inherit_resumed()
    assert changed.lr == 0.5 and changed.seed == 3  # a setting given (not the default) wins
    forced = TrainConfig.resumed_from(last, scheduler="multi-step", warmup=0)  # defaults given explicitly win too
    assert (forced.scheduler, forced.warmup, forced.seed) == ("multi-step", 0, 3)
    assert forced.inherit_resumed() is forced
    with pytest.raises(ModelFileError, match="^--resume .*nowhere.pth: no such file$"):
        TrainConfig.resumed_from(straight[1] / "nowhere.pth")


def test_resuming_a_finished_run_says_so(straight, tmp_path):
    folder = shutil.copytree(straight[1], tmp_path / "done")
    trainer = Trainer(TrainConfig(resume=str(folder / "last.pth"), checkpoint_folder=str(folder), device="cpu"))
    assert trainer.fit()["step"] == 6
    assert (f"{folder / 'last.pth'} already finished all 2 epochs of its run; raise --num-epochs to train further"
            in (folder / "train.log").read_text())
