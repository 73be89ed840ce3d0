"""ssdfast-eval end to end on generated VOC and COCO data with a small checkpoint."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdfast.cli.eval import main
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.evaluation import evaluate_voc, to_devkit_boxes
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model

SIZE = 128


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def one_core():
    """ssdfast-eval sizes its threads from the cores it may use (ssdfast.threads.plan_cpu): let it use
    one, as the other tests run on one thread (these tiny models lose a lot to a second thread on a
    busy machine)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-cli")
    voc = generate(root / "voc", format="voc", num_images=10, image_size=SIZE, seed=4, num_classes=3)
    coco = generate(root / "coco", format="coco", num_images=10, image_size=SIZE, seed=5, num_classes=3)
    names = build_dataset("voc", voc, split="test").class_names
    coco_ds = build_dataset("coco", coco, split="test")
    torch.manual_seed(0)
    model = create_model("mb2-ssd-lite", len(names), width_mult=0.25, image_size=SIZE)
    ckpt = root / "model.pth"
    save_checkpoint(ckpt, model, names)
    coco_ckpt = root / "coco.pth"
    save_checkpoint(coco_ckpt, model, coco_ds.class_names, category_ids=coco_ds.category_ids)
    bare = root / "pytorch-ssd.pth"
    torch.save(model.state_dict(), bare)
    labels = root / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    return {"voc": str(voc), "coco": str(coco), "ckpt": str(ckpt), "coco_ckpt": str(coco_ckpt), "bare": str(bare),
            "labels": str(labels), "names": names, "root": root}


def _run(argv, capsys):
    code = main(argv + ["--device", "cpu", "--num-workers", "0", "--batch-size", "2", "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_voc_eval_writes_metrics_and_devkit_files(setup, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    code, out, err = _run(["--trained-model", setup["ckpt"], "--dataset-type", "voc", "--dataset", setup["voc"],
                           "--eval-dir", str(eval_dir)], capsys)
    assert code == 0, err
    for name in setup["names"][1:]:
        assert name in out
    assert "mAP:" in out and "images/s" in out and "VOC2007 11-point" in out
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["metric"] == "voc" and metrics["use_2007_metric"] is True
    assert set(metrics["per_class_AP"]) == set(setup["names"][1:])
    assert f"mAP: {metrics['mAP']:.4f}" in out

    # det_test_<class>.txt: "image_id score xmin ymin xmax ymax", 1-based; scoring them with the
    # devkit's convention against the annotations gives the reported mAP back
    dataset = build_dataset("voc", setup["voc"], split="test")
    anns = [dataset.get_annotation(i) for i in range(len(dataset))]
    index = {a["image_id"]: i for i, a in enumerate(anns)}
    back = [{"boxes": [], "scores": [], "labels": []} for _ in anns]
    lines = 0
    for label, name in enumerate(setup["names"][1:], start=1):
        for line in (eval_dir / f"det_test_{name}.txt").read_text().splitlines():
            image_id, score, *box = line.split()
            assert len(box) == 4
            x1, y1, x2, y2 = map(float, box)
            a = anns[index[image_id]]
            assert 1.0 <= x1 and x2 <= a["width"] and 1.0 <= y1 and y2 <= a["height"]
            b = back[index[image_id]]
            b["boxes"].append([x1, y1, x2, y2]), b["scores"].append(float(score)), b["labels"].append(label)
            lines += 1
    assert lines > 0
    devkit_anns = [dict(a, boxes=to_devkit_boxes(a["boxes"].numpy())) for a in anns]
    again = evaluate_voc(back, devkit_anns, setup["names"], box_convention="devkit")
    assert again["mAP"] == pytest.approx(metrics["mAP"], abs=1e-5)


def test_pytorch_ssd_spellings_and_all_point_metric(setup, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    code, out, err = _run(["--net", "mb2-ssd-lite", "--trained_model", setup["ckpt"], "--dataset_type", "voc",
                           "--dataset", setup["voc"], "--use_2007_metric", "false", "--iou_threshold", "0.4",
                           "--eval_dir", str(eval_dir), "--label_file", setup["labels"]], capsys)
    assert code == 0, err
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["use_2007_metric"] is False and metrics["match_iou"] == 0.4 and "iou_threshold" not in metrics
    assert "VOC2010 all-point" in out


def test_pytorch_ssd_state_dict_with_net_and_labels(setup, capsys):
    code, out, err = _run(["--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25", "--trained-model", setup["bare"],
                           "--dataset-type", "voc", "--dataset", setup["voc"], "--label-file", setup["labels"]], capsys)
    # the bare state dict builds the network at its default 300 px: same weights, still evaluates
    assert code == 0, err
    assert "mAP:" in out
    # without --net the shared loader identifies the network from the file (labels.txt is beside it)
    code, out, err = _run(["--trained-model", setup["bare"], "--dataset", setup["voc"], "--resolution", str(SIZE)],
                          capsys)
    assert code == 0, err
    # a file that holds no network it knows: one line naming the flag that would tell it
    junk = setup["root"] / "junk.pth"
    torch.save({"weight": torch.zeros(3)}, junk)
    code, out, err = _run(["--trained-model", str(junk), "--dataset", setup["voc"]], capsys)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "--net" in err and "--label-file" in err


def test_pytorch_ssd_state_dict_with_labels_txt_beside_it(setup, tmp_path, capsys):
    """jetson-inference's layout: the .pth with a labels.txt (no BACKGROUND line) beside it; the model
    is evaluated as the library evaluates the same file (OpenCV-style resize: config.antialias False)."""
    folder = tmp_path / "jetson"
    folder.mkdir()
    model_file = folder / "ssd-mobilenet.pth"
    model_file.write_bytes(open(setup["bare"], "rb").read())
    (folder / "labels.txt").write_text("\n".join(setup["names"][1:]) + "\n")
    eval_dir = tmp_path / "eval"
    flags = ["--net", "mb2-ssd-lite", "--width-mult", "0.25", "--resolution", str(SIZE)]
    code, out, err = _run(flags + ["--trained-model", str(model_file), "--dataset", setup["voc"],
                                   "--eval-dir", str(eval_dir)], capsys)
    assert code == 0, err
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["model_kind"] == "pytorch-ssd" and metrics["unreadable_images"] == []

    from ssdfast.detector import Detector
    from ssdfast.evaluation import evaluate

    detector = Detector.from_file(model_file, net="mb2-ssd-lite", width_mult=0.25, resolution=SIZE)
    assert detector.config.antialias is False and detector.class_names == setup["names"]
    dataset = build_dataset("voc", setup["voc"], split="test")
    expected = evaluate(detector.model, dataset, batch_size=2, progress=False)["mAP"]
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-9)

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.pth").write_bytes(model_file.read_bytes())
    code, out, err = _run(flags + ["--trained-model", str(alone / "model.pth"), "--dataset", setup["voc"]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--label-file" in err and "labels.txt" in err


def test_coco_eval_matches_pycocotools(setup, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    code, out, err = _run(["--trained-model", setup["coco_ckpt"], "--dataset-type", "coco", "--dataset", setup["coco"],
                           "--eval-dir", str(eval_dir)], capsys)
    assert code == 0, err
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert f"  {name} " in out
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    results = json.loads((eval_dir / "detections.json").read_text())
    assert results and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    dataset = build_dataset("coco", setup["coco"], split="test")
    assert {r["category_id"] for r in results} <= set(dataset.category_ids[1:])
    # pycocotools on the written files gives the reported numbers
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(dataset.annotation_files[0])
        ev = COCOeval(gt, gt.loadRes(str(eval_dir / "detections.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    np.testing.assert_allclose([metrics[n] if metrics[n] is not None else np.nan for n in names], ev.stats, atol=1e-6)
    assert metrics["mAP"] == metrics["AP"]


def test_voc_metric_on_coco_data(setup, capsys):
    code, out, err = _run(["--trained-model", setup["coco_ckpt"], "--dataset-type", "coco", "--dataset", setup["coco"],
                           "--metric", "voc"], capsys)
    assert code == 0, err
    assert "mAP:" in out and "VOC2007" in out


def test_coco_metric_on_voc_data_keeps_voc_image_ids(setup, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    code, out, err = _run(["--trained-model", setup["ckpt"], "--dataset", setup["voc"], "--metric", "coco",
                           "--eval-dir", str(eval_dir)], capsys)
    assert code == 0, err
    assert "AP50" in out
    results = json.loads((eval_dir / "detections.json").read_text())
    dataset = build_dataset("voc", setup["voc"], split="test")
    assert {r["image_id"] for r in results} == {dataset.get_annotation(i)["image_id"] for i in range(len(dataset))}
    assert {r["category_id"] for r in results} <= {1, 2, 3}  # no category ids: the labels


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trained-model", "missing.pth", "--dataset", "."], "no such file"),
        (["--net", "vgg16-ssd", "--trained-model", "{ckpt}", "--dataset", "{voc}"], "holds a mb2-ssd-lite"),
        (["--trained-model", "{ckpt}", "--dataset", "{root}/nowhere"], "no such folder"),
        (["--trained-model", "{ckpt}", "--dataset-type", "coco", "--dataset", "{voc}"], "COCO"),
        (["--trained-model", "{ckpt}", "--dataset", "{voc}", "--device", "cuda:7"], "cuda"),
    ],
)
def test_user_errors_are_one_line(setup, capsys, argv, message):
    argv = [a.format(**{k: v for k, v in setup.items() if isinstance(v, str)}, root=setup["root"]) for a in argv]
    code = main(argv + ["--quiet", "--num-workers", "0"])
    err = capsys.readouterr().err
    if "cuda" in message and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and message in err


def test_bad_flag_values_exit_2(setup, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--trained-model", setup["ckpt"], "--dataset", setup["voc"], "--use-2007-metric", "maybe"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--trained-model", setup["ckpt"], "--dataset", setup["voc"], "--iou-threshold", "1.5"])
    assert exc.value.code == 2


def test_unreadable_and_truncated_images_are_reported(setup, tmp_path, capsys):
    voc = shutil.copytree(setup["voc"], tmp_path / "voc")
    dataset = build_dataset("voc", str(voc), split="test")
    unreadable, truncated = dataset.image_path(0), dataset.image_path(1)
    with open(unreadable, "wb") as f:
        f.write(b"GIF89a broken")
    whole = open(truncated, "rb").read()
    with open(truncated, "wb") as f:
        f.write(whole[:-20])
    eval_dir = tmp_path / "eval"
    # no --quiet: stderr is not a terminal here, so no progress bar and no carriage returns
    code = main(["--trained-model", setup["ckpt"], "--dataset", str(voc), "--eval-dir", str(eval_dir),
                 "--device", "cpu", "--num-workers", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "\r" not in err and "\r" not in out
    assert "1 images could not be read; their objects are scored as missed" in out and f"  {unreadable}\n" in out
    assert "1 images were used with a warning" in out and truncated in out and "truncated" in out
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["unreadable_images"] == [unreadable] and metrics["skipped_images"] == 1
    assert len(metrics["notes"]) == 2 and metrics["num_images"] == 1

    code = main(["--trained-model", setup["ckpt"], "--dataset", str(voc), "--strict", "--device", "cpu",
                 "--num-workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and unreadable in err and "(strict: not scored as missed)" in err
    assert len(err.strip().splitlines()) == 1
