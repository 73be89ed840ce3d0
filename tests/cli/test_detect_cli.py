"""ssdfast-detect on a folder, globs, a generated video (MJPEG .avi, GIF) and the error paths."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import ssdfast.cli.detect as detect
from ssdfast.cli.detect import _MjpegAviReader, _MjpegAviWriter, main
from ssdfast.data import build_dataset
from ssdfast.data.synthetic import generate
from ssdfast.checkpoint import save_checkpoint
from ssdfast.models import create_model

SIZE = 128
# an untrained network gives every class the same probability (1/4 here): 0.2 keeps its boxes
THRESHOLD = "0.2"


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
    images = sorted(glob.glob(os.path.join(data, "JPEGImages", "*.jpg")))
    frames = [np.asarray(Image.open(p).convert("RGB").resize((96, 72))) for p in images[:6]]
    video = root / "clip.avi"
    writer = _MjpegAviWriter(str(video), 10.0, 96, 72)
    for f in frames:
        writer.write(f)
    writer.close()
    gif = root / "clip.gif"
    pil = [Image.fromarray(f) for f in frames[:3]]
    pil[0].save(gif, save_all=True, append_images=pil[1:], duration=200, loop=0)
    return {"ckpt": str(ckpt), "images": images, "folder": os.path.join(data, "JPEGImages"), "video": str(video),
            "gif": str(gif), "names": names, "root": root}


@pytest.fixture
def no_video_library(monkeypatch):
    """As on a machine without OpenCV and PyAV (whatever this one has)."""
    monkeypatch.setattr(detect, "_cv2", lambda: None)
    monkeypatch.setattr(detect, "_av", lambda: None)


def _run(argv, capsys):
    code = detect.main(argv + ["--device", "cpu", "--num-workers", "0", "--batch-size", "3", "--max-detections", "8"])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    return code, records, err


def test_folder_and_globs_write_annotated_images(setup, tmp_path, capsys, no_video_library):
    out_dir = tmp_path / "annotated"
    pattern = os.path.join(setup["folder"], "00000[0-2].jpg")
    code, records, err = _run([setup["ckpt"], setup["folder"], pattern, "--output", str(out_dir), "--threshold", THRESHOLD],
                              capsys)
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
            assert np.abs(np.asarray(im, np.int16) - np.asarray(orig.convert("RGB"), np.int16)).max() > 100  # boxes drawn
    assert "images/s" in err


def test_threshold_and_single_file_output(setup, tmp_path, capsys, no_video_library):
    target = tmp_path / "one.png"
    code, records, err = _run([setup["ckpt"], setup["images"][0], "--output", str(target), "--threshold", "0.9"], capsys)
    assert code == 0, err
    assert len(records) == 1 and records[0]["boxes"] == [] and records[0]["labels"] == []
    assert target.is_file()


def test_generated_video_without_video_library(setup, tmp_path, capsys, no_video_library):
    out_dir = tmp_path / "out"
    code, records, err = _run([setup["ckpt"], setup["video"], setup["gif"], "--output", str(out_dir),
                               "--threshold", THRESHOLD], capsys)
    assert code == 0, err
    avi = [r for r in records if r["file"] == setup["video"]]
    gif = [r for r in records if r["file"] == setup["gif"]]
    assert [r["frame"] for r in avi] == list(range(6)) and [r["frame"] for r in gif] == list(range(3))
    assert avi[1]["time"] == pytest.approx(0.1) and gif[1]["time"] == pytest.approx(0.2)
    assert all((r["width"], r["height"]) == (96, 72) and r["boxes"] for r in avi)
    reader = _MjpegAviReader(str(out_dir / "clip.avi"))
    frames = list(reader)
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (72, 96, 3) and reader.fps == pytest.approx(10.0)
    with Image.open(out_dir / "clip.gif") as im:
        assert im.n_frames == 3
    # --max-frames stops early
    code, records, err = _run([setup["ckpt"], setup["video"], "--max-frames", "4"], capsys)
    assert code == 0 and [r["frame"] for r in records] == [0, 1, 2, 3]


def test_avi_roundtrip_and_other_codecs(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (30, 41, 3), dtype=np.uint8) for i in range(3)]
    frames = [np.kron(f[::6, ::6], np.ones((6, 6, 1), np.uint8))[:30, :41] for f in frames]  # JPEG-friendly blocks
    path = tmp_path / "v.avi"
    w = _MjpegAviWriter(str(path), 29.97, 41, 30)
    for f in frames:
        w.write(f)
    w.close()
    r = _MjpegAviReader(str(path))
    got = list(r)
    r.close()
    assert (r.width, r.height, r.frame_count) == (41, 30, 3) and r.fps == pytest.approx(29.97)
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() < 12 for a, b in zip(got, frames))
    # an AVI of another codec: a clear message naming the package to install
    data = bytearray(path.read_bytes())
    at = data.rindex(b"MJPG", 0, 224)  # the stream format's compression
    data[at: at + 4] = b"XVID"
    (tmp_path / "x.avi").write_bytes(bytes(data))
    with pytest.raises(detect._VideoError, match="pip install opencv-python"):
        _MjpegAviReader(str(tmp_path / "x.avi"))


def test_mp4_without_video_library_names_the_package(setup, tmp_path, capsys, no_video_library):
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\0\0\0\x18ftypmp42")
    code = main([setup["ckpt"], str(mp4)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "pip install opencv-python" in err
    assert len(err.strip().splitlines()) == 1
    # writing one is refused before any work, too
    code = main([setup["ckpt"], setup["video"], "--output", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "pip install av" in err


def test_camera_without_opencv(setup, capsys, no_video_library):
    code = main([setup["ckpt"], "--camera", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--camera needs OpenCV: pip install opencv-python" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{ckpt}", "nowhere.jpg"], "no such file or folder"),
        (["{ckpt}", "{root}/*.nothing"], "no file matches"),
        (["{root}/missing.pth", "{image}"], "no such checkpoint"),
        (["{ckpt}"], "give images"),
        (["{ckpt}", "{image}", "--threshold", "1.5"], "--threshold"),
        (["{ckpt}", "{image}", "{video}", "--output", "{root}/x.jpg"], "file exists"),
        (["{image}", "{image}"], "cannot read checkpoint"),
    ],
)
def test_user_errors(setup, capsys, argv, message):
    (setup["root"] / "x.jpg").write_bytes(b"")
    values = {"ckpt": setup["ckpt"], "root": str(setup["root"]), "image": setup["images"][0], "video": setup["video"]}
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
