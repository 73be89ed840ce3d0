"""Building a run: validation on the training data's test split, weight files read once each with
one-line errors, ``--resume`` of a weights-only file (pytorch-ssd's meaning)."""
from __future__ import annotations

import shutil

import pytest
import torch

from ssdfast.data import find_test_split
from ssdfast.engine import Trainer
from ssdfast.engine.run_logs import read_metrics
from ssdfast.errors import ModelFileError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_find_test_split_of_each_format(tmp_path, voc_data):
    from ssdfast.data.synthetic import generate

    assert find_test_split("voc", str(voc_data)).listing == str(voc_data / "ImageSets" / "Main" / "test.txt")
    for fmt, expected in (("coco", "annotations/instances_val"), ("open_images", "sub-test-annotations-bbox.csv")):
        root = generate(tmp_path / fmt, format=fmt, num_images=6, image_size=64, seed=0, num_classes=2)
        assert expected in find_test_split(fmt, str(root)).listing, fmt
        assert find_test_split("synthetic", str(root)) == find_test_split(fmt, str(root))
    assert find_test_split("voc", str(tmp_path / "coco")) is None
    # COCO's official layout, the training image folder given: its test split is the sibling val2017
    official = tmp_path / "coco"
    if (official / "train2017").is_dir():
        split = find_test_split("coco", str(official / "train2017"))
        assert split.root == str(official / "val2017") and split.listing.endswith("instances_val2017.json")
        assert find_test_split("coco", str(official / "val2017")) is None  # no other split beside val


def test_without_validation_dataset_the_test_split_validates(voc_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    trainer = Trainer(tiny_config(voc_data, folder))
    assert len(trainer.val_set) == 3  # the 3 images of ImageSets/Main/test.txt
    trainer.fit()
    log = (folder / "train.log").read_text()
    assert f"Validation: the training data's test split: {voc_data / 'ImageSets' / 'Main' / 'test.txt'}" in log
    records = read_metrics(folder / "metrics.jsonl")
    assert 0.0 <= [r for r in records if r["kind"] == "epoch"][-1]["mAP"] <= 1.0
    assert [r["source"] for r in records if r["kind"] == "data" and r["role"] == "validation"] == [
        f"the training data's test split: {voc_data / 'ImageSets' / 'Main' / 'test.txt'}"]


def test_no_test_split_trains_without_validation_and_says_so(voc_data, tmp_path, tiny_config):
    root = shutil.copytree(voc_data, tmp_path / "voc")
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    folder = tmp_path / "run"
    trainer = Trainer(tiny_config(root, folder))
    assert trainer.val_set is None
    trainer.fit()
    assert "Validation: no validation: no --validation-dataset given and the training data has no test split" in (
        folder / "train.log").read_text()
    assert "mAP" not in [r for r in read_metrics(folder / "metrics.jsonl") if r["kind"] == "epoch"][-1]
    assert Trainer(tiny_config(voc_data, tmp_path / "off", validation_dataset="none")).val_set is None


def _pickled_objects_file(path):
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module: not a plain weights file
    return path


@pytest.mark.parametrize("flag", ["resume", "pretrained_ssd", "base_net"])
def test_files_torch_refuses_are_one_line_errors_of_our_own(voc_data, tmp_path, tiny_config, flag):
    path = _pickled_objects_file(tmp_path / "model.pth")
    option = "--" + flag.replace("_", "-")
    with pytest.raises(ModelFileError) as info:
        Trainer(tiny_config(voc_data, tmp_path / "run", **{flag: str(path)}))
    message = str(info.value)
    assert message.startswith(f"{option} {path}: not a plain weights file") and "\n" not in message
    assert "Weights only load failed" not in message and "weights_only" not in message.replace("weights_only=True", "")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02 not a torch file at all")
    with pytest.raises(ModelFileError, match=f"^{option} {garbage}: not a torch weights file"):
        Trainer(tiny_config(voc_data, tmp_path / "run", **{flag: str(garbage)}))
    no_weights = tmp_path / "settings.pth"
    torch.save({"epoch": 3, "lr": 0.1}, no_weights)
    with pytest.raises(ModelFileError, match=f"^{option} {no_weights}: neither an ssdfast checkpoint nor a state dict"):
        Trainer(tiny_config(voc_data, tmp_path / "run", **{flag: str(no_weights)}))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_resume_of_a_pytorch_ssd_state_dict_loads_every_weight_and_starts_at_epoch_0(voc_data, tmp_path, tiny_config):
    from ssdfast.models import create_model

    torch.manual_seed(5)
    source = create_model("mb2-ssd-lite", 4, width_mult=0.25, image_size=96)
    path = tmp_path / "fruit" / "mb2-ssd-lite-Epoch-29-Loss-2.5.pth"
    path.parent.mkdir()
    torch.save(source.state_dict(), path)  # what pytorch-ssd's net.save() writes
    folder = tmp_path / "run"
    trainer = Trainer(tiny_config(voc_data, folder, resume=str(path), validation_dataset="none"))
    assert (trainer.epoch, trainer.step) == (0, 0)
    for key, value in source.state_dict().items():  # all of them, the heads too
        torch.testing.assert_close(trainer.model.state_dict()[key].float(), value.float(), rtol=0, atol=0)
    trainer.fit()
    assert trainer.step == 3
    assert (f"--resume {path}: a pytorch-ssd model without training state: loaded all its weights"
            in (folder / "train.log").read_text())

    other = tmp_path / "other.pth"
    torch.save(create_model("mb2-ssd-lite", 7, width_mult=0.25, image_size=96).state_dict(), other)
    heads = r"its prediction heads do not fit the dataset's 3 classes \+ background.*--pretrained-ssd"
    with pytest.raises(ModelFileError, match=rf"^--resume {other}: {heads}"):
        Trainer(tiny_config(voc_data, tmp_path / "run2", resume=str(other)))


def test_the_variant_comes_from_the_flags_else_the_starting_file(tmp_path):
    """conv4_3_norm / backbone: a flag wins; else the --pretrained-ssd (or --resume) file's variant when it
    holds the same network; else pytorch-ssd's, the network's default."""
    from ssdfast.engine import TrainConfig
    from ssdfast.engine.build import StartFiles, build_model, variant_options
    from ssdfast.model_files import read_model_file, save_checkpoint
    from ssdfast.models import create_model

    tv = create_model("mb3-small-ssd-lite", 3, backbone="torchvision", image_size=96)
    bare = tmp_path / "mb3-small-ssd-lite-Epoch-3-Loss-2.0.pth"
    torch.save(tv.state_dict(), bare)  # a state dict of the torchvision variant
    ckpt = tmp_path / "last.pth"
    save_checkpoint(ckpt, tv, ["BACKGROUND", "a", "b"])

    base = dict(net="mb3-small-ssd-lite", datasets=["."], resolution=96)
    assert variant_options(TrainConfig(**base)) == {}  # pytorch-ssd's MobileNetV3
    assert variant_options(TrainConfig(**base, pretrained_ssd=str(bare))) == {"backbone": "torchvision"}
    assert variant_options(TrainConfig(**base, pretrained_ssd=str(ckpt))) == {"backbone": "torchvision"}
    assert variant_options(TrainConfig(**base), StartFiles(resume=read_model_file(ckpt))) == {"backbone": "torchvision"}
    given = TrainConfig(**base, pretrained_ssd=str(ckpt), backbone="pytorch-ssd")
    assert variant_options(given) == {"backbone": "pytorch-ssd"}  # the flag wins
    other = TrainConfig(net="mb1-ssd", datasets=["."], pretrained_ssd=str(ckpt))
    assert variant_options(other) == {}  # another network's file says nothing about this one
    model = build_model(TrainConfig(**base, pretrained_ssd=str(bare)), 3)
    assert model.config.backbone == "torchvision" and model.state_dict().keys() == tv.state_dict().keys()


def test_jetson_inference_default_pretrained_file(tmp_path, monkeypatch):
    from ssdfast.engine import TrainConfig
    from ssdfast.engine.settings import JETSON_PRETRAINED

    monkeypatch.chdir(tmp_path)
    assert TrainConfig(datasets=["."]).pretrained_file is None  # not downloaded: start from scratch
    (tmp_path / "models").mkdir()
    (tmp_path / JETSON_PRETRAINED).write_bytes(b"")
    assert TrainConfig(datasets=["."]).net == "mb1-ssd"
    assert TrainConfig(datasets=["."]).pretrained_file == JETSON_PRETRAINED
    assert TrainConfig(datasets=["."], pretrained_ssd="none").pretrained_file is None
    assert TrainConfig(datasets=["."], net="mb2-ssd-lite").pretrained_file is None
    assert TrainConfig(datasets=["."], base_net="x.pth").pretrained_file is None
    assert TrainConfig(datasets=["."], pretrained_ssd="mine.pth").pretrained_file == "mine.pth"
