"""Label files: the three formats in use read the same classes; what ssdfast writes reads back."""
from __future__ import annotations

import pytest

from ssdfast.errors import DataError
from ssdfast.io import read_label_file, write_label_file

CLASSES = ["BACKGROUND", "apple", "banana split", "orange"]


@pytest.mark.parametrize("text", [
    "BACKGROUND\napple\nbanana split\norange\n",        # detectnet / ssdfast
    "apple\nbanana split\norange\n",                    # dusty-nv pytorch-ssd, CVAT (no BACKGROUND)
    "BACKGROUND,apple,banana split,orange\n",           # qfgaohao pytorch-ssd, one line
    "apple, banana split, orange",                      # one line without BACKGROUND
    "\ufeffbackground\r\napple\r\n\r\nbanana split\r\norange",  # BOM, CRLF, blank line, lower-case
])
def test_formats_read_the_same_classes(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    assert read_label_file(path) == CLASSES


def test_written_file_reads_back_and_is_detectnet_format(tmp_path):
    path = write_label_file(CLASSES, tmp_path / "sub" / "labels.txt")
    assert path.read_text(encoding="utf-8") == "".join(n + "\n" for n in CLASSES)
    assert read_label_file(path) == CLASSES
    assert [p.name for p in path.parent.iterdir()] == ["labels.txt"]  # no temporary file left


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("cat\ndog\ncat\n", "duplicate"),
])
def test_bad_label_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        read_label_file(path)
    assert str(path) in str(info.value)


def test_missing_or_binary_label_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_label_file(tmp_path / "nope.txt")
    binary = tmp_path / "model.pth"
    binary.write_bytes(b"\x80\x02\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not a text file"):
        read_label_file(binary)


def test_write_rejects_names_detectnet_would_misread(tmp_path):
    with pytest.raises(ValueError, match="BACKGROUND"):
        write_label_file(["cat", "dog"], tmp_path / "x.txt")
    with pytest.raises(ValueError, match="single lines"):
        write_label_file(["BACKGROUND", "a\nb"], tmp_path / "x.txt")
