"""Which device a command runs on: ``--device`` and pytorch-ssd's ``--use-cuda``, resolved once."""
from __future__ import annotations

import torch

from .errors import SettingsError

__all__ = ["resolve_device"]


def resolve_device(device: str | None, use_cuda: bool | None = None) -> torch.device:
    """``--device`` (auto, cpu, cuda, cuda:1) and pytorch-ssd's ``--use-cuda`` -> a torch.device.

    ``auto`` (or nothing) picks CUDA when available (CPU with ``use_cuda=False``). A string that is no
    device, or CUDA asked for on a machine without it, is a :class:`~ssdfast.errors.SettingsError`
    naming ``--device``.
    """
    if device in (None, "", "auto"):
        if use_cuda is False:
            return torch.device("cpu")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SettingsError(f"--device {device}: not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {device}: no CUDA device is available on this machine")
    return dev
