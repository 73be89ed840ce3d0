"""ssdfast-train: pytorch-ssd commands, both spellings, --config YAML, every data format, user mistakes."""
from __future__ import annotations

import argparse

import pytest
import torch

from ssdfast.cli.train import build_parser, config_from_args, main, parse_args
from ssdfast.engine.run_logs import read_metrics

TINY = ["--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25", "--resolution", "96", "--batch-size", "4",
        "--num-epochs", "1", "--num-workers", "0", "--debug-steps", "1", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ssdfast.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    for fmt in ("voc", "coco", "open_images"):
        generate(root / fmt, format=fmt, num_images=10, image_size=96, seed=0, num_classes=3)
    generate(root / "voc2", format="voc", num_images=10, image_size=96, seed=1, num_classes=3)
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------------- parsing
def test_pytorch_ssd_flags_in_both_spellings():
    args = parse_args(["--dataset_type", "voc", "--datasets", "A", "B", "--validation_dataset", "C",
                       "--net", "mb2-ssd-lite", "--scheduler", "cosine", "--t_max", "100", "--lr", "0.01",
                       "--base_net_lr", "0.001", "--extra_layers_lr", "0.005", "--num_epochs", "7",
                       "--batch_size", "8", "--num_workers", "1", "--validation_epochs", "2", "--debug_steps", "5",
                       "--checkpoint_folder", "out", "--use_cuda", "false", "--mb2_width_mult", "0.5",
                       "--freeze_base_net", "--balance_data", "--weight_decay", "1e-4", "--momentum", "0.8",
                       "--gamma", "0.5", "--milestones", "3,5"])
    assert args.dataset_type == "voc" and args.datasets == ["A", "B"] and args.validation_dataset == "C"
    assert (args.t_max, args.lr, args.base_net_lr, args.extra_layers_lr) == (100.0, 0.01, 0.001, 0.005)
    assert (args.num_epochs, args.batch_size, args.num_workers, args.checkpoint_folder) == (7, 8, 1, "out")
    assert args.use_cuda is False and args.freeze_base_net and args.balance_data and args.milestones == "3,5"
    dashed = parse_args(["--dataset-type", "coco", "--validation-dataset", "C", "--t-max", "100",
                         "--base-net-lr", "0.001"])
    assert (dashed.dataset_type, dashed.validation_dataset, dashed.t_max,
            dashed.base_net_lr) == ("coco", "C", 100.0, 0.001)


def test_aliases_and_optional_amp_value():
    args = parse_args(["--epochs", "3", "--workers", "0", "--model-dir", "m", "--amp"])
    assert (args.num_epochs, args.num_workers, args.checkpoint_folder, args.amp) == (3, 0, "m", "auto")
    assert parse_args(["--amp", "fp16"]).amp == "fp16" and parse_args([]).amp is None
    args = parse_args(["--iterations", "500", "--warmup", "50", "--grad-clip", "5", "--compile",
                       "--channels-last", "--seed", "4"])
    assert (args.iterations, args.warmup, args.grad_clip, args.compile, args.channels_last,
            args.seed) == (500, 50, 5.0, True, True, 4)
    # channels-last is the default (the fast layout); "false" turns it off
    assert parse_args([]).channels_last is None  # measured before training (ssdfast.engine.memory_format)
    assert parse_args(["--channels-last", "false"]).channels_last is False


def test_every_flag_has_help_and_both_spellings():
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, action.dest
        longs = [o for o in action.option_strings if o.startswith("--")]
        for option in longs:
            if "-" in option[2:] or "_" in option[2:]:
                assert option.replace("_", "-") in longs and "--" + option[2:].replace("-", "_") in longs, option


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("net: mb1-ssd\nbatch-size: 16\nlr: 1e-3\ndatasets: [A, B]\nmilestones: [10, 20]\n"
                   "freeze_base_net: true\namp: bf16\nepochs: 9\n")
    args = parse_args(["--config", str(cfg), "--lr", "0.05", "--batch_size", "2"])
    assert args.net == "mb1-ssd" and args.datasets == ["A", "B"] and args.milestones == "10,20"
    assert args.freeze_base_net is True and args.amp == "bf16" and args.num_epochs == 9
    assert args.lr == 0.05 and args.batch_size == 2  # the command line wins


@pytest.mark.parametrize("text, message", [
    ("nett: mb1-ssd\n", "unknown setting 'nett'"),
    ("lr: fast\n", "lr"),
    ("scheduler: linear\n", "scheduler"),
    ("- a\n- b\n", "expected a mapping"),
    ("net: [unclosed\n", "not valid YAML"),
    ("compile: 3\n", "true or false"),
])
def test_bad_config_is_a_one_line_usage_error(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["--config", str(cfg), "--datasets", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert message in err and str(cfg) in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in _one_line_error(capsys)


# ---------------------------------------------------------------------------------- training
def test_pytorch_ssd_style_command_trains_on_voc(data, tmp_path, capsys):
    out = tmp_path / "models"
    rc = main(["--dataset_type", "voc", "--datasets", str(data / "voc"), str(data / "voc2"),
               "--validation_dataset", str(data / "voc"), "--net", "mb2-ssd-lite", "--scheduler", "cosine",
               "--t_max", "100", "--lr", "0.01", "--mb2_width_mult", "0.25", "--resolution", "96",
               "--batch_size", "4", "--num_epochs", "1", "--num_workers", "0", "--checkpoint_folder", str(out),
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for name in ("last.pth", "best.pth", "labels.txt", "train.log", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["train_state"]["step"] == 4  # 8 + 8 training images, batch 4
    assert ckpt["train_state"]["args"]["datasets"] == [str(data / "voc"), str(data / "voc2")]
    epoch = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"][-1]
    assert 0.0 <= epoch["mAP"] <= 1.0


def test_coco_format_trains_with_coco_metric(data, tmp_path, capsys):
    out = tmp_path / "models"
    rc = main(["--dataset-type", "coco", "--datasets", str(data / "coco"), "--validation-dataset", str(data / "coco"),
               "--model-dir", str(out), "--amp", "bf16", *TINY])
    assert rc == 0, capsys.readouterr().err
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["category_ids"][1:] == [1, 3, 7]  # label -> COCO category id (label 0: background)
    epoch = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"][-1]
    assert 0.0 <= epoch["mAP"] <= 1.0 and "val_loss" in epoch


def test_open_images_format_trains(data, tmp_path, capsys):
    out = tmp_path / "models"
    rc = main(["--dataset-type", "open_images", "--datasets", str(data / "open_images"),
               "--validation-dataset", str(data / "open_images"), "--balance-data", "--model-dir", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    assert (out / "labels.txt").read_text().split()[0] == "BACKGROUND"
    assert (out / "best.pth").is_file()


# ------------------------------------------------------------------------------- user mistakes
def test_missing_dataset_path(tmp_path, capsys):
    assert main(["--datasets", str(tmp_path / "VOC2007"), "--model-dir", str(tmp_path / "m"), *TINY]) == 2
    assert "VOC2007 does not exist" in _one_line_error(capsys)


def test_unknown_network(data, tmp_path, capsys):
    rc = main(["--datasets", str(data / "voc"), *TINY, "--net", "resnet-ssd", "--model-dir", str(tmp_path / "m")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "resnet-ssd" in err and "mb2-ssd-lite" in err


def test_resume_from_another_network(data, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["--datasets", str(data / "voc"), "--model-dir", str(first), *TINY]) == 0
    capsys.readouterr()
    rc = main(["--datasets", str(data / "voc"), "--model-dir", str(tmp_path / "second"), *TINY,
               "--net", "mb3-small-ssd-lite", "--resume", str(first / "last.pth")])
    assert rc == 2
    assert (f"--resume {first / 'last.pth'}: a mb2-ssd-lite checkpoint but --net is mb3-small-ssd-lite"
            in _one_line_error(capsys))


def test_resume_alone_continues_the_run(data, tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["--datasets", str(data / "voc"), "--model-dir", str(folder), "--scheduler", "cosine", *TINY]) == 0
    # only --resume and a longer run: dataset, network, schedule, folder come from the checkpoint
    assert main(["--resume", str(folder / "last.pth"), "--num-epochs", "2",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    state = torch.load(folder / "last.pth", weights_only=True)["train_state"]
    assert (state["epoch"], state["step"]) == (2, 4) and state["args"]["scheduler"] == "cosine"
    assert "Resumed from" in (folder / "train.log").read_text()


def test_bad_flag_values(tmp_path, capsys):
    assert main(["--batch-size", "0"]) == 2
    assert "--batch-size" in _one_line_error(capsys)
    assert main(["--datasets", str(tmp_path), "--milestones", "a,b", "--model-dir", str(tmp_path / "m")]) == 2
    assert "--milestones" in _one_line_error(capsys)
    assert main([]) == 2
    assert "--datasets" in _one_line_error(capsys)


def test_demo_flag_runs_the_demo(monkeypatch, tmp_path):
    import ssdfast.demo

    calls = []
    monkeypatch.setattr(ssdfast.demo, "run_demo", lambda output, **kw: calls.append((output, kw)))
    assert main(["--demo", "--output", str(tmp_path / "d"), "--device", "cpu"]) == 0
    assert calls == [(str(tmp_path / "d"), {"device": "cpu", "seed": 0})]


def test_small_demo_end_to_end(tmp_path, monkeypatch):
    """The demo's whole path on a tiny budget (the real one is measured by hand: ~6-7 min)."""
    from ssdfast.demo import DemoSettings, run_demo

    monkeypatch.setenv("CI", "true")
    settings = DemoSettings(num_images=30, image_size=96, width_mult=0.25, resolution=96, num_epochs=1,
                            batch_size=8, validation_epochs=1, num_workers=0, num_drawn=2)
    result = run_demo(tmp_path / "demo", settings=settings)
    assert 0.0 <= result["mAP"] <= 1.0
    assert len(result["images"]) == 2 and all((tmp_path / "demo" / "detections").glob("*.jpg"))
    assert (tmp_path / "demo" / "checkpoints" / "curves.png").is_file()


# --------------------------------------------------------------- jetson-inference / pytorch-ssd users
def test_every_flag_of_jetson_inference_train_ssd_is_accepted():
    """dusty-nv/pytorch-ssd's train_ssd.py (jetson-inference's training script), every flag, its meaning."""
    args = parse_args([
        "--dataset-type=voc", "--data=data/fruit", "--balance-data", "--net=mb1-ssd", "--resolution=300",
        "--freeze-base-net", "--freeze-net", "--mb2-width-mult=1.0", "--base-net=b.pth", "--pretrained-ssd=p.pth",
        "--resume=r.pth", "--lr=0.01", "--momentum=0.9", "--weight-decay=5e-4", "--gamma=0.1", "--base-net-lr=0.001",
        "--extra-layers-lr=0.01", "--scheduler=cosine", "--milestones=80,100", "--t-max=100", "--batch-size=4",
        "--epochs=30", "--workers=2", "--validation-epochs=1", "--validation-mean-ap", "--debug-steps=10",
        "--use-cuda", "--checkpoint-folder=models/x", "--model-dir=models/fruit", "--log-level=debug",
    ])
    assert args.datasets == ["data/fruit"] and args.checkpoint_folder == "models/fruit" and args.resolution == 300
    assert (args.num_epochs, args.num_workers, args.validation_epochs, args.debug_steps) == (30, 2, 1, 10)
    assert args.validation_mean_ap is True and args.use_cuda is True and args.log_level == "debug"
    assert args.freeze_base_net and args.freeze_net and args.balance_data and args.milestones == "80,100"
    assert parse_args(["--use-cuda", "false"]).use_cuda is False and parse_args(["--learning-rate", "0.5"]).lr == 0.5
    assert parse_args([]).num_workers is None  # sized from the cores at run time


def test_jetson_inference_command_validates_on_the_test_split(data, tmp_path, capsys):
    out = tmp_path / "models" / "fruit"
    rc = main(["--dataset-type=voc", f"--data={data / 'voc'}", f"--model-dir={out}", "--validation-mean-ap", *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    log = (out / "train.log").read_text()
    assert f"Validation: the training data's test split: {data / 'voc' / 'ImageSets' / 'Main' / 'test.txt'}" in log
    epoch = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"][-1]
    assert epoch["epoch"] == 0 and 0.0 <= epoch["mAP"] <= 1.0 and "Epoch: 0," in log  # epochs count from 0
    assert "\r" not in err and "Epoch: 0, Step: 1/2" in err  # stderr is not a terminal: no bar, no \r


def test_log_level_sets_console_and_train_log(data, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["--datasets", str(data / "voc"), "--model-dir", str(out), "--log-level", "warning",
                 "--validation-dataset", "none", *TINY]) == 0
    assert "Epoch: 0" not in capsys.readouterr().err and "Epoch: 0" not in (out / "train.log").read_text()
    assert main(["--datasets", str(data / "voc"), "--log-level", "loud"]) == 2
    assert "--log-level" in _one_line_error(capsys)


# ----------------------------------------------------------------------------------- resuming
@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 1-epoch run (cosine schedule); read-only: copy it before resuming."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert main(["--datasets", str(data / "voc"), "--model-dir", str(folder), "--scheduler", "cosine",
                 "--validation-dataset", "none", *TINY]) == 0
    return folder


def test_resume_precedence_command_line_config_checkpoint(finished_run, tmp_path):
    last = str(finished_run / "last.pth")
    saved = config_from_args(["--resume", last])
    assert saved.scheduler == "cosine" and saved.net == "mb2-ssd-lite" and saved.resolution == 96
    # a flag given wins, even when it spells the default
    assert config_from_args(["--resume", last, "--scheduler", "multi-step"]).scheduler == "multi-step"
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lr: 0.5\nwarmup: 3\n")
    config = config_from_args(["--resume", last, "--config", str(yaml_file), "--lr", "0.2"])
    assert (config.lr, config.warmup, config.scheduler) == (0.2, 3, "cosine")


def test_resume_of_a_missing_file_names_resume(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "models" / "last.pth")]) == 2
    assert _one_line_error(capsys) == f"error: --resume {tmp_path / 'models' / 'last.pth'}: no such file"


def test_resuming_a_finished_run_says_so(finished_run, tmp_path, capsys):
    import shutil

    folder = shutil.copytree(finished_run, tmp_path / "run")
    assert main(["--resume", str(folder / "last.pth"), "--model-dir", str(folder)]) == 0
    assert f"{folder / 'last.pth'} already finished all 1 epochs of its run; raise --num-epochs to train further" in (
        capsys.readouterr().err)


def test_model_files_torch_refuses_are_one_line_errors(data, tmp_path, capsys):
    bad = tmp_path / "model.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, bad)
    for flag in ("--pretrained-ssd", "--base-net", "--resume"):
        assert main(["--datasets", str(data / "voc"), "--model-dir", str(tmp_path / "m"), *TINY, flag, str(bad)]) == 2
        assert _one_line_error(capsys).startswith(f"error: {flag} {bad}: not a plain weights file")


def test_strict_stops_at_a_truncated_image(data, tmp_path, capsys):
    import shutil

    root = shutil.copytree(data / "voc", tmp_path / "voc")
    image = root / "JPEGImages" / f"{(root / 'ImageSets' / 'Main' / 'trainval.txt').read_text().split()[0]}.jpg"
    image.write_bytes(image.read_bytes()[: int(image.stat().st_size * 0.8)])
    common = ["--datasets", str(root), "--validation-dataset", "none", *TINY, "--num-workers", "1"]
    assert main([*common, "--model-dir", str(tmp_path / "a")]) == 0  # used, with a warning in the log
    assert str(image) in (tmp_path / "a" / "train.log").read_text()
    capsys.readouterr()
    assert main([*common, "--model-dir", str(tmp_path / "b"), "--strict"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # the run's opening lines, then the error, on one line
    assert last.startswith("error: ") and str(image) in last and "truncated" in last and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_saves_and_prints_the_resume_command(data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "run"
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "ssdfast.cli.train", "--datasets", str(data / "voc"), "--model-dir", str(out),
           *TINY, "--num-epochs", "500", "--validation-dataset", "none", "--num-workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while not any(r["kind"] == "train" for r in read_metrics(out / "metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"continue with: ssdfast-train --resume {out / 'last.pth'} --device cpu" in err and "Traceback" not in err
    step = torch.load(out / "last.pth", weights_only=True)["train_state"]["step"]
    assert step >= 1 and f"(global step {step})" in (out / "train.log").read_text()
