"""What a weight file's contents hold as a state dict: :func:`state_dict_of`, the one unwrapping of
``torch.load``'s result (``{"state_dict": ...}``-style wrappers, an ssdfast checkpoint's ``"model"``,
the ``module.`` / ``_orig_mod.`` prefixes DataParallel and ``torch.compile`` add)."""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

__all__ = ["state_dict_of"]

#: Keys under which files wrap their state dict (an ssdfast checkpoint keeps it under ``"model"``).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
#: Key prefixes of wrapped networks: DistributedDataParallel / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def state_dict_of(contents: Any) -> dict[str, Tensor]:
    """The state dict in a weight file's contents: its tensors by name, unwrapped (see the module doc).

    Raises:
        ValueError: ``contents`` holds no mapping of names to tensors.
    """
    if isinstance(contents, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(contents.get(key), Mapping):
                contents = contents[key]
                break
    if not isinstance(contents, Mapping) or not any(isinstance(v, Tensor) for v in contents.values()):
        raise ValueError("it holds no state dict (names mapped to tensors)")
    out: dict[str, Tensor] = {}
    for key, value in contents.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out
