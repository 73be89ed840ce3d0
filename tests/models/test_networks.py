"""Every network builds, has pytorch-ssd's priors and heads, and trains a step on CPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ssdfast.loss import MultiBoxLoss
from ssdfast.models import SSDConfig, create_model, list_models, model_from_config, model_options
from ssdfast.priors import MOBILENET_SSD300_SPEC, VGG_SSD300_SPEC, VGG_SSD512_SPEC, generate_priors

NAMES = ["vgg16-ssd", "vgg16-ssd512", "mb1-ssd", "mb1-ssd-lite", "mb2-ssd-lite", "mb3-large-ssd-lite",
         "mb3-small-ssd-lite"]
DEFAULT_SPECS = {
    "vgg16-ssd": VGG_SSD300_SPEC,
    "vgg16-ssd512": VGG_SSD512_SPEC,
    **{n: MOBILENET_SSD300_SPEC for n in NAMES[2:]},
}
# Small inputs keep the CPU steps quick; vgg's unpadded 3x3 / 4x4 extras need at least 272 px.
SMALL_SIZES = {"vgg16-ssd": 272, "vgg16-ssd512": 272, **{n: 64 for n in NAMES[2:]}}
# Every network with its default options, and the variants (options of their own).
VARIANTS = [
    ("vgg16-ssd", {"conv4_3_norm": "l2norm"}),
    ("vgg16-ssd512", {"conv4_3_norm": "l2norm"}),
    ("mb2-ssd-lite", {"backbone": "torchvision"}),
    ("mb3-large-ssd-lite", {"backbone": "torchvision"}),
    ("mb3-small-ssd-lite", {"backbone": "torchvision"}),
]
CASES = [pytest.param(n, {}, id=n) for n in NAMES] + [
    pytest.param(n, o, id=f"{n}-{'-'.join(o.values())}") for n, o in VARIANTS
]


def _targets(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.9, 0.95]], [[0.2, 0.3, 0.7, 0.9], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 2], [2, -1]])
    return boxes[:batch], labels[:batch]


def test_list_models():
    assert list_models() == NAMES


@pytest.mark.parametrize("name, options", CASES)
def test_default_size_priors_and_parts(name, options):
    model = create_model(name, 21, **options)
    spec = DEFAULT_SPECS[name]
    assert model.config.prior_spec == spec
    assert model.config.image_size == spec.image_size
    assert torch.equal(model.priors, generate_priors(spec))
    assert model.priors.shape[0] == {"vgg16-ssd": 8732, "vgg16-ssd512": 24564}.get(name, 3000)
    assert len(model.classification_headers) == len(model.regression_headers) == spec.num_levels
    for module in (model.base_net, model.extras):
        assert isinstance(module, torch.nn.Module)
    assert "priors" not in model.state_dict()  # rebuilt from the config, not stored
    assert model.config.options == {**{k: v[0] for k, v in model_options(name).items()}, **options}


def test_pytorch_ssd_head_shapes():
    mb2 = create_model("mb2-ssd-lite", 21)
    assert mb2.classification_headers[0][0].in_channels == 576  # GraphPath(14, 'conv', 3)
    assert [h[0].in_channels for h in mb2.regression_headers[1:5]] == [1280, 512, 256, 256]
    assert mb2.classification_headers[5].in_channels == 64
    vgg = create_model("vgg16-ssd", 21, conv4_3_norm="l2norm")  # the SSD paper's conv4_3 norm
    assert [h.in_channels for h in vgg.classification_headers] == [512, 1024, 512, 256, 256, 256]
    assert [h.out_channels for h in vgg.classification_headers] == [84, 126, 126, 126, 84, 84]
    assert vgg.source_layer_add_ons[0].scale.tolist() == [20.0] * 512


def test_forward_at_default_size():
    model = create_model("mb3-small-ssd-lite", 5).eval()
    with torch.no_grad():
        confidences, locations = model(torch.randn(2, 3, 300, 300))
    assert confidences.shape == (2, 3000, 5) and locations.shape == (2, 3000, 4)
    assert torch.isfinite(confidences).all() and torch.isfinite(locations).all()


@pytest.mark.parametrize("name, options", [c for c in CASES if c.id != "vgg16-ssd512-l2norm"])
def test_train_step(name, options):
    torch.manual_seed(0)
    size = SMALL_SIZES[name]
    model = create_model(name, 3, image_size=size, **options)
    assert model.config.image_size == size and model.config.prior_spec.image_size == size
    criterion = MultiBoxLoss(model.priors)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    confidences, locations = model(torch.randn(2, 3, size, size))
    P = model.priors.shape[0]
    assert confidences.shape == (2, P, 3) and locations.shape == (2, P, 4)
    regression, classification = criterion(confidences, locations, *_targets())
    assert torch.isfinite(regression) and torch.isfinite(classification) and classification > 0
    before = {k: v.clone() for k, v in model.classification_headers[0].state_dict().items()}
    (regression + classification).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    after = model.classification_headers[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_other_image_sizes_and_width():
    model = create_model("mb2-ssd-lite", 4, image_size=320)
    assert model.config.prior_spec.feature_maps == (20, 10, 5, 3, 2, 1)
    assert model.priors.shape[0] == (400 + 100 + 25 + 9 + 4 + 1) * 6
    small = create_model("mb2-ssd-lite", 4, width_mult=0.5, image_size=128)
    assert small.config.width_mult == 0.5
    assert small.config.prior_spec.feature_maps == (8, 4, 2, 1, 1, 1)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        confidences, _ = small.eval()(torch.randn(1, 3, 128, 128))
    assert confidences.shape == (1, small.priors.shape[0], 4)
    mb3 = create_model("mb3-large-ssd-lite", 4, width_mult=0.75, image_size=160)
    assert mb3.config.width_mult == 0.75


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown network 'resnet-ssd'"):
        create_model("resnet-ssd", 3)
    with pytest.raises(ValueError, match="no width multiplier"):
        create_model("vgg16-ssd", 3, width_mult=0.5)
    with pytest.raises(ValueError, match="too small"):
        create_model("vgg16-ssd", 3, image_size=160)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mb1-ssd", 1)
    assert create_model("mb1_ssd_lite", 3, image_size=64).config.name == "mb1-ssd-lite"


def test_config_round_trip_and_rebuild():
    model = create_model("mb2-ssd-lite", 6, width_mult=0.5, image_size=160)
    plain = model.config.to_dict()
    assert isinstance(plain["prior_spec"], dict) and isinstance(plain["mean"], list)
    assert SSDConfig.from_dict(plain) == model.config
    assert SSDConfig.from_dict(dataclasses.asdict(model.config)) == model.config
    rebuilt = model_from_config(plain)
    assert rebuilt.config == model.config
    assert torch.equal(rebuilt.priors, model.priors)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    # mobilenet / vgg normalization as pytorch-ssd: (x - 127) / 128 and x - (123, 117, 104)
    assert [round(v * 255, 6) for v in model.config.mean] == [127.0] * 3
    assert [round(v * 255, 6) for v in model.config.std] == [128.0] * 3
    vgg = create_model("vgg16-ssd", 3).config
    assert [round(v * 255, 6) for v in vgg.mean] == [123.0, 117.0, 104.0]
    assert [round(v * 255, 6) for v in vgg.std] == [1.0] * 3


@pytest.mark.slow
def test_torch_compile_fullgraph_channels_last_model_and_loss():
    """Model + loss trace as one graph (aot_eager: graph capture and autograd without a C++ build)
    and give the eager numbers, with channels_last weights and inputs."""
    torch.manual_seed(0)
    model = create_model("mb3-small-ssd-lite", 3, image_size=64).eval()  # eval: same batch-norm numbers
    criterion = MultiBoxLoss(model.priors)
    x = torch.randn(2, 3, 64, 64)
    boxes, labels = _targets()

    def step(images, gt_boxes, gt_labels):
        confidences, locations = model(images)
        return (confidences, locations, *criterion(confidences, locations, gt_boxes, gt_labels))

    with torch.no_grad():
        expected = step(x, boxes, labels)
    model.to(memory_format=torch.channels_last)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x.contiguous(memory_format=torch.channels_last), boxes, labels)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    (got[2] + got[3]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_half_precision_keeps_float32_priors():
    model = create_model("mb1-ssd-lite", 3, image_size=64).half()
    assert model.base_net[0][0].weight.dtype == torch.float16
    assert model.priors.dtype == torch.float32
    assert torch.equal(model.priors, generate_priors(model.config.prior_spec))


def test_options_and_their_defaults():
    assert model_options("vgg16-ssd") == {"conv4_3_norm": ("batchnorm", "l2norm")}
    assert model_options("MB3_Large_SSD_Lite") == {"backbone": ("pytorch-ssd", "torchvision")}
    assert model_options("mb1-ssd") == {}
    vgg = create_model("vgg16-ssd", 3)  # pytorch-ssd's VGG today: BatchNorm at conv4_3
    assert isinstance(vgg.source_layer_add_ons[0], torch.nn.BatchNorm2d) and vgg.config.conv4_3_norm == "batchnorm"
    assert create_model("vgg16-ssd512", 3, conv4_3_norm="L2Norm", image_size=272).config.conv4_3_norm == "l2norm"
    assert create_model("mb3-small-ssd-lite", 3, image_size=64).config.backbone == "pytorch-ssd"
    # None means the default, for any network (a command line can pass every option to every network)
    assert create_model("mb1-ssd", 3, image_size=64, conv4_3_norm=None, backbone=None).config.options == {}
    with pytest.raises(ValueError, match="mb1-ssd has no option backbone"):
        create_model("mb1-ssd", 3, backbone="torchvision")
    with pytest.raises(ValueError, match="conv4_3_norm should be one of batchnorm, l2norm, got 'layernorm'"):
        create_model("vgg16-ssd", 3, conv4_3_norm="layernorm")
    with pytest.raises(TypeError, match="unexpected keyword argument 'norm'"):
        create_model("vgg16-ssd", 3, norm="l2norm")
    with pytest.raises(ValueError, match="backbone should be one of"):
        SSDConfig.from_dict({**create_model("mb1-ssd", 3, image_size=64).config.to_dict(), "backbone": "timm"})


def test_pytorch_ssd_mobilenet_v3_structure():
    """pytorch-ssd's MobileNetV3 SSD-Lite: heads on its layers 15 and 21 (large) / 11 and 17 (small),
    MobileNetV3 blocks as extras, its parameter counts; torchvision's under backbone="torchvision"."""
    large = create_model("mb3-large-ssd-lite", 21)
    assert len(large.base_net) == 21 and [s.index for s in large.sources] == [15, 21]
    assert [h[0].in_channels for h in large.classification_headers[:5]] == [112, 960, 512, 256, 256]
    assert large.classification_headers[5].in_channels == 64
    assert "base_net.3.conv1.weight" in large.state_dict() and "extras.0.conv2.weight" in large.state_dict()
    assert "base_net.13.se.se.1.weight" in large.state_dict()  # squeeze-excite after the projection
    small = create_model("mb3-small-ssd-lite", 21)
    assert len(small.base_net) == 17 and [s.index for s in small.sources] == [11, 17]
    assert [h[0].in_channels for h in small.classification_headers[:2]] == [48, 576]
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)  # noqa: E731
    assert (count(large), count(small)) == (2.39, 1.26)  # at 21 classes (VOC), the figures pytorch-ssd's give
    tv_large = create_model("mb3-large-ssd-lite", 21, backbone="torchvision")
    tv_small = create_model("mb3-small-ssd-lite", 21, backbone="torchvision")
    assert (count(tv_large), count(tv_small)) == (3.92, 1.58)
    assert [h[0].in_channels for h in tv_large.classification_headers[:2]] == [672, 960]
    for model in (large, small, tv_large, tv_small):
        assert model.config.prior_spec == MOBILENET_SSD300_SPEC  # pytorch-ssd's mobilenetv1_ssd_config


def test_mb2_width_rounding_per_backbone():
    """pytorch-ssd's MobileNetV2 truncates ``c * w``; torchvision rounds to multiples of 8."""
    ps = create_model("mb2-ssd-lite", 3, width_mult=0.5, image_size=64)
    tv = create_model("mb2-ssd-lite", 3, width_mult=0.5, image_size=64, backbone="torchvision")
    out = lambda m: [m.base_net[i].out_channels for i in (0, 1, 2, 4, 7, 11, 14, 17, 18)]  # noqa: E731
    assert out(ps) == [16, 8, 12, 16, 32, 48, 80, 160, 1280]
    assert out(tv) == [16, 8, 16, 16, 32, 48, 80, 160, 1280]
    assert ps.classification_headers[0][0].in_channels == 288  # pytorch-ssd's round(576 * 0.5)
    wide = create_model("mb2-ssd-lite", 3, width_mult=1.4, image_size=64)
    assert out(wide) == [44, 22, 33, 44, 89, 134, 224, 448, 1792]
    assert wide.extras[0].conv[0][0].in_channels == 1792
    one_ps, one_tv = create_model("mb2-ssd-lite", 3), create_model("mb2-ssd-lite", 3, backbone="torchvision")
    assert {k: v.shape for k, v in one_ps.state_dict().items()} == {k: v.shape for k, v in one_tv.state_dict().items()}


def test_configs_written_before_the_options_rebuild_the_same_networks():
    """ssdfast checkpoints from before ``conv4_3_norm`` / ``backbone``: vgg16-ssd was L2Norm, the mb3
    networks were on torchvision's MobileNetV3, mb2-ssd-lite rounded widths as torchvision."""
    cases = [("vgg16-ssd", {"conv4_3_norm": "l2norm"}, 300, 1.0),
             ("mb3-large-ssd-lite", {"backbone": "torchvision"}, 64, 0.75),
             ("mb3-small-ssd-lite", {"backbone": "torchvision"}, 64, 1.0),
             ("mb2-ssd-lite", {"backbone": "torchvision"}, 64, 0.5),
             ("mb1-ssd", {}, 64, 1.0)]
    for name, options, size, width in cases:
        model = create_model(name, 3, width_mult=width, image_size=size, **options)
        old = model.config.to_dict()
        for field in ("conv4_3_norm", "backbone", "antialias"):  # as older versions wrote it
            old.pop(field)
        cfg = SSDConfig.from_dict(old)
        assert cfg.options == options and cfg.antialias is True
        rebuilt = model_from_config(old)
        assert rebuilt.config == model.config
        assert ({k: v.shape for k, v in rebuilt.state_dict().items()}
                == {k: v.shape for k, v in model.state_dict().items()})
        rebuilt.load_state_dict(model.state_dict())  # the old weights load
