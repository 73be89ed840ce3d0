"""ssdfast-data: synthetic and validate from the command line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssdfast.cli.data import main


def _truncate(path: Path, keep: float = 0.05) -> None:
    """Cut an image file to ``keep`` of its bytes: at 5% too little of it is left to use (a problem);
    a JPEG cut in half still decodes, half its rows grey (a warning)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_synthetic_then_validate(tmp_path, capsys):
    out = tmp_path / "voc"
    assert main(["synthetic", "--out", str(out), "--format", "voc", "--num-images", "10", "--image-size", "96",
                 "--seed", "1"]) == 0
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 10
    assert main(["validate", str(out), "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out

    jpeg = sorted((out / "JPEGImages").glob("*.jpg"))[4]
    xml = sorted((out / "Annotations").glob("*.xml"))[7]
    _truncate(jpeg)
    xml.write_text("<annotation><object>")
    assert main(["validate", str(out), "--workers", "2", "--no-progress"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{jpeg}: ") and "truncated" in line for line in lines)
    assert any(line.startswith(f"{xml}: ") and "unparsable XML" in line for line in lines)
    assert "2 problems" in lines[-1]


@pytest.mark.parametrize("fmt, marker", [("coco", "annotations/instances_train2017.json"),
                                         ("open_images", "sub-train-annotations-bbox.csv")])
def test_other_formats_and_underscore_spellings(tmp_path, fmt, marker, capsys):
    out = tmp_path / fmt
    argv = ["synthetic", "--out", str(out), "--format", fmt, "--num_images", "8", "--image_size", "64",
            "--num_classes", "3"]
    assert main(argv) == 0
    assert (out / marker).is_file()
    assert main(["validate", str(out), "--dataset_type", fmt, "--no_progress"]) == 0
    assert "OK" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2  # empty folder: not a dataset
    assert "not a VOC" in capsys.readouterr().err
    assert main(["synthetic", "--out", str(tmp_path / "x"), "--num-classes", "40"]) == 2
    assert "--num-classes should be between 1 and" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: unknown format
        main(["synthetic", "--out", str(tmp_path / "x"), "--format", "yolo"])
    assert exc.value.code == 2


def test_module_entry_point_exit_code(tmp_path):
    out = tmp_path / "voc"
    main(["synthetic", "--out", str(out), "--num-images", "4", "--image-size", "64"])
    _truncate(next((out / "JPEGImages").glob("*.jpg")))
    proc = subprocess.run([sys.executable, "-m", "ssdfast.cli.data", "validate", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "truncated" in proc.stdout


def test_truncated_but_decodable_image_is_a_warning(tmp_path, capsys):
    out = tmp_path / "voc"
    assert main(["synthetic", "--out", str(out), "--num-images", "6", "--image-size", "96", "--seed", "2"]) == 0
    capsys.readouterr()
    jpeg = sorted((out / "JPEGImages").glob("*.jpg"))[3]
    _truncate(jpeg, keep=0.99)  # a few bytes short, its end marker gone: every tool reads it
    assert main(["validate", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"warning: {jpeg}: truncated image (its last pixels may be missing); used as decoded"
    assert lines[-1].endswith(": OK, 1 warning")
    assert main(["validate", str(out), "--no-progress", "--strict"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{jpeg}: truncated image") and lines[-1].endswith(": 1 problem")


def test_coco_official_layout(tmp_path, capsys):
    """``synthetic --format coco`` writes COCO's own layout; validate takes the root or one image folder."""
    out = tmp_path / "coco"
    assert main(["synthetic", "--out", str(out), "--format", "coco", "--num-images", "10", "--image-size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "train2017", "val2017"]
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["instances_train2017.json",
                                                                       "instances_val2017.json"]
    capsys.readouterr()
    assert main(["validate", str(out / "val2017"), "--no-progress"]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert (summary.startswith(f"{out / 'val2017'} (coco): checked 2 images, 1 annotation files")
            and summary.endswith("OK"))
    assert main(["validate", str(out), str(out / "train2017"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "checked 10 images, 2 annotation files" in lines[0] and "checked 8 images, 1 annotation files" in lines[1]


def test_a_bad_label_file_is_a_problem_of_that_file(tmp_path, capsys):
    out = tmp_path / "voc"
    assert main(["synthetic", "--out", str(out), "--format", "voc", "--num-images", "4", "--image-size", "64"]) == 0
    capsys.readouterr()
    labels = tmp_path / "dup.txt"
    labels.write_text("BACKGROUND\ncat\ncat\n")
    assert main(["validate", str(out), "--label-file", str(labels), "--no-progress"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{labels}: duplicate class names ['cat']" in lines and "1 problem" in lines[-1]


def test_a_file_error_escaping_a_command_is_one_line(capsys):
    from ssdfast.cli._common import run_main
    from ssdfast.errors import DataError

    def body(argv):
        raise DataError("x.jpg: not an image\n(decoder detail)")

    assert run_main(body, []) == 2
    assert capsys.readouterr().err == "error: x.jpg: not an image (decoder detail)\n"
    with pytest.raises(ValueError):  # anything else is a bug and keeps its traceback
        run_main(lambda argv: int("x"), [])
