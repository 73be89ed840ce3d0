"""INT8 exports (Q/DQ ONNX): the graph each target gets, the detectnet contract kept, detections of a
trained model close to FP32's, and ``ssdfast-export --int8`` (files, the TensorRT engine command, errors)."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from ssdfast import ops
from ssdfast.cli.export import main
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.data.transforms import EvalTransform
from ssdfast.detector import postprocess
from ssdfast.evaluation import evaluate_voc
from ssdfast.export import export_onnx
from ssdfast.export.inputs import calibration_batches, load_images, prepare_inputs
from ssdfast.export.quantize import INT8_TARGETS, MAX_HEAD_STEP, int8_path, qdq_summary, quantize_onnx
from ssdfast.export.runtime import onnxruntime_session
from ssdfast.export.tensorrt import file_sha256, has_qdq_nodes, read_sidecar
from ssdfast.export.tensorrt_rules import unsupported_ops
from ssdfast.loss import MultiBoxLoss
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model
from ssdfast.ops import EVALUATION

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_NAMES = ["BACKGROUND", "circle", "square"]
REPO = Path(__file__).resolve().parents[2]


def _train(data: Path, steps: int = 80) -> torch.nn.Module:
    """mb2-ssd-lite x0.25 at 96 px trained (SGD with momentum, full batch) on the training split of ``data``
    until it detects its objects: a network with a trained one's weights and activations."""
    torch.manual_seed(0)
    model = create_model("mb2-ssd-lite", len(CLASS_NAMES), width_mult=0.25, image_size=96)
    config = model.config
    transform = EvalTransform(config.image_size, config.mean, config.std)
    dataset = build_dataset("voc", [str(data)], split="train", transform=transform)
    items = [dataset[i] for i in range(len(dataset))]
    most = max(len(t["labels"]) for _, t in items)
    boxes = torch.zeros(len(items), most, 4)
    labels = torch.full((len(items), most), -1, dtype=torch.int64)
    for i, (_, target) in enumerate(items):
        boxes[i, :len(target["labels"])] = target["boxes"]
        labels[i, :len(target["labels"])] = target["labels"]
    x = torch.stack([image for image, _ in items])
    criterion = MultiBoxLoss(model.priors, variances=config.variances)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(steps):
        regression, classification = criterion(*model(x), boxes, labels)
        optimizer.zero_grad()
        (regression + classification).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained model, its training images (read) and annotations, and its FP32 export (dynamic batch)."""
    root = tmp_path_factory.mktemp("int8")
    data = Path(generate(root / "voc", format="voc", num_images=10, image_size=128, seed=0, num_classes=2))
    model = _train(data)
    dataset = build_dataset("voc", [str(data)], split="train")
    images = [im.pixels for im in load_images([dataset.image_path(i) for i in range(len(dataset))])]
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    fp32 = export_onnx(model, root / "model.onnx", batch_size="dynamic", class_names=CLASS_NAMES,
                       metadata={"ssdfast.checkpoint_sha256": "ab"}).path
    return {"model": model, "images": images, "annotations": annotations, "fp32": fp32, "root": root, "data": data}


@pytest.fixture(scope="module")
def int8_files(trained):
    batches = calibration_batches(trained["images"], trained["model"].config, 4)
    return {target: quantize_onnx(trained["fp32"], int8_path(trained["fp32"], target), batches, target=target)
            for target in INT8_TARGETS}


def _initializers(proto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def _producers(proto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in proto.graph.node for o in n.output}


def _io(proto) -> list[tuple[str, int, list[int | str]]]:
    def shape(v):
        return [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]

    return [(v.name, v.type.tensor_type.elem_type, shape(v)) for v in (*proto.graph.input, *proto.graph.output)]


def test_int8_path_names_the_target():
    assert (int8_path("models/fruit/ssd-mobilenet.onnx", "tensorrt")
            == Path("models/fruit/ssd-mobilenet-int8-tensorrt.onnx"))
    assert int8_path("best.onnx", "cpu").name == "best-int8-cpu.onnx"
    with pytest.raises(ValueError, match="target"):
        int8_path("best.onnx", "coreml")


def test_calibration_batches_are_the_graph_input_in_whole_batches(trained):
    images, config = trained["images"], trained["model"].config
    batches = calibration_batches(images[:7], config, 3)
    assert [b.shape for b in batches] == [(3, 3, 96, 96)] * 2 and all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(batches[1], prepare_inputs(images[3:6], config)[1].numpy())
    assert calibration_batches(images[:2], config, 3) == []


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_file_keeps_the_detectnet_contract(trained, int8_files, target):
    result = int8_files[target]
    proto, fp32 = onnx.load(str(result.path)), onnx.load(str(trained["fp32"]))
    assert _io(proto) == _io(fp32)  # input_0 float [batch,3,96,96]; scores, boxes float
    assert [v.name for v in proto.graph.output] == ["scores", "boxes"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ssdfast.int8_target"] == target and meta["ssdfast.checkpoint_sha256"] == "ab"
    assert meta["ssdfast.class_names"].splitlines() == CLASS_NAMES
    summary = qdq_summary(proto)
    assert summary["quantized_convs"] == summary["convs"] == result.total_convs == result.quantized_convs > 0
    assert has_qdq_nodes(result.path) and not has_qdq_nodes(trained["fp32"])
    # The tail (softmax, box decoding) stays float: dequantized tensors feed convolutions, residual
    # additions and (the CPU file's int8 head outputs) the heads' reshapes only.
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    consumers = {n.op_type for n in proto.graph.node if dequantized & set(n.input)}
    assert consumers == ({"Conv", "Add"} if target == "tensorrt" else {"Conv", "Add", "Reshape", "Transpose"})
    outputs = onnxruntime_session(result.path, threads=1).run(None, {"input_0": np.zeros((2, 3, 96, 96), np.float32)})
    assert [o.shape for o in outputs] == [(2, trained["model"].priors.shape[0], 3),
                                          (2, trained["model"].priors.shape[0], 4)]
    assert all(o.dtype == np.float32 for o in outputs)


def test_tensorrt_file_has_tensorrts_quantization(int8_files):
    """Symmetric int8 everywhere (zero points 0), per-channel weight scales on the output-channel axis with
    the weights in float behind their own Q/DQ pair, no int32 bias, only TensorRT-importable operators."""
    proto = onnx.load(str(int8_files["tensorrt"].path))
    inits, producers = _initializers(proto), _producers(proto)
    assert unsupported_ops(proto) == []
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = inits[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
            assert (inits[node.input[1]] > 0).all()
    for conv in (n for n in proto.graph.node if n.op_type == "Conv"):
        weight_dq = producers[conv.input[1]]
        weight_q = producers[weight_dq.input[0]]
        assert weight_dq.op_type == "DequantizeLinear" and weight_q.op_type == "QuantizeLinear"
        weight = inits[weight_q.input[0]]
        assert weight.dtype == np.float32
        assert inits[weight_q.input[1]].shape == (weight.shape[0],)  # one scale per output channel
        assert {a.name: a.i for a in weight_q.attribute}.get("axis", 1) == 0
        assert producers[conv.input[0]].op_type == "DequantizeLinear"
        assert len(conv.input) < 3 or conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    # TensorRT's placement: Q/DQ on the inputs of convolutions and residual additions only; what runs
    # between them (BatchNorm folded, ReLU / ReLU6) stays float for TensorRT to fuse.
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert {n.op_type for n in proto.graph.node if dequantized & set(n.input)} == {"Conv", "Add"}
    assert any(n.op_type == "Clip" and not dequantized & set(n.input) for n in proto.graph.node)


def test_cpu_file_has_unsigned_activations_and_int8_weights(int8_files):
    """Unsigned activations with zero points, ReLU6 folded into them (every convolution's output is
    quantized once, ready to fuse into an integer convolution), int8 per-channel weights, int32 biases."""
    proto = onnx.load(str(int8_files["cpu"].path))
    inits, producers = _initializers(proto), _producers(proto)
    activation_types = {inits[n.input[2]].dtype for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert activation_types == {np.dtype(np.uint8)}
    clips = [n for n in proto.graph.node if n.op_type == "Clip"]
    assert len(clips) == 1 and producers[clips[0].input[0]].op_type == "Mul"  # only the box decoding's clamp
    quantized = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    for conv in (n for n in proto.graph.node if n.op_type == "Conv"):
        assert conv.output[0] in quantized or "headers" in conv.input[1]  # (see the next test)
        weight_dq = producers[conv.input[1]]
        weight = inits[weight_dq.input[0]]
        assert weight.dtype == np.int8 and inits[weight_dq.input[1]].shape == (weight.shape[0],)
        assert not inits[weight_dq.input[2]].any()  # symmetric weights
        if len(conv.input) > 2:
            assert inits[producers[conv.input[2]].input[0]].dtype == np.int32


def _float_head_outputs(path: Path) -> list[str]:
    proto = onnx.load(str(path))
    quantized = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    heads = [n for n in proto.graph.node if n.op_type == "Conv" and "headers" in n.input[1]]
    assert len(heads) == 12
    return [h.output[0] for h in heads if h.output[0] not in quantized]


def _head_steps(fp32: Path, batches) -> dict[str, float]:
    """Output of each head's last convolution -> (max - min) / 255 of its values on ``batches``."""
    proto = onnx.load(str(fp32))
    heads = [n for n in proto.graph.node if n.op_type == "Conv" and "headers" in n.input[1]]
    for head in heads:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(head.output[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime_session(proto, threads=1)
    outputs = [session.run([h.output[0] for h in heads], {"input_0": b}) for b in batches]
    return {h.output[0]: float(max(o[k].max() for o in outputs) - min(o[k].min() for o in outputs)) / 255
            for k, h in enumerate(heads)}


def test_cpu_file_keeps_the_head_outputs_too_wide_for_int8_float(trained, int8_files, tmp_path):
    """A head output spanning more than 255 x MAX_HEAD_STEP would lose its precision in int8: the tail
    gets it float; the other heads' outputs stay int8 (what ONNX Runtime runs fastest)."""
    batches = calibration_batches(trained["images"], trained["model"].config, 4)
    steps = _head_steps(trained["fp32"], batches)
    floats = _float_head_outputs(int8_files["cpu"].path)
    assert sorted(floats) == sorted(name for name, step in steps.items() if step > MAX_HEAD_STEP)
    assert int8_files["cpu"].float_head_outputs == len(floats) < 12
    assert sorted(_float_head_outputs(int8_files["tensorrt"].path)) == sorted(steps)  # TensorRT's placement
    # Logits of the first head scaled x50: its output is kept float, the others are as they were.
    model = copy.deepcopy(trained["model"])
    wide = [m for m in model.classification_headers[0].modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        wide.weight.mul_(50)
        wide.bias.mul_(50)
    fp32 = export_onnx(model, tmp_path / "wide.onnx", batch_size="dynamic").path
    assert not any("classification_headers.0/" in name for name in floats)
    result = quantize_onnx(fp32, tmp_path / "wide-int8.onnx", batches, target="cpu")
    widened = _float_head_outputs(result.path)
    assert sorted(set(widened) - set(floats)) == [name for name in widened if "classification_headers.0/" in name]
    assert len(widened) == len(floats) + 1 == result.float_head_outputs
    assert result.quantized_convs == result.total_convs  # its convolution still runs on int8 inputs


def _detect(path: Path, trained) -> list:
    model = trained["model"]
    _, x, sizes = prepare_inputs(trained["images"], model.config)
    scores, boxes = (torch.from_numpy(o)
                     for o in onnxruntime_session(path, threads=1).run(None, {"input_0": x.numpy()}))
    loc = ops.encode_boxes(boxes, model.priors, model.config.variances)
    return postprocess(scores.clamp_min(1e-30).log(), loc, model.priors, sizes, model.config.variances, EVALUATION)


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_detections_of_a_trained_model_stay_close_to_fp32(trained, int8_files, target):
    fp32, int8 = _detect(trained["fp32"], trained), _detect(int8_files[target].path, trained)
    maps = [evaluate_voc(d, trained["annotations"], CLASS_NAMES)["mAP"] for d in (fp32, int8)]
    assert maps[0] > 0.5, f"the model did not learn its images (mAP {maps[0]:.3f})"
    assert abs(maps[1] - maps[0]) <= 0.05, maps
    # The confident FP32 detections are found again in INT8: same class, IoU > 0.7, score within 0.15.
    found = total = 0
    for a, b in zip(fp32, int8):
        for box, score, label in zip(a.boxes[a.scores > 0.5], a.scores[a.scores > 0.5], a.labels[a.scores > 0.5]):
            total += 1
            same = b.labels == label
            if same.any():
                iou = ops.box_iou(box[None], b.boxes[same])[0]
                best = int(iou.argmax())
                found += bool(iou[best] > 0.7 and abs(float(b.scores[same][best] - score)) < 0.15)
    assert total >= len(fp32) and found >= 0.9 * total, (found, total)


def test_quantize_refuses_what_it_cannot_quantize(trained, tmp_path):
    batches = calibration_batches(trained["images"][:2], trained["model"].config, 1)
    old = export_onnx(trained["model"], tmp_path / "opset11.onnx", opset=11).path
    with pytest.raises(ValueError, match="opset 13"):
        quantize_onnx(old, tmp_path / "x.onnx", batches)
    with pytest.raises(ValueError, match="at least one image"):
        quantize_onnx(trained["fp32"], tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="target"):
        quantize_onnx(trained["fp32"], tmp_path / "x.onnx", batches, target="tflite")
    done = quantize_onnx(trained["fp32"], tmp_path / "int8.onnx", batches)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_onnx(done.path, tmp_path / "x.onnx", batches)
    assert not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "opset11.onnx"]  # no temporary files left


# ----------------------------------------------------------------------------- ssdfast-export --int8


@pytest.fixture(scope="module")
def checkpoint(trained):
    path = trained["root"] / "run" / "best.pth"
    path.parent.mkdir()
    save_checkpoint(path, trained["model"], CLASS_NAMES)
    return path


def test_export_int8_writes_one_file_per_target(trained, checkpoint, tmp_path, capsys):
    rc = main([str(checkpoint), "-o", str(tmp_path / "ssd.onnx"), "--int8", "--calib-dir",
               str(trained["data"] / "JPEGImages"), "--calib-count", "6"])
    assert rc == 0
    out = capsys.readouterr().out
    assert (sorted(p.name for p in tmp_path.glob("*.onnx"))
            == ["ssd-int8-cpu.onnx", "ssd-int8-tensorrt.onnx", "ssd.onnx"])
    for target, runs_on in (("tensorrt", "TensorRT"), ("cpu", "ONNX Runtime and OpenVINO")):
        path = tmp_path / f"ssd-int8-{target}.onnx"
        line = next(line for line in out.splitlines() if line.startswith(f"wrote {path}"))
        assert runs_on in line and "calibrated on 6 images" in line
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["ssdfast.checkpoint_sha256"] == file_sha256(checkpoint) and meta["ssdfast.int8_target"] == target


def test_export_int8_engine_is_built_from_the_tensorrt_file(trained, checkpoint, tmp_path, capsys):
    rc = main([str(checkpoint), "-o", str(tmp_path / "ssd.onnx"), "--int8", "--calib-dir",
               str(trained["data"] / "JPEGImages"), "--calib-count", "2", "--tensorrt", str(tmp_path / "ssd.engine")])
    assert rc == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["ssd-int8-tensorrt.onnx", "ssd.onnx"]
    # Its scales travel in the Q/DQ file, so trtexec needs no calibration cache.
    command = next(line for line in out.splitlines() if line.strip().startswith("trtexec"))
    assert f"--onnx={tmp_path / 'ssd-int8-tensorrt.onnx'}" in command and "--int8" in command
    assert "--calib" not in command
    info = read_sidecar(tmp_path / "ssd.engine")
    assert info.precision == "int8" and info.onnx_sha256 == file_sha256(tmp_path / "ssd-int8-tensorrt.onnx")


@pytest.mark.parametrize("args,message", [
    (["--int8"], "--int8 needs --calib-dir DIR"),
    (["--int8", "--calib-dir", "{tmp}/nowhere"], "--calib-dir {tmp}/nowhere is not a folder"),
    (["--int8", "--calib-dir", "{tmp}/empty"], "no images found"),
    (["--int8-target", "cpu"], "--int8-target applies to --int8"),
    (["--int8", "--calib-dir", "{tmp}/empty", "--opset", "12"], "--int8 needs --opset 13 or higher"),
    (["--int8", "--calib-dir", "{tmp}/one", "--batch-size", "2"],
     "--calib-dir has 1 images, fewer than one batch of 2"),
])
def test_int8_usage_errors_are_one_line(trained, checkpoint, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.jpg").write_bytes(next((trained["data"] / "JPEGImages").iterdir()).read_bytes())
    args = [a.format(tmp=tmp_path) for a in args]
    assert main([str(checkpoint), "-o", str(tmp_path / "m.onnx"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1, err
    assert not list(tmp_path.glob("*.onnx"))  # refused before anything is written


def test_int8_without_onnxruntime_is_one_line(checkpoint, tmp_path):
    argv = [str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--int8", "--calib-dir", str(tmp_path)]
    code = (f"import sys; sys.modules['onnxruntime'] = None; from ssdfast.cli.export import main; "
            f"sys.exit(main({argv!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --int8 (calibration and quantization) needs the onnxruntime package, "
                                  "which is not installed: pip install onnxruntime")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "m.onnx").exists()
