"""jetson-inference's tutorial ("Collecting your own Detection Datasets") with ssdfast's commands:

    python3 train_ssd.py --dataset-type=voc --data=data/fruit --model-dir=models/fruit
    python3 onnx_export.py --model-dir=models/fruit
    detectnet --model=models/fruit/ssd-mobilenet.onnx --labels=models/fruit/labels.txt \\
              --input-blob=input_0 --output-cvg=scores --output-bbox=boxes <input> <output>

``ssdfast-train`` / ``ssdfast-export`` take the first two commands' flags as written (a few flags
added to keep the training small), and leave what detectnet's ONNX SSD path reads (c/detectNet.cpp):
one input ``input_0 [1, 3, H, W]``, ``scores [1, P, C]`` (softmax, class 0 = background, C = the
lines of labels.txt) and ``boxes [1, P, 4]`` (normalized corners, multiplied by the image size).
"""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch

from ssdfast.cli.detect import main as detect_main
from ssdfast.cli.eval import main as eval_main
from ssdfast.cli.export import main as export_main
from ssdfast.cli.train import main as train_main
from ssdfast.data.synthetic import generate
from ssdfast.export import check_export
from ssdfast.model_files import load_model_file
from ssdfast.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: Only what keeps the training a few seconds long; the tutorial's flags are given as it writes them, and
#: the network is the default, jetson-inference's mb1-ssd, started from its default pretrained file.
SMALL = ["--resolution", "96", "--epochs", "1", "--num-workers", "0", "--device", "cpu", "--no-progress"]


def test_tutorial_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    generate("data/fruit", format="voc", num_images=12, image_size=96, seed=0, num_classes=3, workers=1)
    # the tutorial downloads mobilenet-v1-ssd-mp-0_675.pth (VOC, 21 classes) to models/: a stand-in of that layout
    torch.manual_seed(0)
    (tmp_path / "models").mkdir()
    torch.save(create_model("mb1-ssd", 21).state_dict(), "models/mobilenet-v1-ssd-mp-0_675.pth")

    assert train_main(["--dataset-type=voc", "--data=data/fruit", "--model-dir=models/fruit", *SMALL]) == 0
    log = (tmp_path / "models/fruit/train.log").read_text()
    assert ("Training mb1-ssd" in log
            and "Weights: --pretrained-ssd models/mobilenet-v1-ssd-mp-0_675.pth (jetson-inference default)" in log)
    assert "Validation: the training data's test split" in log
    capsys.readouterr()
    assert export_main(["--model-dir=models/fruit"]) == 0
    out = capsys.readouterr().out

    model_file, labels_file = tmp_path / "models/fruit/ssd-mobilenet.onnx", tmp_path / "models/fruit/labels.txt"
    assert ("detectnet --model=models/fruit/ssd-mobilenet.onnx --labels=models/fruit/labels.txt "
            "--input-blob=input_0 --output-cvg=scores --output-bbox=boxes <input> <output>") in out
    names = labels_file.read_text().splitlines()
    assert names[0] == "BACKGROUND" and len(names) == 4 and all(n.strip() == n and n for n in names)

    proto = onnx.load(str(model_file))
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731  (all static)
    assert [(i.name, dims(i)) for i in proto.graph.input] == [("input_0", [1, 3, 96, 96])]
    (scores_name, scores_dims), (boxes_name, boxes_dims) = [(o.name, dims(o)) for o in proto.graph.output]
    P = scores_dims[1]
    assert (scores_name, boxes_name) == ("scores", "boxes")
    assert scores_dims == [1, P, len(names)] and boxes_dims == [1, P, 4] and P > 0

    # The exported network is the trained one: the model file the export picked, run by onnxruntime on
    # detectnet's input range, equals PyTorch on the model's own preprocessing (within 1e-4).
    picked = next(line for line in out.splitlines() if line.startswith("--model-dir models/fruit: exporting "))
    chosen = picked.split("exporting ")[1].split(":")[0]
    loaded = load_model_file(tmp_path / "models/fruit" / chosen)
    assert loaded.class_names == names
    report = check_export(model_file, loaded.model, images=[np.full((90, 120, 3), 128, np.uint8)]
                          + [np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)])
    assert report.passed, report.summary()
    assert max(report.max_abs_diff.values()) < 1e-4

    # One class count in every command's messages (the label file lists 3 classes and BACKGROUND).
    model_flag = f"--model=models/fruit/{chosen}"
    assert eval_main(["--trained-model", f"models/fruit/{chosen}", "--dataset", "data/fruit", "--device", "cpu",
                      "--num-workers", "0"]) == 0
    eval_err = capsys.readouterr().err
    image = sorted((tmp_path / "data/fruit/JPEGImages").iterdir())[0]
    assert detect_main([model_flag, str(image), "--device", "cpu"]) == 0
    detect_err = capsys.readouterr().err
    for command, text in (("train", log), ("export", out), ("eval", eval_err), ("detect", detect_err)):
        counts = re.findall(r"\b\d+ class(?:es)?\b(?: \+ background)?", text)
        assert counts and set(counts) == {"3 classes + background"}, (command, counts)
