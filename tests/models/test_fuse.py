"""Inference copies (BatchNorm folded, channels_last): same outputs as the model, the model untouched,
and the Detector's fast path gives the same detections as the plain one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, FrozenBatchNorm2d

from ssdfast.detector import Detector, preprocess
from ssdfast.models import create_model, list_models
from ssdfast.models.fuse import _OneDNNConv2d, fold_batchnorm, inference_model
from ssdfast.ops import PostprocessSettings

SMALL_SIZES = {"vgg16-ssd": 272, "vgg16-ssd512": 272}  # the others: 64


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorms (the default ones are nearly the identity, which folds trivially)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.shape[0]
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def _assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((actual - expected).abs().max()) <= rel * scale


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# every network with its default options, and the variants
CASES = [pytest.param(n, {}, id=n) for n in list_models()] + [
    pytest.param("vgg16-ssd", {"conv4_3_norm": "l2norm"}, id="vgg16-ssd-l2norm"),
    pytest.param("mb2-ssd-lite", {"backbone": "torchvision", "width_mult": 0.75}, id="mb2-ssd-lite-torchvision-0.75"),
    pytest.param("mb3-large-ssd-lite", {"backbone": "torchvision"}, id="mb3-large-ssd-lite-torchvision"),
    pytest.param("mb3-small-ssd-lite", {"backbone": "torchvision"}, id="mb3-small-ssd-lite-torchvision"),
]


@pytest.mark.parametrize("name, options", CASES)
def test_inference_copy_matches_the_model(name, options):
    size = SMALL_SIZES.get(name, 64)
    torch.manual_seed(0)
    model = _randomize_norms(create_model(name, 4, image_size=size, **options)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        confidences, locations = model(x)
        fast_conf, fast_loc = fast(x.contiguous(memory_format=torch.channels_last))
        nchw_conf, _ = fast(x)  # a plain NCHW batch is fine too (converted by the first conv)
    _assert_rel_close(fast_conf, confidences)
    _assert_rel_close(fast_loc, locations)
    _assert_rel_close(nchw_conf, confidences)
    # every BatchNorm is folded (but pytorch-ssd's vgg16-ssd conv4_3 BatchNorm: it follows a ReLU, and
    # the 3x3 head after it pads with zeros, so it folds into neither), the copy is an inference-only SSD
    # with the same priors and config
    assert _norms(fast) == (1 if model.config.conv4_3_norm == "batchnorm" else 0) and not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    assert torch.equal(fast.priors, model.priors) and fast.config == model.config
    # the original is untouched (its training, torch.compile and ONNX export are unaffected)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())


def test_fold_batchnorm_only_where_it_is_exact():
    torch.manual_seed(0)
    block = _randomize_norms(Conv2dNormActivation(3, 8, 3, activation_layer=nn.Hardswish)).eval()
    seq = _randomize_norms(nn.Sequential(nn.Conv2d(8, 8, 1, bias=True), nn.BatchNorm2d(8), nn.ReLU())).eval()
    frozen = _randomize_norms(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                            FrozenBatchNorm2d(8))).eval()
    model = nn.Sequential(block, seq, frozen).eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model) == 3
    assert [type(m) for m in block] == [nn.Conv2d, nn.Identity, nn.Hardswish]  # indices kept
    assert isinstance(frozen[1], nn.Identity) and frozen[0].bias is not None
    with torch.no_grad():
        _assert_rel_close(model(x), expected, 1e-5)

    # not folded: a pair whose conv output is used elsewhere (keep), a BatchNorm without running
    # statistics, a Conv2d subclass, and children of a ModuleList (their order is not the computation's)
    class MyConv(nn.Conv2d):
        pass

    kept = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    assert fold_batchnorm(kept, keep={(id(kept), 1)}) == 0
    assert fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))) == 0
    assert fold_batchnorm(nn.Sequential(MyConv(3, 4, 1), nn.BatchNorm2d(4)).eval()) == 0
    assert fold_batchnorm(nn.ModuleList([nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)]).eval()) == 0


def test_inference_copy_keeps_dtype_and_can_stay_nchw():
    model = _randomize_norms(create_model("mb3-small-ssd-lite", 3, image_size=64)).eval()
    fast = inference_model(model.double(), memory_format=torch.contiguous_format)
    assert all(p.dtype == torch.float64 and p.is_contiguous() for p in fast.parameters())
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], model(x)[0], rtol=1e-9, atol=1e-9)
    unfolded = inference_model(model, fold=False)
    assert _norms(unfolded) == _norms(model) > 0


@pytest.mark.filterwarnings("ignore:TF32 acceleration", "ignore:`torch.jit.trace")
def test_onednn_convs_only_where_they_apply():
    torch.manual_seed(0)
    model = _randomize_norms(create_model("mb2-ssd-lite", 3, width_mult=0.5, image_size=64)).eval()
    fast = inference_model(model)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is _OneDNNConv2d for m in convs) == torch.backends.mkldnn.is_available()
    assert not any(type(m) is _OneDNNConv2d for m in inference_model(model, onednn=False).modules())
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)[0]
        _assert_rel_close(fast(x)[0], expected)
        with torch.backends.mkldnn.flags(enabled=False):  # the user's switch is honoured
            _assert_rel_close(fast(x)[0], expected)
        # tracing (so TorchScript ONNX export) sees plain convolutions
        graph = str(torch.jit.trace(fast, x, check_trace=False).inlined_graph)
    assert "mkldnn_convolution" not in graph and "aten::_convolution" in graph
    # an input that requires grad gets gradients through the ordinary path
    y = x.clone().requires_grad_(True)
    fast(y)[0].sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def _matched(a, b) -> None:
    """The same detections, up to the order of equal scores."""
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
    for box, label in zip(a.boxes, a.labels):
        same = (b.labels == label) & ((b.boxes - box).abs().amax(1) <= 1e-2)
        assert bool(same.any()), f"{box.tolist()} ({int(label)}) not among the plain path's detections"


#: Every candidate (random weights: detections at score threshold 0).
EVERY = PostprocessSettings(score_threshold=0.0)


def test_detector_fast_path_gives_the_same_detections():
    torch.manual_seed(0)
    model = _randomize_norms(create_model("mb3-large-ssd-lite", 3, width_mult=0.5, image_size=64)).eval()
    classes = ["BACKGROUND", "cat", "dog"]
    settings = PostprocessSettings(score_threshold=0.2, max_detections=50)
    fast = Detector(model, classes, settings=settings)
    plain = Detector(model, classes, settings=settings, fused=False)
    assert fast.model is model and plain.model is model and plain.network.module is model
    assert fast.network.module is not model and _norms(fast.network.module) == 0
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), torch.rand(3, 70, 50)]
    batch, sizes = fast.preprocess(images)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch, preprocess(images, model.config)[0])  # same values, other layout
    for a, b in zip(fast(images, EVERY), plain(images, EVERY)):
        _matched(a, b)
    # a new model (e.g. other weights) rebuilds the fast copy
    fast.model = _randomize_norms(create_model("mb3-large-ssd-lite", 3, width_mult=0.5, image_size=64), 1)
    plain.model = fast.model
    for a, b in zip(fast(images, EVERY), plain(images, EVERY)):
        _matched(a, b)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_activations_fused_into_onednn_convs_except_across_observed_maps():
    import copy
    import io

    from ssdfast.models import fuse

    torch.manual_seed(0)
    model = _randomize_norms(create_model("mb3-large-ssd-lite", 5, width_mult=0.5, image_size=96)).eval()
    fast = inference_model(model)
    convs = [m for m in fast.modules() if isinstance(m, _OneDNNConv2d)]
    posts = {m.post_op for m in convs}
    assert {"relu", "hardtanh", "hardswish", "none"} <= posts  # ReLU, ReLU6, Hardswish all fused
    # no activation module is left right after a fused conv; the SSD's own feature maps are intact
    activations = (nn.ReLU, nn.ReLU6, nn.Hardswish)
    left = sum(isinstance(m, activations) for m in fast.modules())
    assert left < sum(isinstance(m, activations) for m in model.modules())
    images = torch.randn(6, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    x = images[:3]
    with torch.no_grad():
        expected = model(x)
        for batch in (3, 1, 2, 4, 5, 6):  # more input shapes than are kept pre-packed
            out, ref = fast(images[:batch]), model(images[:batch])
            _assert_rel_close(out[0], ref[0])
            _assert_rel_close(out[1], ref[1])
    assert max(len(m._packed) for m in convs) == fuse._MAX_PACKED_SHAPES
    # copies and saved modules work (packed weights are not copied, they are packed again)
    clone = copy.deepcopy(fast)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        for other in (clone, loaded):
            assert all(not m._packed for m in other.modules() if isinstance(m, _OneDNNConv2d))
            _assert_rel_close(other(x)[0], expected[0])

    # a conv whose pre-activation output is a feature map the network takes keeps its activation
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Identity(), nn.ReLU6(), nn.Conv2d(8, 8, 1), nn.Hardswish())
    fuse._use_onednn(seq)
    assert fuse._fuse_activations(seq, keep={(id(seq), 2)}) == 1
    assert isinstance(seq[2], nn.ReLU6) and seq[0].post_op == "none" and seq[3].post_op == "hardswish"
    y = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        manual = F.hardswish(
            seq[3]._conv_forward(torch.clamp(seq[0]._conv_forward(y, seq[0].weight, seq[0].bias), 0, 6),
                                 seq[3].weight, seq[3].bias))
        _assert_rel_close(seq(y), manual, 1e-5)
        with torch.backends.mkldnn.flags(enabled=False):  # the ordinary path applies the fused activation itself
            _assert_rel_close(seq(y), manual, 1e-5)


def test_detector_runs_big_cpu_batches_in_chunks_with_the_same_results(monkeypatch):
    from ssdfast.detector import network as detector_module

    torch.manual_seed(0)
    model = _randomize_norms(create_model("mb2-ssd-lite", 3, width_mult=0.5, image_size=64)).eval()
    classes = ["BACKGROUND", "cat", "dog"]
    images = [torch.randint(0, 255, (3, 50 + 7 * i, 60), dtype=torch.uint8) for i in range(7)]
    whole = Detector(model, classes, settings=EVERY, chunk_size=0)
    batch, _ = whole.preprocess(images)
    expected = whole.run_network(batch)
    assert not whole.network.chunks
    # the default: a chunk size from the largest feature map of one image (here tiny maps: 7 at a time,
    # so lower the limit to force chunks of 2)
    largest, _ = detector_module._largest_output_bytes(whole.network.module, batch[:1])
    monkeypatch.setattr(detector_module, "_CHUNK_BYTES", 2 * largest + 1)
    auto = Detector(model, classes, settings=EVERY)
    calls = []
    auto.network.module.register_forward_pre_hook(lambda m, args: calls.append(int(args[0].shape[0])))
    for _ in range(2):  # the first call measures (one image alone), the next ones reuse the size
        calls.clear()
        out = auto.run_network(batch)
        torch.testing.assert_close(out[0], expected[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1], expected[1], rtol=1e-4, atol=1e-5)
    assert auto.network.chunks == {tuple(batch.shape[1:]): 2} and calls == [2, 2, 2, 1]
    assert detector_module.run_in_chunks(whole.network.module, batch, 0)[0].shape == expected[0].shape
    fixed = Detector(model, classes, settings=EVERY, chunk_size=3)
    for a, b in zip(fixed(images), whole(images)):
        _matched(a, b)
    with pytest.raises(ValueError, match="chunk_size"):
        Detector(model, classes, chunk_size=-1)
