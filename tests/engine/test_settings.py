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
        assert flag.kind in ("text", "int", "count", "float", "switch", "off_switch", "bool",
                             "paths", "optional"), f.name
        for alias in flag.aliases:
            assert alias.startswith("--"), (f.name, alias)
    assert flag_of("batch_size") == "--batch-size" and flag_of("progress") == "--no-progress"
    assert (flag_of_field(next(f for f in dataclasses.fields(TrainConfig) if f.name == "num_workers")).aliases
            == ("--workers",))


def test_check_names_the_flag():
    with pytest.raises(SettingsError, match="^--datasets: give at least one"):
        TrainConfig().check()
    for settings, flag in (({"batch_size": 0}, "--batch-size"), ({"log_level": "loud"}, "--log-level"),
                           ({"scheduler": "linear"}, "--scheduler"), ({"num_workers": -1}, "--num-workers"),
                           ({"grad_clip": 0.0}, "--grad-clip"),
                           ({"validation_dataset": "nowhere"}, "--validation-dataset")):
        with pytest.raises(SettingsError, match=f"^{flag}"):
            TrainConfig(datasets=["."], **settings).check()
    TrainConfig(datasets=["."], validation_dataset="none").check()  # 'none': no validation
    assert TrainConfig(validation_dataset="None").validation_off and not TrainConfig().validation_off


def test_changed_settings_and_round_trip():
    config = TrainConfig(net="vgg16-ssd", datasets=["a"], lr=0.001)
    assert config.changed_settings() == {"net": "vgg16-ssd", "datasets": ["a"], "lr": 0.001}
    assert TrainConfig.from_mapping({**config.to_dict(), "unknown": 1}) == config

