"""Kill-and-resume gives the uninterrupted run's losses (to 1e-6 on CPU), at an epoch end and mid-epoch."""
from __future__ import annotations

import pytest
import torch

from ssdfast.engine.logging import read_metrics
from ssdfast.engine.trainer import ConfigError, Hook, TrainConfig, Trainer


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(data, folder, **overrides) -> TrainConfig:
    """12 training images, batch 4: 3 steps an epoch; augmentation on, momentum on, cosine schedule."""
    values = dict(
        dataset_type="voc", datasets=[str(data)], net="mb2-ssd-lite", mb2_width_mult=0.25, resolution=96,
        batch_size=4, num_epochs=2, num_workers=0, lr=0.01, scheduler="cosine", warmup=2, debug_steps=1,
        checkpoint_folder=str(folder), device="cpu", progress=False, seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


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
def straight(voc_data, tmp_path_factory):
    """The uninterrupted run: 2 epochs of 3 steps, no data workers."""
    folder = tmp_path_factory.mktemp("straight")
    trainer = Trainer(tiny_config(voc_data, folder))
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


def test_resume_after_an_epoch_repeats_the_uninterrupted_losses(voc_data, straight, tmp_path):
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(voc_data, folder), hooks=[_Kill(at_epoch=0)]).fit()
    ckpt = torch.load(folder / "last.pth", weights_only=True)
    assert ckpt["train_state"]["epoch"] == 1 and ckpt["train_state"]["step"] == 3
    resumed = Trainer(tiny_config(voc_data, folder, resume=str(folder / "last.pth")))
    assert (resumed.epoch, resumed.step) == (1, 3)
    resumed.fit()
    _assert_same_run(straight, resumed, folder)


def test_resume_mid_epoch_with_workers(voc_data, straight, tmp_path):
    """--checkpoint-every-steps 2, killed at step 5 (epoch 2, step 2 of 3): only step 5 is redone.

    The interrupted and resumed runs load data in a worker process, the straight run in the main
    process: the augmentation does not depend on who loads a sample.
    """
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(voc_data, folder, checkpoint_every_steps=2, num_workers=1), hooks=[_Kill(at_step=5)]).fit()
    state = torch.load(folder / "last.pth", weights_only=True)["train_state"]
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 1, 4)
    resumed = Trainer(tiny_config(voc_data, folder, checkpoint_every_steps=2, num_workers=1, resume=str(folder / "last.pth")))
    resumed.fit()
    _assert_same_run(straight, resumed, folder)


def test_resume_refuses_another_network(voc_data, tmp_path):
    folder = tmp_path / "a"
    Trainer(tiny_config(voc_data, folder, num_epochs=1)).fit()
    with pytest.raises(ConfigError, match="mb2-ssd-lite checkpoint but --net is mb3-small-ssd-lite"):
        Trainer(tiny_config(voc_data, tmp_path / "b", net="mb3-small-ssd-lite", resume=str(folder / "last.pth")))
    with pytest.raises(ConfigError, match="width_mult"):
        Trainer(tiny_config(voc_data, tmp_path / "b", mb2_width_mult=0.5, resume=str(folder / "last.pth")))
