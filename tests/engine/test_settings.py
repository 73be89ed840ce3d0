"""TrainConfig: one declaration per setting (default, help, flags, group), checked with check()."""
from __future__ import annotations

import dataclasses

import pytest

from ssdfast.engine import TrainConfig
from ssdfast.engine.settings import GROUPS, flag_of, flag_of_field
from ssdfast.errors import SettingsError


def test_every_setting_declares_its_flag():
    for f in dataclasses.fields(TrainConfig):
        flag = flag_of_field(f)
        assert flag.help and flag.group in GROUPS, f.name
        assert flag.kind in ("text", "int", "count", "float", "switch", "off_switch", "bool", "paths", "optional"), f.name
        for alias in flag.aliases:
            assert alias.startswith("--"), (f.name, alias)
    assert flag_of("batch_size") == "--batch-size" and flag_of("progress") == "--no-progress"
    assert flag_of_field(next(f for f in dataclasses.fields(TrainConfig) if f.name == "num_workers")).aliases == ("--workers",)


def test_check_names_the_flag():
    with pytest.raises(SettingsError, match="^--datasets: give at least one"):
        TrainConfig().check()
    for settings, flag in (({"batch_size": 0}, "--batch-size"), ({"log_level": "loud"}, "--log-level"),
                           ({"scheduler": "linear"}, "--scheduler"), ({"num_workers": -1}, "--num-workers"),
                           ({"grad_clip": 0.0}, "--grad-clip"), ({"validation_dataset": "nowhere"}, "--validation-dataset")):
        with pytest.raises(SettingsError, match=f"^{flag}"):
            TrainConfig(datasets=["."], **settings).check()
    TrainConfig(datasets=["."], validation_dataset="none").check()  # 'none': no validation
    assert TrainConfig(validation_dataset="None").validation_off and not TrainConfig().validation_off


def test_changed_settings_and_round_trip():
    config = TrainConfig(net="vgg16-ssd", datasets=["a"], lr=0.001)
    assert config.changed_settings() == {"net": "vgg16-ssd", "datasets": ["a"], "lr": 0.001}
    assert TrainConfig.from_mapping({**config.to_dict(), "unknown": 1}) == config


@pytest.mark.parametrize("net, device, expected", [
    ("vgg16-ssd", "cpu", False), ("vgg16_ssd512", "cpu", False), ("mb1-ssd", "cpu", True),
    ("mb2-ssd-lite", "cpu", True), ("mb3-large-ssd-lite", "cpu", True), ("vgg16-ssd", "cuda", True),
])
def test_channels_last_default_is_the_measured_layout_of_the_network_and_device(net, device, expected):
    assert TrainConfig(net=net).trains_channels_last(device) is expected
    for given in (True, False):  # a layout given wins
        assert TrainConfig(net=net, channels_last=given).trains_channels_last(device) is given


def test_the_trainer_runs_in_the_layout_it_chose(voc_data, tmp_path):
    import torch

    from ssdfast.engine import Trainer

    def layout(net: str, **options) -> torch.memory_format:
        config = TrainConfig(net=net, datasets=[str(voc_data)], dataset_type="voc", checkpoint_folder=str(tmp_path / net),
                             device="cpu", pretrained_ssd="none", **options)
        trainer = Trainer(config)
        weight = next(p for p in trainer.model.parameters() if p.dim() == 4)
        return trainer.memory_format, weight.is_contiguous(memory_format=torch.channels_last)

    assert layout("mb1-ssd") == (torch.channels_last, True)
    assert layout("vgg16-ssd") == (torch.contiguous_format, False)
    assert layout("vgg16-ssd", channels_last=True) == (torch.channels_last, True)
