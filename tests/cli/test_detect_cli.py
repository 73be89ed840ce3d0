"""ssdfast-detect on a folder, globs, odd and truncated images, videos written by PyAV / OpenCV /
Pillow, pytorch-ssd model files, and the error paths.

Video tests of a library skip where it is not installed; "without a video library" is simulated by
making ``import av`` / ``import cv2`` fail (``sys.modules[name] = None``)."""
from __future__ import annotations

import glob
import json
import os
import sys
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from ssdfast.cli.detect import main
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.io import open_video
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model
from tests.io.samples import odd_images

SIZE = 128
# an untrained network gives every class the same probability (1/4 here): 0.2 keeps its boxes
THRESHOLD = "0.2"
FRAMES = 6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect-cli")
    data = generate(root / "voc", format="voc", num_images=8, image_size=SIZE, seed=7, num_classes=3)
    names = build_dataset("voc", data, split="train").class_names
    torch.manual_seed(0)
    model = create_model("mb2-ssd-lite", len(names), width_mult=0.25, image_size=SIZE)
    ckpt = root / "model.pth"
    save_checkpoint(ckpt, model, names)
    bare = root / "pytorch-ssd" / "mb2-ssd-lite-Epoch-9-Loss-2.1.pth"  # what pytorch-ssd's net.save() writes
    bare.parent.mkdir()
    torch.save(model.state_dict(), bare)
    labels = root / "pytorch-ssd" / "labels.txt"
    labels.write_text("\n".join(names[1:]) + "\n")  # dusty-nv's format: no BACKGROUND
    images = sorted(glob.glob(os.path.join(data, "JPEGImages", "*.jpg")))
    frames = [np.asarray(Image.open(p).convert("RGB").resize((96, 72))) for p in images[:FRAMES]]
    gif = root / "clip.gif"
    pil = [Image.fromarray(f) for f in frames[:3]]
    pil[0].save(gif, save_all=True, append_images=pil[1:], duration=200, loop=0)
    return {"ckpt": str(ckpt), "bare": str(bare), "labels": str(labels), "images": images, "frames": frames,
            "folder": os.path.join(data, "JPEGImages"), "gif": str(gif), "names": names, "root": root}


@pytest.fixture
def no_video_library(monkeypatch):
    """As on a machine without OpenCV and PyAV (whatever this one has): their imports fail."""
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "cv2", None)


def _run(argv, capsys):
    code = main(["--device", "cpu", "--num-workers", "0", "--batch-size", "3", "--max-detections", "8"] + argv)
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    return code, records, err


def test_folder_and_globs_write_annotated_images(setup, tmp_path, capsys, no_video_library):
    out_dir = tmp_path / "annotated"
    pattern = os.path.join(setup["folder"], "00000[0-2].jpg")
    code, records, err = _run([setup["ckpt"], setup["folder"], pattern, "--output", str(out_dir),
                               "--threshold", THRESHOLD], capsys)
    assert code == 0, err
    assert [r["file"] for r in records] == setup["images"]  # the glob's files were already in the folder
    for r in records:
        assert set(r) == {"file", "width", "height", "boxes", "scores", "labels", "label_ids"}
        with Image.open(r["file"]) as im:
            assert (r["width"], r["height"]) == im.size
        assert len(r["boxes"]) == len(r["scores"]) == len(r["labels"]) > 0
        assert all(s > 0.2 for s in r["scores"])
        assert set(r["labels"]) <= set(setup["names"][1:])
        assert [setup["names"][i] for i in r["label_ids"]] == r["labels"]
        for x1, y1, x2, y2 in r["boxes"]:
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
        annotated = out_dir / os.path.basename(r["file"])
        with Image.open(annotated) as im, Image.open(r["file"]) as orig:
            assert im.size == orig.size
            assert np.abs(np.asarray(im, np.int16)
                          - np.asarray(orig.convert("RGB"), np.int16)).max() > 100  # boxes drawn
    assert "images/s" in err and "warning" not in err


def test_threshold_and_single_file_output(setup, tmp_path, capsys, no_video_library):
    target = tmp_path / "one.png"
    code, records, err = _run([setup["ckpt"], setup["images"][0], "--output", str(target),
                               "--threshold", "0.9"], capsys)
    assert code == 0, err
    assert len(records) == 1 and records[0]["boxes"] == [] and records[0]["labels"] == []
    assert target.is_file()


def test_top_k_is_candidates_per_class_and_max_detections_the_total(setup, capsys):
    image = setup["images"][1]
    code, records, err = _run([setup["ckpt"], image, "--threshold", THRESHOLD, "--max-detections", "100"], capsys)
    assert code == 0, err
    per_class = Counter(records[0]["labels"])
    assert max(per_class.values()) > 1  # without a per-class cut a class has several boxes here
    code, records, err = _run([setup["ckpt"], image, "--threshold", THRESHOLD, "--top-k", "1",
                               "--max-detections", "100"], capsys)
    assert code == 0 and "warning" not in err
    assert set(Counter(records[0]["labels"]).values()) == {1}  # one candidate per class
    code, records, err = _run([setup["ckpt"], image, "--threshold", THRESHOLD, "--candidates-per-class", "200",
                               "--max-detections", "2"], capsys)
    assert len(records[0]["labels"]) == 2


def test_odd_and_truncated_images(setup, tmp_path, capsys, no_video_library):
    from tests.io.samples import photo_like

    files = odd_images(tmp_path / "odd", photo_like(120, 160, seed=3))
    inputs = [str(path) for path, _ in files.values()]
    code, records, err = _run([setup["ckpt"], *inputs, str(tmp_path / "odd" / "*.jpg"),
                               "--threshold", THRESHOLD], capsys)
    assert code == 1  # the image cut to 5% could not be read; the others were detected in
    by_file = {r["file"]: r for r in records}
    for kind, (path, (width, height)) in files.items():
        if kind == "cut_to_5pct":
            assert str(path) not in by_file
            continue
        r = by_file[str(path)]
        assert (r["width"], r["height"]) == (width, height), kind
        assert r["boxes"], kind
    lines = err.strip().splitlines()
    short, cut = str(files["short_by_20"][0]), str(files["cut_to_5pct"][0])
    # one warning per file, even though the glob names both again
    assert [line for line in lines if short in line] == [f"warning: {short}: truncated image "
                                                         f"(its last pixels may be missing); used as decoded"]
    assert len([line for line in lines if line.startswith("warning:") and cut in line]) == 1
    assert any(line.startswith(f"warning: skipping {cut}: truncated image") for line in lines)
    assert lines[-1] == f"1 inputs could not be read: {cut}"


def test_gif_without_video_library(setup, tmp_path, capsys, no_video_library):
    out_dir = tmp_path / "out"
    code, records, err = _run([setup["ckpt"], setup["gif"], "--output", str(out_dir), "--threshold", THRESHOLD], capsys)
    assert code == 0, err
    assert [r["frame"] for r in records] == list(range(3)) and records[1]["time"] == pytest.approx(0.2)
    assert all((r["width"], r["height"]) == (96, 72) and r["boxes"] for r in records)
    with Image.open(out_dir / "clip.gif") as im:
        assert im.n_frames == 3
    code, records, err = _run([setup["ckpt"], setup["gif"], "--max-frames", "2"], capsys)
    assert code == 0 and [r["frame"] for r in records] == [0, 1]


def _check_annotated_video(path, setup, records, reader_backend):
    with open_video(path, reader_backend) as reader:
        frames = list(reader)
    assert len(frames) == FRAMES and (reader.width, reader.height) == (96, 72) and reader.fps == pytest.approx(10.0)
    drawn = [np.abs(f.pixels.astype(int) - s.astype(int)).max() for f, s in zip(frames, setup["frames"])]
    assert min(drawn) > 100  # boxes drawn on every frame
    assert [r["frame"] for r in records] == list(range(FRAMES)) and records[1]["time"] == pytest.approx(0.1)
    assert all((r["width"], r["height"]) == (96, 72) and r["boxes"] for r in records)


def test_mp4_read_and_written_with_pyav(setup, tmp_path, capsys):
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:  # H.264 in MP4, written by PyAV itself
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
        for f in setup["frames"]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    out_dir = tmp_path / "out"
    code, records, err = _run([setup["ckpt"], str(clip), "--output", str(out_dir), "--threshold", THRESHOLD,
                               "--video-backend", "pyav"], capsys)
    assert code == 0, err
    written = out_dir / "clip.mp4"
    _check_annotated_video(written, setup, records, "opencv" if _has("cv2") else "pyav")
    code, records, err = _run([setup["ckpt"], str(clip), "--max-frames", "4"], capsys)
    assert code == 0 and [r["frame"] for r in records] == [0, 1, 2, 3]


def test_avi_read_and_written_with_opencv(setup, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))  # by OpenCV itself
    for f in setup["frames"]:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    out = tmp_path / "annotated.avi"
    code, records, err = _run([setup["ckpt"], str(clip), "--output", str(out), "--threshold", THRESHOLD,
                               "--video-backend", "opencv"], capsys)
    assert code == 0, err
    _check_annotated_video(out, setup, records, "pyav" if _has("av") else "opencv")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_video_without_video_library_names_the_package(setup, tmp_path, capsys, no_video_library):
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\0\0\0\x18ftypmp42")
    code = main([setup["ckpt"], str(mp4)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "pip install opencv-python" in err and "pip install av" in err
    assert len(err.strip().splitlines()) == 1
    # writing one is refused before any work, too
    code = main([setup["ckpt"], setup["gif"], "--output", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "pip install av" in err
    code = main([setup["ckpt"], setup["gif"], "--video-backend", "pyav"])
    err = capsys.readouterr().err
    assert code == 2 and "--video-backend pyav: not installed (pip install av)" in err


def test_camera_without_opencv(setup, capsys, no_video_library):
    for argv in (["--camera", "0"], ["/dev/video0"], ["v4l2:///dev/video0"]):
        code = main([setup["ckpt"], *argv])
        err = capsys.readouterr().err
        assert code == 2 and "--camera needs OpenCV: pip install opencv-python" in err, argv
    code = main([setup["ckpt"], "csi://0"])
    assert code == 2 and "CSI cameras" in capsys.readouterr().err


def test_pytorch_ssd_model_file(setup, capsys):
    """A pytorch-ssd .pth with --net and its labels, as the checkpoint it came from; also in
    run_ssd_example.py's order (NET MODEL LABELS IMAGE) and with detectnet's --model / --labels."""
    image = setup["images"][2]
    code, expected, err = _run([setup["ckpt"], image, "--threshold", THRESHOLD], capsys)
    assert code == 0, err
    bare, labels = setup["bare"], setup["labels"]
    for argv in (
        [bare, image, "--net", "mb2-ssd-lite", "--mb2-width-mult", "0.25",
         "--resolution", str(SIZE)],  # labels.txt beside
        ["mb2-ssd-lite", bare, labels, image, "--width-mult", "0.25", "--resolution", str(SIZE)],
        ["--model", bare, "--labels", labels, image, "--net", "mb2_ssd_lite", "--mb2_width_mult", "0.25",
         "--resolution", str(SIZE)],
    ):
        code, records, err = _run(argv + ["--threshold", THRESHOLD], capsys)
        assert code == 0, (argv, err)
        assert [r["file"] for r in records] == [image]
        assert records[0]["labels"] == expected[0]["labels"]
        # pytorch-ssd models are fed as pytorch-ssd fed them (plain bilinear resize): close, not equal
        np.testing.assert_allclose(records[0]["boxes"], expected[0]["boxes"], atol=3.0)
    code, records, err = _run([bare, image], capsys)  # no --net: the network is read off the file
    assert code == 0, err
    odd = setup["root"] / "odd.pth"
    torch.save({"backbone.weight": torch.zeros(3, 3)}, odd)  # a state dict of no pytorch-ssd network
    code, records, err = _run([str(odd), image], capsys)
    assert (code == 2 and err.startswith(f"error: MODEL {odd}: ") and "--net" in err
            and len(err.strip().splitlines()) == 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{ckpt}", "nowhere.jpg"], "no such file or folder"),
        (["{ckpt}", "{root}/*.nothing"], "no file matches"),
        (["{root}/missing.pth", "{image}"], "no such model file"),
        (["{ckpt}"], "give images"),
        ([], "give the model file"),
        (["{ckpt}", "{image}", "--threshold", "1.5"], "--threshold"),
        (["{ckpt}", "{image}", "--top-k", "0"], "--top-k"),
        (["{ckpt}", "{image}", "{gif}", "--output", "{root}/x.jpg"], "file exists"),
        (["{image}", "{image}"], "not a torch weights file"),
        (["{root}/model.onnx", "{image}"], "model.onnx: onnxruntime cannot load it"),
    ],
)
def test_user_errors(setup, capsys, argv, message):
    (setup["root"] / "x.jpg").write_bytes(b"")
    (setup["root"] / "model.onnx").write_bytes(b"onnx")
    values = {"ckpt": setup["ckpt"], "root": str(setup["root"]), "image": setup["images"][0], "gif": setup["gif"]}
    code = main([a.format(**values) for a in argv] + ["--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_unreadable_image_is_reported_and_others_go_on(setup, tmp_path, capsys, no_video_library):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    code, records, err = _run([setup["ckpt"], str(bad), setup["images"][1]], capsys)
    assert code == 1
    assert [r["file"] for r in records] == [setup["images"][1]]
    assert "broken.jpg" in err
