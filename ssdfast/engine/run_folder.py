"""The checkpoint folder of a run (``--checkpoint-folder`` / ``--model-dir``): the run's identity,
leftovers of interrupted saves, and a previous run's files.

A folder never mixes two runs. When a new run starts in a folder that holds another run's files
(``best.pth``, ``last.pth``, ``labels.txt``, ``metrics.jsonl``, ``curves.png``, ``train.log``,
``tensorboard/``, pytorch-ssd's ``<net>-Epoch-<n>-Loss-<x>.pth``, and what was exported from them:
``*.onnx``, TensorRT ``*.engine`` with their sidecars), those files move to
``DIR/previous-runs/<time>/``: nothing is deleted, and nothing is left to be taken for this run's
(e.g. an old ``best.pth`` of a better-scoring earlier run, or a stale ``.engine`` that detectnet
would load instead of the new export). Files the run reads (``--resume``, ``--pretrained-ssd``,
``--label-file``, ...) stay where they are.

Every checkpoint carries ``train_state["run_id"]`` (:func:`new_run_id`, kept across ``--resume``), so
tools such as ``ssdfast-export --model-dir`` can tell whether ``best.pth`` and ``last.pth`` belong to
the same run.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..model_files import ModelFile
    from .settings import TrainConfig

__all__ = [
    "PREVIOUS_RUNS",
    "RUN_FILES",
    "RUN_PATTERNS",
    "new_run_id",
    "remove_temp_leftovers",
    "previous_run_files",
    "move_previous_run",
    "prepare_run_folder",
]

PREVIOUS_RUNS = "previous-runs"
#: Files and folders a run writes in its folder.
RUN_FILES = ("best.pth", "last.pth", "labels.txt", "metrics.jsonl", "curves.png", "train.log", "tensorboard")
#: Files of pytorch-ssd runs and exports that belong to the run they came from.
RUN_PATTERNS = ("*-Epoch-*-Loss-*.pth", "*.onnx", "*.engine", "*.engine.json", "*.engine.calib", "*.calib")
# ssdfast.model_files.save_checkpoint writes NAME through a temporary file ".NAME.<random>.tmp" in the same folder
_TEMP_FILE = re.compile(r"\..+\.pth\.[A-Za-z0-9_]+\.tmp")


def new_run_id() -> str:
    """A new run identity: start time and 8 random hex digits, e.g. ``20250101-120000-1a2b3c4d``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def remove_temp_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a killed checkpoint save left in ``folder`` (only names of the
    atomic writer's pattern ``.<name>.pth.<random>.tmp``); returns those removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if path.is_file() and _TEMP_FILE.fullmatch(path.name):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def previous_run_files(folder: str | os.PathLike, keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The files and folders of a run found in ``folder`` (see the module docstring), leaving out
    ``keep`` (files this run reads)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    kept = {_same_file_key(p) for p in keep if p}
    found: dict[str, Path] = {}
    for name in RUN_FILES:
        path = folder / name
        if path.exists():
            found[name] = path
    for pattern in RUN_PATTERNS:
        for path in folder.glob(pattern):
            if path.is_file():
                found[path.name] = path
    return [p for _, p in sorted(found.items()) if _same_file_key(p) not in kept]


def move_previous_run(folder: str | os.PathLike,
                      keep: Iterable[str | os.PathLike] = ()) -> tuple[Path | None, list[str]]:
    """Move a previous run's files out of ``folder`` into ``folder/previous-runs/<time>/``.

    Returns ``(destination, names moved)``; ``(None, [])`` when there was nothing to move.
    """
    files = previous_run_files(folder, keep)
    if not files:
        return None, []
    base = Path(folder) / PREVIOUS_RUNS / time.strftime("%Y%m%d-%H%M%S")
    destination, n = base, 1
    while destination.exists():
        n += 1
        destination = base.with_name(f"{base.name}-{n}")
    destination.mkdir(parents=True)
    moved = []
    for path in files:
        shutil.move(str(path), str(destination / path.name))
        moved.append(path.name + ("/" if (destination / path.name).is_dir() else ""))
    return destination, moved


def prepare_run_folder(folder: Path, config: "TrainConfig", resume: "ModelFile | None") -> list[tuple[int, str]]:
    """Get ``folder`` ready for a run: create it, remove temporary files of killed saves, and move
    another run's files away unless this run continues the one whose files are there. Returns the
    ``(logging level, line)`` to log (the logger is opened after, as ``train.log`` may have moved)."""
    lines: list[tuple[int, str]] = []
    folder.mkdir(parents=True, exist_ok=True)
    removed = remove_temp_leftovers(folder)
    if removed:
        lines.append((logging.INFO, f"Removed {len(removed)} temporary file(s) left by an interrupted checkpoint "
                      "save: " + ", ".join(p.name for p in removed)))
    if not _continues_folder(folder, resume):
        keep = [config.resume, config.pretrained_file, config.base_net, config.label_file, config.validation_dataset,
                *config.datasets]
        destination, moved = move_previous_run(folder, [k for k in keep if k])
        if destination is not None:
            lines.append((logging.WARNING,
                          f"{folder} held another run's files: moved {', '.join(moved)} to {destination}"))
    return lines


def _continues_folder(folder: Path, resume: "ModelFile | None") -> bool:
    """True when the run resumed from ``resume`` is the one whose files are in ``folder``: the file is
    in the folder, or the folder's ``last.pth`` has its run id (or the folder holds no checkpoint)."""
    from ..errors import ModelFileError
    from ..model_files import read_model_file

    if resume is None or not resume.continues_run:
        return False
    if Path(resume.path).resolve().parent == folder.resolve():
        return True
    last = folder / "last.pth"
    if not last.is_file():
        return not any(folder.glob("*.pth"))
    try:
        folder_run = read_model_file(last).run_id  # memory-mapped: its tensors are not read
    except ModelFileError:
        return False
    return folder_run is not None and folder_run == resume.run_id


def _same_file_key(path: str | os.PathLike) -> str:
    try:
        return os.path.realpath(os.fspath(path))
    except OSError:
        return os.path.abspath(os.fspath(path))
