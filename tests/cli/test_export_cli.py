"""ssdfast-export end to end: checkpoint or pytorch-ssd file in, ONNX + labels.txt out, --check, TensorRT
sidecar, --model-dir picking the latest run's model, one line for a missing package."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from ssdfast.cli.export import main
from ssdfast.export.tensorrt import file_sha256, sidecar_path, tensorrt_available
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model
from tests.export._export_models import CLASS_NAMES, make_model

# Small networks gain nothing from a second thread and lose a lot on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = make_model("mb3-small-ssd-lite", image_size=160)
    path = tmp_path_factory.mktemp("run") / "best.pth"
    save_checkpoint(path, model, CLASS_NAMES)
    return path


def _copy(checkpoint: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "best.pth"
    target.write_bytes(checkpoint.read_bytes())
    return target


def test_jetson_export_with_check(checkpoint, tmp_path, capsys):
    ckpt = _copy(checkpoint, tmp_path)
    assert main([str(ckpt), "--check", "--check-count", "2"]) == 0
    out = capsys.readouterr().out
    model_path = tmp_path / "best.onnx"
    proto = onnx.load(str(model_path))
    assert [o.name for o in proto.graph.output] == ["scores", "boxes"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 160, 160]
    assert (tmp_path / "labels.txt").read_text().splitlines() == ["BACKGROUND", "cat", "dog"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ssdfast.checkpoint_sha256"] == file_sha256(ckpt)
    assert "--input-blob=input_0 --output-cvg=scores --output-bbox=boxes" in out
    assert "passed" in out


def test_onnx_nms_dynamic_batch_on_given_images(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out_file = tmp_path / "out" / "nms.onnx"
    rc = main(["--input", str(checkpoint), "--format", "onnx-nms", "--batch_size", "dynamic", "--output", str(out_file),
               "--score_threshold", "0.2", "--max-detections", "50", "--check", "--check-images", str(images)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "passed on 3 image(s)" in out
    proto = onnx.load(str(out_file))
    assert [o.name for o in proto.graph.output] == ["num_detections", "detection_boxes", "detection_scores",
                                                    "detection_classes"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert (tmp_path / "out" / "labels.txt").is_file()


def test_check_failure_exits_1(checkpoint, tmp_path, capsys):
    rc = main([str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--check", "--check-count", "1",
               "--tolerance", "1e-12"])
    assert rc == 1
    assert "FAIL" in capsys.readouterr().err


def test_trt_nms_tensorrt_command_and_stale_engine(checkpoint, tmp_path, capsys):
    if tensorrt_available():
        pytest.skip("with TensorRT installed an engine is built instead of printing trtexec")
    ckpt = _copy(checkpoint, tmp_path)
    engine = tmp_path / "model.engine"
    rc = main([str(ckpt), "--format", "trt-nms", "--output", str(tmp_path / "m.onnx"), "--tensorrt", str(engine),
               "--fp16", "--check", "--check-count", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"trtexec --onnx={tmp_path / 'm.onnx'} --saveEngine={engine} --fp16" in out
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["checkpoint_sha256"] == file_sha256(ckpt) and sidecar["precision"] == "fp16"
    assert sidecar["export_format"] == "trt-nms" and sidecar["engine_sha256"] is None

    engine.write_bytes(b"what trtexec wrote")  # the user runs the printed command
    assert main([str(ckpt), "--verify-engine", str(engine)]) == 0
    assert "up to date" in capsys.readouterr().out
    ckpt.write_bytes(ckpt.read_bytes() + b"retrained")  # another checkpoint in the same place
    assert main([str(ckpt), "--verify-engine", str(engine)]) == 1
    assert "stale" in capsys.readouterr().err


def test_model_dir(checkpoint, tmp_path, capsys):
    _copy(checkpoint, tmp_path / "run")
    assert main(["--model-dir", str(tmp_path / "run"), "--format", "trt-nms"]) == 0
    assert (tmp_path / "run" / "best-trt-nms.onnx").is_file()
    assert (tmp_path / "run" / "labels.txt").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "which checkpoint"),
        (["missing.pth"], "does not exist"),
        (["{ckpt}", "--opset", "9"], "--opset"),
        (["{ckpt}", "--net", "vgg16-ssd"], "mb3-small-ssd-lite"),
        (["{ckpt}", "--width", "300"], "160x160"),
        (["{ckpt}", "--int8"], "--calib-dir"),
        (["{ckpt}", "--output", "{tmp}/model.txt"], ".onnx"),
        (["{ckpt}", "--check-images", "{tmp}/nowhere"], "--check-images"),
        (["{ckpt}", "--input", "{tmp}/other.pth"], "not both"),
        (["--model-dir", "{tmp}/nowhere"], "not a folder"),
        (["--model-dir", "{tmp}/empty"], "no model file"),
        (["{tmp}/not-a-checkpoint.pth"], "not-a-checkpoint.pth: not a torch weights file"),
    ],
)
def test_usage_errors(checkpoint, tmp_path, capsys, args, message):
    (tmp_path / "not-a-checkpoint.pth").write_bytes(b"garbage")
    (tmp_path / "empty").mkdir()
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_argparse_errors_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["x.pth", "--batch-size", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["x.pth", "--format", "caffe"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--format", "--batch-size", "--opset", "--check", "--tensorrt", "--int8", "--calib-dir"):
        assert flag in out


# ----------------------------------------------------------------------------- pytorch-ssd files, --model-dir


def _train_state(run_id: str | None, epochs: int) -> dict:
    history = [{"kind": "epoch", "epoch": e, "train_loss": 3.0 - 0.1 * e} for e in range(epochs)]
    state = {"epoch": epochs, "step": 10 * epochs, "metrics": {"history": history, "best_map": 0.5}}
    if run_id is not None:
        state["run_id"] = run_id
    return state


@pytest.mark.parametrize("old_run_id", ["run-1", None])
def test_model_dir_never_exports_an_earlier_runs_best(tmp_path, capsys, old_run_id):
    # An earlier run (another network) left best.pth; a new run in the same folder has only last.pth so far.
    folder = tmp_path / "models" / "fruit"
    save_checkpoint(folder / "best.pth", create_model("mb3-small-ssd-lite", 3, width_mult=0.25, image_size=96),
                    CLASS_NAMES, train_state=_train_state(old_run_id, 5))
    save_checkpoint(folder / "last.pth", create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=128),
                    CLASS_NAMES, train_state=_train_state("run-2", 1))
    assert main([f"--model-dir={folder}"]) == 0
    out = capsys.readouterr().out
    assert f"--model-dir {folder}: exporting last.pth" in out
    proto = onnx.load(str(folder / "ssd-mobilenet.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ssdfast.net"] == "mb2-ssd-lite" and meta["ssdfast.checkpoint"] == "last.pth"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 128, 128]


@pytest.fixture(scope="module")
def mb1_ssd():
    return make_model("mb1-ssd", image_size=300)


def test_pytorch_ssd_folder_as_onnx_export(mb1_ssd, tmp_path, capsys):
    """jetson-inference's `onnx_export.py --model-dir=models/fruit`, with a pytorch-ssd training folder."""
    import onnxruntime as ort
    import torch

    from ssdfast import ops

    folder = tmp_path / "models" / "fruit"
    folder.mkdir(parents=True)
    torch.save(mb1_ssd.state_dict(), folder / "mb1-ssd-Epoch-12-Loss-2.1.pth")  # what its net.save() writes
    torch.save(create_model("mb1-ssd", 3).state_dict(), folder / "mb1-ssd-Epoch-5-Loss-3.4.pth")  # a worse epoch
    (folder / "labels.txt").write_text("BACKGROUND\ncat\ndog")  # as train_ssd.py writes it (no last newline)
    assert main([f"--model-dir={folder}", "--check", "--check-count", "2"]) == 0
    out = capsys.readouterr().out
    assert "exporting mb1-ssd-Epoch-12-Loss-2.1.pth: the lowest loss (2.1)" in out
    onnx_file = folder / "ssd-mobilenet.onnx"
    assert (f"detectnet --model={onnx_file} --labels={folder / 'labels.txt'} --input-blob=input_0 "
            "--output-cvg=scores --output-bbox=boxes <input> <output>") in out
    assert "passed on 2 image(s)" in out
    assert (folder / "labels.txt").read_text().splitlines() == ["BACKGROUND", "cat", "dog"]
    proto = onnx.load(str(onnx_file))
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in proto.graph.input] == [("input_0", [1, 3, 300, 300])]
    assert [(o.name, dims(o)) for o in proto.graph.output] == [("scores", [1, 3000, 3]), ("boxes", [1, 3000, 4])]

    # What detectnet feeds the graph, (pixel / 255 - 0.5) / 0.5, gives what pytorch-ssd's mb1-ssd computes
    # on its own preprocessing, (pixel - 127) / 128 (its image_mean / image_std): the graph carries the
    # difference. Scores are softmax probabilities, boxes normalized corners, as detectNet reads them.
    pixels = np.random.default_rng(3).integers(0, 256, (1, 3, 300, 300)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    scores, boxes = session.run(None, {"input_0": (pixels / 255 - 0.5) / 0.5})
    with torch.no_grad():
        confidences, locations = mb1_ssd((torch.from_numpy(pixels) - 127.0) / 128.0)
    np.testing.assert_allclose(scores, confidences.softmax(-1).numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, ops.decode_boxes(locations, mb1_ssd.priors, (0.1, 0.2)).numpy(),
                               rtol=0, atol=1e-4)
    assert np.allclose(scores.sum(-1), 1, atol=1e-5) and (boxes[..., 2:] >= boxes[..., :2]).all()


def test_pytorch_ssd_file_with_its_flags(tmp_path, capsys):
    import torch

    model = make_model("mb2-ssd-lite", image_size=128)  # width 0.25
    weights = tmp_path / "mb2-ssd-lite-Epoch-99-Loss-2.0.pth"
    torch.save(model.state_dict(), weights)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")  # dusty-nv's dataset labels: no BACKGROUND
    out_file = tmp_path / "out" / "model.onnx"
    rc = main(["--input", str(weights), "--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25", "--resolution", "128",
               "--labels", str(names), "--output", str(out_file), "--format", "onnx-nms",
               "--check", "--check-count", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pytorch-ssd model" in out and "passed on 2 image(s)" in out
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == CLASS_NAMES
    assert names.read_text() == "cat\ndog\n"  # the label file given is left as it was
    # onnx_export.py's --width / --height are checked against the network's size.
    assert main([str(weights), "--net", "mb2-ssd-lite", "--width-mult", "0.25", "--resolution", "128",
                 "--label-file", str(names), "--width", "300", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--width 300 but the model's network takes 128x128 images" in capsys.readouterr().err


def test_labels_txt_in_another_format_is_not_rewritten(tmp_path, capsys):
    import torch

    folder = tmp_path / "run"
    folder.mkdir()
    model = create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=96)
    torch.save(model.state_dict(), folder / "mb2-ssd-lite-Epoch-1-Loss-2.0.pth")
    (folder / "labels.txt").write_text("BACKGROUND,cat,dog\n")  # qfgaohao's one-line format
    flags = ["--model-dir", str(folder), "--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25", "--resolution", "96"]
    assert main(flags) == 2
    assert "--output-labels" in capsys.readouterr().err
    assert (folder / "labels.txt").read_text() == "BACKGROUND,cat,dog\n" and not (folder / "mb2-ssd-lite.onnx").exists()
    assert main(flags + ["--output", "fruit.onnx", "--output-labels", str(folder / "detectnet-labels.txt")]) == 0
    assert (folder / "fruit.onnx").is_file()  # a bare --output name goes into --model-dir, as onnx_export.py
    assert (folder / "detectnet-labels.txt").read_text().splitlines() == CLASS_NAMES


# ----------------------------------------------------------------------------- missing packages


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module,flags,message", [
    ("onnxruntime", ["--check"],
     "error: --check needs the onnxruntime package, which is not installed: pip install onnxruntime"),
    ("onnxslim", [],
     "error: ONNX export (it simplifies the traced graph) needs the onnxslim package, which is not installed"),
    ("onnx", [], "error: ONNX export needs the onnx package, which is not installed: pip install onnx"),
])
def test_a_missing_package_is_one_line(checkpoint, tmp_path, module, flags, message):
    import subprocess
    import sys

    output = tmp_path / "m.onnx"
    argv = [str(checkpoint), "-o", str(output), *flags]
    code = (f"import sys; sys.modules[{module!r}] = None; from ssdfast.cli.export import main; "
            f"sys.exit(main({argv!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert not output.exists()


def test_the_command_line_starts_without_torch():
    """``ssdfast-export --help`` and usage errors load neither torch nor the export steps
    (``ssdfast.export`` imports its names when first used)."""
    import subprocess
    import sys

    code = ("import sys; import ssdfast.cli.export; from ssdfast.export import FORMATS; "
            "print(sorted(m for m in ('torch', 'onnx', 'ssdfast.export.compare', 'ssdfast.export.onnx') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
