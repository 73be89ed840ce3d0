"""Inference copies of networks: BatchNorm folded into the convs, activations fused into them,
weights pre-packed for oneDNN, channels_last, eval, no grad.

>>> from ssdfast.models.fuse import inference_model
>>> fast = inference_model(model)              # a new module; ``model`` itself is not changed
>>> confidences, locations = fast(batch.contiguous(memory_format=torch.channels_last))

Why: in eval mode a BatchNorm is a per-channel affine map, a whole extra pass over every feature
map; folded into the preceding convolution it costs nothing. In channels_last, CPU convolutions
run oneDNN's kernels without a layout conversion each (and channels_last is the fast layout for
CUDA convolutions too). And PyTorch's own choice of CPU kernel sends 1x1 convolutions with one
thread and batches under 16, and 3x3 ones on small inputs, to an im2col + BLAS path ~2x slower
than oneDNN on this project's CPUs: on CPU the copy's convolutions always run oneDNN, except on
tiny maps (see :class:`_OneDNNConv2d`). There, each convolution also reads its weights already
in oneDNN's blocked layout (packed once per input shape instead of reordered at every call) and
applies the ReLU / ReLU6 / Hardswish after it as a post-op while its output is still in cache.
mb3-large-ssd-lite's network (torchvision's MobileNetV3) runs ~2x faster than the model itself at
batch 1 (2 threads).

Folding is generic: any ``nn.Conv2d`` directly followed by a ``BatchNorm2d`` (or torchvision's
``FrozenBatchNorm2d``) inside an ``nn.Sequential`` — torchvision's ``Conv2dNormActivation`` blocks,
pytorch-ssd's ``Sequential(conv, bn, relu)`` stages, the SSD-Lite heads — is folded, and the
BatchNorm is replaced by ``nn.Identity`` so that every index of the Sequential is kept (an
:class:`~ssdfast.models.SSD` reaches into its base net by index). A pair is left alone when the
conv's output is itself a feature map the SSD takes (its ``sources``), since folding would change
that map. Convs in other containers (``ModuleList``, custom modules) are not folded: there the
order of the children says nothing about the order of the computation; unless the module says it,
with a class attribute ``fuse_chains``: tuples of child names that run one after the other (as
pytorch-ssd's MobileNetV3 ``Block``, :class:`~ssdfast.models.mobilenet.MobileNetV3Block`, whose
``conv1, bn1, nolinear1, conv2, ...`` are attributes), which are then treated as a Sequential.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["fold_batchnorm", "inference_model"]

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)

#: Below this many output pixels (batch x height x width) a convolution keeps PyTorch's choice:
#: oneDNN's fixed cost per call (~40 us) outweighs its faster arithmetic on 1x1 / 3x3 maps.
_ONEDNN_MIN_PIXELS = 64
#: Input shapes per convolution whose weights are kept pre-packed in oneDNN's blocked layout
#: (a few batch / image sizes in practice; more run with the plain weights, still on oneDNN).
_MAX_PACKED_SHAPES = 4


#: oneDNN post-op name -> the same activation as an ordinary function of (output, scalars).
_POST_OP_FNS: dict[str, Callable[[Tensor, list[float]], Tensor]] = {
    "relu": lambda x, scalars: F.relu(x),
    "hardtanh": lambda x, scalars: F.hardtanh(x, scalars[0], scalars[1]),
    "hardswish": lambda x, scalars: F.hardswish(x),
}


def _post_op(act: nn.Module) -> tuple[str, list[float]] | None:
    """``(oneDNN post-op name, its scalars)`` of an activation module, or None."""
    kind = type(act)
    if kind is nn.ReLU:
        return "relu", []
    if kind is nn.ReLU6:
        return "hardtanh", [0.0, 6.0]
    if kind is nn.Hardtanh:
        return "hardtanh", [float(act.min_val), float(act.max_val)]
    if kind is nn.Hardswish:
        return "hardswish", []
    return None


class _OneDNNConv2d(nn.Conv2d):
    """A ``Conv2d`` that runs oneDNN's convolution directly for float32 CPU inputs of at least
    ``_ONEDNN_MIN_PIXELS`` output pixels, with

    - its weights pre-packed, once per input shape, in the blocked layout oneDNN's kernel reads
      (otherwise every call reorders them: ~20% of mb3-large-ssd-lite's time at batch 1);
    - the activation that follows it in its ``nn.Sequential`` (ReLU, ReLU6, Hardtanh, Hardswish)
      applied as a oneDNN post-op in the same pass over the output (see :func:`_fuse_activations`).

    Same parameters and state dict as ``nn.Conv2d`` and the same results up to float rounding.
    Anything else (another device or dtype, CPU autocast, an input that requires grad, tracing and
    so ONNX export, ``torch.compile``, ``torch.backends.mkldnn`` disabled) runs ``F.conv2d`` and the
    activation as ordinary operators.
    """

    _onednn_sizes: dict[torch.Size, bool]  # input shape -> enough output pixels (set by _use_onednn)
    _packed: dict[torch.Size, Tensor]  # input shape -> weight in oneDNN's layout for it
    post_op: str = "none"  # oneDNN post-op name of the fused activation ("none": no activation)
    post_scalars: list[float] = []

    def forward(self, input: Tensor) -> Tensor:
        if self._onednn(input, self.weight):
            return torch.ops.mkldnn._convolution_pointwise(
                input, self._weight_for(input), self.bias, self.padding, self.stride, self.dilation, self.groups,
                self.post_op, self.post_scalars, None,
            )
        out = self._conv_forward(input, self.weight, self.bias)
        return out if self.post_op == "none" else _POST_OP_FNS[self.post_op](out, self.post_scalars)

    def _weight_for(self, input: Tensor) -> Tensor:
        packed = self._packed.get(input.shape)
        if packed is None:
            if len(self._packed) >= _MAX_PACKED_SHAPES:
                return self.weight
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.detach().contiguous().to_mkldnn(), list(self.padding), list(self.stride),
                list(self.dilation), self.groups, list(input.shape),
            )
            self._packed[input.shape] = packed
        return packed

    def _onednn(self, input: Tensor, weight: Tensor) -> bool:
        # Cheap tests first: this runs for every convolution of every call.
        if (input.device.type != "cpu" or input.dtype != torch.float32 or weight.dtype != torch.float32
                or input.requires_grad or weight.requires_grad or input.dim() != 4 or input.is_mkldnn):
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

    def __getstate__(self) -> dict:
        # oneDNN tensors can be neither pickled nor deep-copied (both go through here): copies and
        # loaded modules pack their own weights when first called.
        return {**super().__getstate__(), "_packed": {}}


def _use_onednn(module: nn.Module) -> int:
    """Make every plain zero-padded float ``nn.Conv2d`` of ``module`` a :class:`_OneDNNConv2d` (in
    place: only the class changes, no parameter). Returns how many."""
    if not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for m in module.modules():
        if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.__class__ = _OneDNNConv2d
            m._onednn_sizes = {}
            m._packed = {}
            count += 1
    return count


def _sequentials(module: nn.Module) -> Iterator[tuple[nn.Module, list[str]]]:
    """Every ``nn.Sequential`` in ``module`` with its children's names, and every chain of children a
    module declares in ``fuse_chains`` (listed first: callers replace children while iterating)."""
    for container in list(module.modules()):
        if isinstance(container, nn.Sequential):
            yield container, list(container._modules)
        for chain in getattr(type(container), "fuse_chains", ()):
            yield container, list(chain)


def _fuse_activations(module: nn.Module, *, keep: Iterable[tuple[int, int]] = ()) -> int:
    """Give every :class:`_OneDNNConv2d` followed in its ``nn.Sequential`` (past ``nn.Identity``,
    e.g. a folded BatchNorm) by a ReLU, ReLU6, Hardtanh or Hardswish that activation as a post-op,
    and replace the activation by ``nn.Identity`` (indices kept). Not across a ``keep`` boundary
    (``(id(sequential), i)``: the output of ``sequential[i - 1]`` is used elsewhere). Returns how many."""
    keep = set(keep)
    fused = 0
    for container, names in _sequentials(module):
        for i, name in enumerate(names):
            conv = container._modules[name]
            if type(conv) is not _OneDNNConv2d or conv.post_op != "none":
                continue
            j = i + 1
            while (j < len(names) and (id(container), j) not in keep
                    and isinstance(container._modules[names[j]], nn.Identity)):
                j += 1
            if j >= len(names) or (id(container), j) in keep:
                continue
            post = _post_op(container._modules[names[j]])
            if post is None:
                continue
            conv.post_op, conv.post_scalars = post
            setattr(container, names[j], nn.Identity())
            fused += 1
    return fused


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
    """Fold, in place, every eval-mode BatchNorm that follows a Conv2d in an ``nn.Sequential`` (or in
    a module's ``fuse_chains``).

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
    for container, names in _sequentials(module):
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
    if onednn and _use_onednn(fast):
        _fuse_activations(fast, keep=_observed_boundaries(fast))
    return fast
