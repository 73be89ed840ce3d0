"""Label files: the class names of a model or data set, in the three formats in use.

Read (:func:`read_label_file`):

- one name per line with ``BACKGROUND`` first: what jetson-inference's ``detectnet`` reads and what
  ssdfast writes;
- one name per line without ``BACKGROUND``: dusty-nv's pytorch-ssd and CVAT exports;
- one comma-separated line: qfgaohao's pytorch-ssd (``voc-model-labels.txt``).

Written (:func:`write_label_file`): one name per line, ``BACKGROUND`` first.

Every message that counts a model's or a data set's classes says it as :func:`class_count` does:
``14 classes + background`` (a count with the background in it reads as one class too many to a user
who listed 14).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import DataError

__all__ = ["BACKGROUND", "class_count", "read_label_file", "write_label_file"]

BACKGROUND = "BACKGROUND"


def class_count(num_classes: int) -> str:
    """``15`` -> ``"14 classes + background"``: a class count, background included (as models and
    label files count), as every message says it."""
    n = int(num_classes) - 1
    return f"{n} class{'' if n == 1 else 'es'} + background"


def read_label_file(path: str | os.PathLike) -> list[str]:
    """Class names from a label file, ``BACKGROUND`` first (added when the file does not start with it).

    Blank lines and surrounding spaces are ignored. Raises :class:`~ssdfast.errors.DataError` naming the file when
    it cannot be read, is empty or repeats a name.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read label file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{os.fspath(path)}: not a text file (label files are UTF-8 text)") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = [name.strip() for name in lines[0].split(",") if name.strip()]
    if not lines:
        raise DataError(f"{os.fspath(path)}: label file is empty")
    if lines[0].upper() != BACKGROUND:
        lines.insert(0, BACKGROUND)
    else:
        lines[0] = BACKGROUND
    if len(set(lines)) != len(lines):
        dup = sorted({n for n in lines if lines.count(n) > 1})
        raise DataError(f"{os.fspath(path)}: duplicate class names {dup}")
    return lines


def write_label_file(class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write one class name per line, ``BACKGROUND`` first, exactly ``len(class_names)`` lines (atomically).

    A first name other than BACKGROUND (any case) is a ValueError: jetson-inference takes line ``i``
    as the name of class ``i`` and class 0 is the background.
    """
    names = [str(n) for n in class_names]
    if not names or names[0].upper() != BACKGROUND:
        raise ValueError(f"class_names should start with {BACKGROUND}, got {names[:1]}")
    for name in names:
        if "\n" in name or "\r" in name or not name.strip():
            raise ValueError(f"class names should be non-empty single lines, got {name!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    os.replace(tmp, path)
    return path
