"""Inference copies of networks: BatchNorm folded into the convs, channels_last, eval, no grad.

>>> from ssdfast.models.fuse import inference_model
>>> fast = inference_model(model)              # a new module; ``model`` itself is not changed
>>> confidences, locations = fast(batch.contiguous(memory_format=torch.channels_last))

Why: in eval mode a BatchNorm is a per-channel affine map, a whole extra pass over every feature
map; folded into the preceding convolution it costs nothing. In channels_last, CPU convolutions
run oneDNN's kernels without a layout conversion each (and channels_last is the fast layout for
CUDA convolutions too). And PyTorch's own choice of CPU kernel sends 1x1 convolutions with one
thread and batches under 16, and 3x3 ones on small inputs, to an im2col + BLAS path ~2x slower
than oneDNN on this project's CPUs: on CPU the copy's convolutions always run oneDNN, except on
tiny maps (see :class:`_OneDNNConv2d`). With one thread, mb3-large-ssd-lite's network runs ~2x
faster than the model itself, at batch 1 and 8.

Folding is generic: any ``nn.Conv2d`` directly followed by a ``BatchNorm2d`` (or torchvision's
``FrozenBatchNorm2d``) inside an ``nn.Sequential`` — torchvision's ``Conv2dNormActivation`` blocks,
pytorch-ssd's ``Sequential(conv, bn, relu)`` stages, the SSD-Lite heads — is folded, and the
BatchNorm is replaced by ``nn.Identity`` so that every index of the Sequential is kept (an
:class:`~ssdfast.models.SSD` reaches into its base net by index). A pair is left alone when the
conv's output is itself a feature map the SSD takes (its ``sources``), since folding would change
that map. Convs in other containers (``ModuleList``, custom modules) are never folded: there the
order of the children says nothing about the order of the computation.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["fold_batchnorm", "inference_model"]

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)

#: Below this many output pixels (batch x height x width) a convolution keeps PyTorch's choice:
#: oneDNN's fixed cost per call (~40 us) outweighs its faster arithmetic on 1x1 / 3x3 maps.
_ONEDNN_MIN_PIXELS = 64


class _OneDNNConv2d(nn.Conv2d):
    """A ``Conv2d`` that calls oneDNN's convolution (``aten::mkldnn_convolution``, what
    ``F.conv2d`` itself picks for most CPU convolutions) for float32 CPU inputs of at least
    ``_ONEDNN_MIN_PIXELS`` output pixels. Same parameters, state dict and results (up to float
    rounding) as ``nn.Conv2d``; anything else (another device or dtype, CPU autocast, an input that
    requires grad, tracing and so ONNX export, ``torch.compile``, ``torch.backends.mkldnn`` disabled)
    goes through ``F.conv2d`` as usual.
    """

    _onednn_sizes: dict[torch.Size, bool]  # input shape -> enough output pixels (set by _use_onednn)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self._onednn(input, weight):
            return torch.ops.aten.mkldnn_convolution(
                input, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)

    def _onednn(self, input: Tensor, weight: Tensor) -> bool:
        # Cheap tests first: this runs for every convolution of every call.
        if (input.device.type != "cpu" or input.dtype != torch.float32 or weight.dtype != torch.float32
                or input.requires_grad or input.dim() != 4):
            return False
        # ONNX export (TorchScript-based) traces; the dynamo-based exporters and torch.compile compile.
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
            return False
        big = self._onednn_sizes.get(input.shape)
        if big is None:
            pixels = input.shape[0]
            for i in (0, 1):
                size = input.shape[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1
                pixels *= size // self.stride[i] + 1
            big = pixels >= _ONEDNN_MIN_PIXELS
            if len(self._onednn_sizes) < 64:  # a few batch / image sizes in practice
                self._onednn_sizes[input.shape] = big
        return big and torch.backends.mkldnn.enabled


def _use_onednn(module: nn.Module) -> int:
    """Make every plain zero-padded ``nn.Conv2d`` of ``module`` a :class:`_OneDNNConv2d` (in place:
    only the class changes, no parameter). Returns how many."""
    if not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for m in module.modules():
        if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.__class__ = _OneDNNConv2d
            m._onednn_sizes = {}
            count += 1
    return count


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    if type(conv) is not nn.Conv2d or not isinstance(norm, _NORMS):  # a Conv2d subclass may not be linear
        return False
    if getattr(norm, "running_mean", None) is None or getattr(norm, "running_var", None) is None:
        return False  # track_running_stats=False: normalizes with the batch's statistics, even in eval
    return conv.out_channels == norm.running_mean.shape[0]


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    """``conv`` becomes ``norm(conv(x))`` (eval statistics), computed in float64."""
    w = conv.weight.double()
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma * torch.rsqrt(var + float(norm.eps))
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)


def _observed_boundaries(model: nn.Module) -> set[tuple[int, int]]:
    """``(id(container), i)``: places where an SSD takes a feature map between ``container[i - 1]``
    and ``container[i]`` (see :class:`~ssdfast.models.ssd.SourceLayer`)."""
    sources = getattr(model, "sources", None)
    base_net = getattr(model, "base_net", None)
    if not sources or base_net is None:
        return set()
    out = set()
    for src in sources:
        if getattr(src, "sub", None) is not None:
            out.add((id(getattr(base_net[src.index], src.sub)), int(src.split)))
        else:
            out.add((id(base_net), int(src.index)))
    return out


def fold_batchnorm(module: nn.Module, *, keep: Iterable[tuple[int, int]] = ()) -> int:
    """Fold, in place, every eval-mode BatchNorm that follows a Conv2d in an ``nn.Sequential``.

    The conv takes the BatchNorm's affine map (its weight and bias are replaced; a conv without
    bias gets one) and the BatchNorm becomes ``nn.Identity``. Only valid for inference (eval
    statistics); ``module`` should be a copy (see :func:`inference_model`).

    Args:
        module: the module tree to change.
        keep: ``(id(sequential), i)`` pairs not to fold across: the output of ``sequential[i - 1]``
            is used elsewhere as well.

    Returns:
        the number of BatchNorms folded.
    """
    keep = set(keep)
    folded = 0
    for container in list(module.modules()):
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for i in range(1, len(names)):
            conv, norm = container._modules[names[i - 1]], container._modules[names[i]]
            if (id(container), i) in keep or conv is None or norm is None or not _foldable(conv, norm):
                continue
            _fold(conv, norm)
            setattr(container, names[i], nn.Identity())
            folded += 1
    return folded


def inference_model(
    model: nn.Module,
    *,
    fold: bool = True,
    memory_format: torch.memory_format = torch.channels_last,
    onednn: bool = True,
) -> nn.Module:
    """A copy of ``model`` for fast inference: eval mode, no grad, BatchNorm folded, channels_last,
    oneDNN convolutions on CPU.

    ``model`` is not changed (train it, ``torch.compile`` it, export it to ONNX as before). The copy
    computes the same outputs as ``model.eval()`` up to float rounding (~1e-5 relative in float32),
    on the same device and in the same dtype; it keeps the original's attributes (an SSD's
    ``config`` and ``priors``), so it can stand in for it anywhere in inference.

    Args:
        model: any network; for an :class:`~ssdfast.models.SSD`, the feature maps it takes inside
            its base net are respected.
        fold: fold BatchNorms into the preceding convs (see :func:`fold_batchnorm`).
        memory_format: of the copy's 4-d weights; feed it inputs in the same format
            (``batch.contiguous(memory_format=torch.channels_last)``) to avoid a conversion per call.
            ``torch.contiguous_format`` keeps NCHW.
        onednn: run the convolutions with oneDNN on CPU whatever the thread count and batch size
            (see :class:`_OneDNNConv2d`; no effect on other devices).

    Returns:
        the copy, in eval mode, with ``requires_grad=False`` on every parameter.
    """
    fast = copy.deepcopy(model).eval()
    fast.requires_grad_(False)
    if fold:
        fold_batchnorm(fast, keep=_observed_boundaries(fast))
    if memory_format is not torch.contiguous_format:
        fast = fast.to(memory_format=memory_format)
    if onednn:
        _use_onednn(fast)
    return fast
