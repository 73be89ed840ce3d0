"""The op wrappers behind :mod:`ssdfast.ops`: each op checks its arguments here, then runs the
native kernel (``torch.ops.ssdfast.*``, built from ``csrc/``) or its pure-PyTorch twin in
:mod:`ssdfast.ops.reference`.

:func:`backend` says which; the environment variable ``SSDFAST_BACKEND=native|reference`` forces
one. An extension built without a CUDA toolkit has CPU kernels only: CUDA tensors then take the
reference path (which runs on any device), with one warning saying how to build the CUDA kernels (an
error under ``SSDFAST_BACKEND=native``). While a model is being traced for export (``torch.onnx`` /
``torch.jit.trace`` / ``torch.export``) the reference path is used, so exported graphs contain
standard ops only.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Sequence

import torch
from torch import Tensor

from . import reference
from .settings import EVALUATION, check_fraction, check_positive_int

__all__ = [
    "backend",
    "box_iou",
    "encode_boxes",
    "decode_boxes",
    "match_priors",
    "ssd_targets",
    "hard_negative_mask",
    "batched_nms",
    "ssd_postprocess",
]

_BACKEND: str | None = None
_LOAD_ERROR: str | None = None
#: Whether the loaded ssdfast._C has CUDA kernels (its build_info), set when it loads.
_CUDA_KERNELS = False
_CUDA_FALLBACK_WARNED = False

#: How to get the CUDA kernels, for the messages of a build without them.
_CUDA_BUILD_HINT = (
    "reinstall with a CUDA toolkit (nvcc) present: FORCE_CUDA=1 pip install --no-build-isolation -e . "
    "(`python -m ssdfast.check` shows what the extension was built with)"
)


def _load_native() -> bool:
    global _LOAD_ERROR, _CUDA_KERNELS
    try:
        from .. import _C  # importing it registers the kernels
        from . import _meta  # noqa: F401  (fake kernels for torch.compile)
    except (ImportError, OSError) as exc:  # missing or unloadable extension
        _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        return False
    _CUDA_KERNELS = bool(_C.build_info().get("with_cuda"))
    return True


def _wanted_backend() -> str:
    """``SSDFAST_BACKEND``: "" (choose), "native" or "reference"; anything else is a ValueError."""
    wanted = os.environ.get("SSDFAST_BACKEND", "").strip().lower()
    if wanted not in ("", "native", "reference"):
        raise ValueError(f"SSDFAST_BACKEND should be 'native' or 'reference', got {wanted!r}")
    return wanted


def backend() -> str:
    """``"native"`` when the compiled kernels are in use, ``"reference"`` otherwise.

    ``SSDFAST_BACKEND=reference`` forces the pure-PyTorch ops; ``SSDFAST_BACKEND=native`` makes a
    missing or broken extension an error instead of a fallback. A native build without CUDA kernels
    still runs CUDA tensors through the reference (see the module's docstring).
    """
    global _BACKEND
    if _BACKEND is None:
        wanted = _wanted_backend()
        if wanted == "reference":
            _BACKEND = "reference"
        elif _load_native():
            _BACKEND = "native"
        elif wanted == "native":
            raise RuntimeError(
                "SSDFAST_BACKEND=native but the ssdfast._C extension could not be loaded "
                f"({_LOAD_ERROR}); build it with `pip install --no-build-isolation -e .`"
            )
        else:
            warnings.warn(
                f"ssdfast._C could not be loaded ({_LOAD_ERROR}); using the pure-PyTorch reference ops. "
                "Build the extension with `pip install --no-build-isolation -e .`",
                RuntimeWarning,
                stacklevel=2,
            )
            _BACKEND = "reference"
    return _BACKEND


def _tracing() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


def _use_native(t: Tensor) -> bool:
    """Whether an op on ``t``'s device runs the compiled kernel (else the reference)."""
    if backend() != "native" or _tracing():
        return False
    if _CUDA_KERNELS or not t.is_cuda:
        return True
    _warn_no_cuda_kernels()
    return False


def _warn_no_cuda_kernels() -> None:
    """CUDA tensors and an extension without CUDA kernels: one warning per process (the reference runs
    them); a RuntimeError under ``SSDFAST_BACKEND=native``."""
    global _CUDA_FALLBACK_WARNED
    if _CUDA_FALLBACK_WARNED:
        return
    if _wanted_backend() == "native":
        raise RuntimeError(
            "SSDFAST_BACKEND=native but ssdfast._C was built without CUDA kernels, and an op got CUDA "
            f"tensors; {_CUDA_BUILD_HINT}, or unset SSDFAST_BACKEND to run them with the pure-PyTorch ops"
        )
    _CUDA_FALLBACK_WARNED = True
    warnings.warn(
        "ssdfast._C was built without CUDA kernels: ops on CUDA tensors run the pure-PyTorch reference "
        f"(correct, slower). To build the kernels, {_CUDA_BUILD_HINT}",
        RuntimeWarning,
        stacklevel=4,  # the caller of the op (op -> _use_native -> here)
    )


# ----------------------------------------------------------------------------- argument checks


def _check_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_boxes(name: str, t: Tensor, ndim: int | None = None, min_ndim: int = 1) -> None:
    _check_tensor(name, t)
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} should be a {ndim}-D tensor, got {t.dim()}-D with shape {tuple(t.shape)}")
    if t.dim() < min_ndim:
        raise ValueError(f"{name} should have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    if t.shape[-1] != 4:
        raise ValueError(f"{name} should have 4 elements in its last dimension, got {t.shape[-1]}")
    if not t.is_floating_point():
        raise ValueError(f"{name} should be a floating-point tensor (float32/float16/bfloat16), got {t.dtype}")


def _check_finite(name: str, t: Tensor) -> None:
    # A data-dependent check: done on CPU tensors only, where it costs no device synchronisation.
    if t.device.type == "cpu" and t.numel() and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains non-finite values (inf or NaN)")


def _check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors should be on the same device, got {listed}")


def _check_variances(variances: Sequence[float]) -> list[float]:
    v = [float(x) for x in variances]
    if len(v) != 2 or not all(math.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"variances should be two positive numbers, got {tuple(variances)}")
    return v


def _check_priors(priors: Tensor) -> None:
    _check_boxes("priors", priors, ndim=2)


# ----------------------------------------------------------------------------- ops


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``a[N, 4]`` and ``b[M, 4]`` (xyxy) -> ``[N, M]``.

    Same as ``torchvision.ops.box_iou`` on valid boxes; a degenerate box (x2 <= x1 or y2 <= y1) has
    IoU 0 with everything, never NaN.
    """
    _check_boxes("a", a, ndim=2)
    _check_boxes("b", b, ndim=2)
    _check_same_device(a=a, b=b)
    _check_finite("a", a)
    _check_finite("b", b)
    if _use_native(a):
        return torch.ops.ssdfast.box_iou(a, b)
    return reference.box_iou(a, b)


def encode_boxes(boxes: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD regression offsets of ``boxes[..., P, 4]`` (xyxy) relative to ``priors[P, 4]`` (cxcywh).

    ``((cx - pcx) / (pw * v0), (cy - pcy) / (ph * v0), log(w / pw) / v1, log(h / ph) / v1)``, with
    w and h clamped to a small epsilon so the result is always finite.
    """
    _check_boxes("boxes", boxes, min_ndim=2)
    _check_priors(priors)
    _check_same_device(boxes=boxes, priors=priors)
    if boxes.shape[-2] != priors.shape[0]:
        raise ValueError(f"boxes should have P={priors.shape[0]} rows (one per prior), got {boxes.shape[-2]}")
    v = _check_variances(variances)
    if _use_native(boxes):
        return torch.ops.ssdfast.encode_boxes(boxes, priors, v)
    return reference.encode_boxes(boxes, priors, v)


def decode_boxes(loc: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Boxes (xyxy) ``[..., P, 4]`` from SSD offsets ``loc[..., P, 4]`` and ``priors[P, 4]`` (cxcywh).

    The exp argument is clamped to log(1000/16), as in torchvision, so fp16 never overflows.
    """
    _check_boxes("loc", loc, min_ndim=2)
    _check_priors(priors)
    _check_same_device(loc=loc, priors=priors)
    if loc.shape[-2] != priors.shape[0]:
        raise ValueError(f"loc should have P={priors.shape[0]} rows (one per prior), got {loc.shape[-2]}")
    v = _check_variances(variances)
    if _use_native(loc):
        return torch.ops.ssdfast.decode_boxes(loc, priors, v)
    return reference.decode_boxes(loc, priors, v)


def _check_gt(priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> None:
    _check_priors(priors)
    _check_boxes("gt_boxes", gt_boxes, ndim=3)
    _check_tensor("gt_labels", gt_labels)
    if gt_labels.dim() != 2:
        raise ValueError(f"gt_labels should be a 2-D tensor [B, G], got shape {tuple(gt_labels.shape)}")
    if gt_labels.is_floating_point() or gt_labels.dtype == torch.bool or gt_labels.is_complex():
        raise ValueError(f"gt_labels should be an integer tensor, got {gt_labels.dtype}")
    if tuple(gt_labels.shape) != tuple(gt_boxes.shape[:2]):
        raise ValueError(
            f"gt_labels should have shape [B, G] = {tuple(gt_boxes.shape[:2])} to match gt_boxes, "
            f"got {tuple(gt_labels.shape)}"
        )
    _check_same_device(priors=priors, gt_boxes=gt_boxes, gt_labels=gt_labels)
    _check_finite("gt_boxes", gt_boxes)
    _check_finite("priors", priors)


def match_priors(
    priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Assign each prior a ground-truth box and label, for a padded batch.

    Args:
        priors: ``[P, 4]`` cxcywh, normalized.
        gt_boxes: ``[B, G, 4]`` xyxy, normalized; rows whose label is < 0 are padding.
        gt_labels: ``[B, G]`` integer; foreground labels are 1..C-1, -1 pads.
        iou_threshold: a prior whose best IoU is below this (and that was not forced) is background.

    Returns:
        ``labels[B, P]`` int64 (0 = background) and ``boxes[B, P, 4]`` xyxy, the gt each prior was
        assigned (zeros in an image without gts).

    Each prior takes its highest-IoU gt (tie: lowest gt index). Then each gt's highest-IoU prior
    (tie: lowest prior index) is forced to that gt, a later gt winning a prior two gts chose; a gt
    that overlaps no prior at all (IoU 0 everywhere, e.g. a degenerate box) forces nothing.
    """
    _check_gt(priors, gt_boxes, gt_labels)
    t = check_fraction("iou_threshold", iou_threshold)
    if _use_native(priors):
        return torch.ops.ssdfast.match_priors(priors, gt_boxes, gt_labels, t)
    return reference.match_priors(priors, gt_boxes, gt_labels, t)


def ssd_targets(
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = (0.1, 0.2),
) -> tuple[Tensor, Tensor]:
    """``match_priors`` fused with ``encode_boxes``: ``(labels[B, P] int64, loc[B, P, 4])``.

    What ``MultiBoxLoss`` consumes; arguments as in :func:`match_priors`.
    """
    _check_gt(priors, gt_boxes, gt_labels)
    t = check_fraction("iou_threshold", iou_threshold)
    v = _check_variances(variances)
    if _use_native(priors):
        return torch.ops.ssdfast.ssd_targets(priors, gt_boxes, gt_labels, t, v)
    return reference.ssd_targets(priors, gt_boxes, gt_labels, t, v)


def hard_negative_mask(neg_loss: Tensor, labels: Tensor, neg_pos_ratio: int = 3) -> Tensor:
    """Hard negative mining: which priors contribute to the classification loss.

    Args:
        neg_loss: ``[B, P]`` the background loss of each prior (e.g. ``-log_softmax(conf)[..., 0]``).
        labels: ``[B, P]`` integer; > 0 positive, 0 negative, < 0 ignored (never selected).
        neg_pos_ratio: negatives kept per positive.

    Returns:
        ``bool[B, P]``: all positives, plus per image the ``min(ratio * num_pos, num_neg)`` negatives
        with the largest ``neg_loss`` (tie: lower index).
    """
    _check_tensor("neg_loss", neg_loss)
    _check_tensor("labels", labels)
    if neg_loss.dim() != 2:
        raise ValueError(f"neg_loss should be a 2-D tensor [B, P], got shape {tuple(neg_loss.shape)}")
    if not neg_loss.is_floating_point():
        raise ValueError(f"neg_loss should be a floating-point tensor, got {neg_loss.dtype}")
    if tuple(labels.shape) != tuple(neg_loss.shape):
        raise ValueError(f"labels should have the shape of neg_loss {tuple(neg_loss.shape)}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels should be an integer tensor, got {labels.dtype}")
    _check_same_device(neg_loss=neg_loss, labels=labels)
    if isinstance(neg_pos_ratio, bool) or int(neg_pos_ratio) != neg_pos_ratio or neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio should be a non-negative integer, got {neg_pos_ratio}")
    if _use_native(neg_loss):
        return torch.ops.ssdfast.hard_negative_mask(neg_loss, labels, int(neg_pos_ratio))
    return reference.hard_negative_mask(neg_loss, labels, int(neg_pos_ratio))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each category, as ``torchvision.ops.batched_nms``.

    Args:
        boxes: ``[N, 4]`` xyxy.  scores: ``[N]``.  idxs: ``[N]`` integer category of each box.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box of the same
            category is greater than this.

    Returns:
        ``keep[K]`` int64 indices, by descending score (tie: lower index first).

    On CUDA the op waits for the GPU twice: for the size of its IoU bitmask, which is allocated per
    category (memory grows with the largest category, not with N), and for K.
    """
    _check_boxes("boxes", boxes, ndim=2)
    _check_tensor("scores", scores)
    _check_tensor("idxs", idxs)
    n = boxes.shape[0]
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"scores should be a 1-D tensor of N={n} elements, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores should be a floating-point tensor, got {scores.dtype}")
    if idxs.dim() != 1 or idxs.shape[0] != n:
        raise ValueError(f"idxs should be a 1-D tensor of N={n} elements, got shape {tuple(idxs.shape)}")
    if idxs.is_floating_point() or idxs.is_complex():
        raise ValueError(f"idxs should be an integer tensor, got {idxs.dtype}")
    _check_same_device(boxes=boxes, scores=scores, idxs=idxs)
    _check_finite("boxes", boxes)
    t = check_fraction("iou_threshold", iou_threshold)
    if _use_native(boxes):
        return torch.ops.ssdfast.batched_nms(boxes, scores, idxs, t)
    return reference.batched_nms(boxes, scores, idxs, t)


def ssd_postprocess(
    loc: Tensor,
    scores: Tensor,
    priors: Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    score_threshold: float = EVALUATION.score_threshold,
    iou_threshold: float = EVALUATION.iou_threshold,
    top_k: int = EVALUATION.top_k,
    max_detections: int = EVALUATION.max_detections,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The SSD inference tail in one op, with fixed-size outputs (as TensorRT's EfficientNMS).

    Args:
        loc: ``[B, P, 4]`` regression offsets.  scores: ``[B, P, C]`` class probabilities (softmax is
            the caller's), class 0 = background.  priors: ``[P, 4]`` cxcywh.
        score_threshold: candidates need a score greater than this.
        iou_threshold: NMS threshold within a class.
        top_k: candidates kept per class before NMS.  max_detections: kept per image after merging.
        (The four as one value: :class:`ssdfast.ops.PostprocessSettings`; the defaults are its
        ``EVALUATION`` preset.)

    Returns:
        ``boxes[B, K, 4]`` (normalized xyxy), ``scores[B, K]``, ``labels[B, K]`` int64 and
        ``num_detections[B]`` int64, with ``K = max_detections``, sorted by descending score (tie:
        lower class, then lower prior index) and padded with zeros.
    """
    _check_boxes("loc", loc, ndim=3)
    _check_tensor("scores", scores)
    _check_priors(priors)
    if scores.dim() != 3:
        raise ValueError(f"scores should be a 3-D tensor [B, P, C], got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores should be a floating-point tensor, got {scores.dtype}")
    if tuple(scores.shape[:2]) != tuple(loc.shape[:2]):
        raise ValueError(f"scores should have [B, P] = {tuple(loc.shape[:2])} to match loc, "
                         f"got {tuple(scores.shape[:2])}")
    if loc.shape[1] != priors.shape[0]:
        raise ValueError(f"loc should have P={priors.shape[0]} rows (one per prior), got {loc.shape[1]}")
    _check_same_device(loc=loc, scores=scores, priors=priors)
    v = _check_variances(variances)
    st = check_fraction("score_threshold", score_threshold)
    it = check_fraction("iou_threshold", iou_threshold)
    k = check_positive_int("top_k", top_k)
    kept = check_positive_int("max_detections", max_detections)
    if _use_native(loc):
        return torch.ops.ssdfast.ssd_postprocess(loc, scores, priors, v, st, it, k, kept)
    return reference.ssd_postprocess(loc, scores, priors, v, st, it, k, kept)
