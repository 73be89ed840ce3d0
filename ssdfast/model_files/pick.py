"""Which model file of a training folder to use (``ssdfast-export --model-dir DIR``), and why.

A training folder holds either ssdfast's checkpoints or pytorch-ssd's, sometimes both when a folder
is reused; the file picked must be the latest run's model, never a stale one:

- ssdfast (``best.pth`` / ``last.pth``, written by ``ssdfast-train``): ``best.pth`` when it belongs
  to the run ``last.pth`` ends, else ``last.pth``. Same run: both checkpoints carry
  ``train_state["run_id"]`` and the ids are equal. A checkpoint without a run id (written before
  ssdfast recorded runs, or resumed from one) counts as the same run only when ``best.pth``'s
  training history (the per-epoch records in ``train_state["metrics"]["history"]``) is the start of
  ``last.pth``'s and its step is not later: a new run in the same folder starts a new history. When
  nothing proves it, ``last.pth`` (possibly less accurate, never from another run).
- pytorch-ssd (``<net>-Epoch-<e>-Loss-<loss>.pth``, written by its ``train_ssd.py``): the one its
  ``onnx_export.py`` picks, the lowest loss read from the name (the text after the last ``-``,
  below 10000); ties go to the first name in sorted order.
- both kinds in one folder: the kind whose newest file is the more recent (a folder reused by the
  other trainer).
- neither: the most recently modified ``.pth``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from .read import read_model_file

__all__ = ["ModelChoice", "pick_model_file", "pytorch_ssd_loss"]

#: onnx_export.py starts its search from this loss: a file named with a larger one is never picked.
_PYTORCH_SSD_MAX_LOSS = 10000.0


@dataclass(frozen=True)
class ModelChoice:
    """The file picked in a training folder: ``path``, ``kind`` (``"ssdfast"``, ``"pytorch-ssd"`` or
    ``"other"``) and ``reason``, one line saying why this file."""

    path: Path
    kind: str
    reason: str


def pytorch_ssd_loss(name: str) -> float | None:
    """The loss pytorch-ssd's ``onnx_export.py`` reads from a checkpoint's file name, or None.

    ``mb1-ssd-Epoch-29-Loss-2.2.pth`` -> 2.2: the text between the last ``-`` and ``.pth`` as a
    number, when it is one below 10000 (``best.pth``, ``last.pth``: None).
    """
    if not name.endswith(".pth"):
        return None
    try:
        loss = float(name[name.rfind("-") + 1:-4])
    except ValueError:
        return None
    return loss if loss < _PYTORCH_SSD_MAX_LOSS else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _pytorch_ssd_choice(folder: Path) -> tuple[ModelChoice, float] | None:
    """The lowest-loss pytorch-ssd checkpoint, and the newest mtime among them."""
    found = []
    for entry in sorted(folder.iterdir()):
        loss = pytorch_ssd_loss(entry.name)
        if loss is not None and entry.is_file():
            found.append((loss, entry.name, entry))
    if not found:
        return None
    loss, _, path = min(found)
    reason = (f"the lowest loss ({loss:g}) of the {len(found)} pytorch-ssd checkpoint(s) named "
              "NET-Epoch-N-Loss-L.pth, as pytorch-ssd's onnx_export.py picks")
    return ModelChoice(path, "pytorch-ssd", reason), max(_mtime(f) for _, _, f in found)


def _train_state(path: Path) -> dict[str, Any]:
    state = read_model_file(path).ssdfast_checkpoint().get("train_state")  # memory-mapped: no weight is read
    return state if isinstance(state, dict) else {}


def _history(state: dict[str, Any]) -> list[Any]:
    metrics = state.get("metrics")
    history = metrics.get("history") if isinstance(metrics, dict) else None
    return list(history) if isinstance(history, (list, tuple)) else []


def _best_map(state: dict[str, Any]) -> str:
    metrics = state.get("metrics")
    value = metrics.get("best_map") if isinstance(metrics, dict) else None
    return f", validation mAP {value:.4g}" if isinstance(value, (int, float)) else ""


def _same_run(best: dict[str, Any], last: dict[str, Any]) -> tuple[bool, str]:
    """Whether best.pth's and last.pth's train states are of one run, and how that was decided."""
    best_id, last_id = best.get("run_id"), last.get("run_id")
    if best_id and last_id:
        if best_id == last_id:
            return True, f"best.pth is the best model of the run last.pth ends (run {last_id}{_best_map(best)})"
        return False, (f"best.pth is from another run (run {best_id}) than last.pth (run {last_id}): "
                       "the latest run's model")
    best_history, last_history = _history(best), _history(last)
    best_step, last_step = best.get("step"), last.get("step")
    steps_ok = isinstance(best_step, int) and isinstance(last_step, int) and best_step <= last_step
    if best_history and steps_ok and last_history[:len(best_history)] == best_history:
        return True, (f"best.pth is the best model of the run last.pth ends (no run id recorded; its "
                      f"{len(best_history)} epoch record(s) begin last.pth's{_best_map(best)})")
    return False, ("nothing shows best.pth is of the run last.pth ends (no common run id, and its epoch "
                   "records are not the start of last.pth's): the latest run's model")


def _ssdfast_choice(folder: Path, flag: str | None) -> tuple[ModelChoice, float] | None:
    best, last = folder / "best.pth", folder / "last.pth"
    have_best, have_last = best.is_file(), last.is_file()
    if not (have_best or have_last):
        return None
    newest = max(_mtime(p) for p in (best, last) if p.is_file())
    if not have_best:
        return ModelChoice(last, "ssdfast",
                           "last.pth, the end of the latest run (no best.pth: no validation result yet)"), newest
    if not have_last:
        return ModelChoice(best, "ssdfast", "best.pth (no last.pth beside it)"), newest
    try:
        last_state = _train_state(last)
    except ModelFileError as exc:
        raise ModelFileError.about(folder, f"cannot tell whether best.pth is of the latest run: {exc}",
                                   flag) from None
    try:
        best_state = _train_state(best)
    except ModelFileError:
        return ModelChoice(last, "ssdfast", "last.pth (best.pth does not read as an ssdfast checkpoint)"), newest
    same, why = _same_run(best_state, last_state)
    return ModelChoice(best if same else last, "ssdfast", f"{'best' if same else 'last'}.pth: {why}"), newest


def pick_model_file(folder: str | os.PathLike, *, flag: str | None = None) -> ModelChoice:
    """The model file to export from a training folder (rules in the module docstring).

    Raises:
        ModelFileError (naming the folder, and ``flag`` when given): ``folder`` is not a folder,
            holds no ``.pth`` file, or its ``last.pth`` cannot be read to tell which run ``best.pth``
            belongs to.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError.about(folder, "not a folder", flag)
    ssdfast = _ssdfast_choice(folder, flag)
    pytorch_ssd = _pytorch_ssd_choice(folder)
    if ssdfast and pytorch_ssd:
        (s_choice, s_time), (p_choice, p_time) = ssdfast, pytorch_ssd
        if p_time > s_time:
            return ModelChoice(p_choice.path, p_choice.kind,
                               p_choice.reason + "; they are newer than ssdfast's best.pth / last.pth here")
        return ModelChoice(s_choice.path, s_choice.kind,
                           s_choice.reason + "; newer than the pytorch-ssd checkpoints here")
    if ssdfast or pytorch_ssd:
        return (ssdfast or pytorch_ssd)[0]
    others = sorted((f for f in folder.glob("*.pth") if f.is_file()), key=lambda f: (_mtime(f), f.name))
    if others:
        return ModelChoice(others[-1], "other", "the most recently modified .pth here (no best.pth / last.pth, "
                                                "no pytorch-ssd NET-Epoch-N-Loss-L.pth)")
    raise ModelFileError.about(folder, "no model file in it: no best.pth / last.pth (ssdfast-train), no "
                               "NET-Epoch-N-Loss-L.pth (pytorch-ssd's train_ssd.py), no other .pth", flag)
