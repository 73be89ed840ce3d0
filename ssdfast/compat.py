"""Old names that keep working: keyword arguments renamed in a release keep their old spelling for a
while, with a :class:`DeprecationWarning` naming the new one.

>>> @renamed_keywords(iou_threshold="nms_iou")
... def detect(images, *, nms_iou=0.45): ...
>>> detect(x, iou_threshold=0.5)      # works, warns: use nms_iou=
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["renamed_keywords"]

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Decorator: each ``old=new`` keyword given under its old name is passed on under its new one,
    with a DeprecationWarning; giving both is a TypeError. The signature shown (``help``,
    ``inspect.signature``) is the new one."""

    def wrap(fn: F) -> F:
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{name}() got both {new}= and its deprecated name {old}=")
                    warnings.warn(f"{name}({old}=...) is deprecated; use {new}= (same meaning)",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
