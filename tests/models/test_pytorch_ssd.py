"""pytorch-ssd's files load into the networks they came from, with the same outputs.

The files are generated here, in pytorch-ssd's layout, from the independent re-statement of its
networks in ``pytorch_ssd_reference.py`` (random weights and BatchNorm statistics), then loaded with
``model_from_pytorch_ssd`` (network identified from the file, or named) and both networks are run
on the same random input: raw scores and locations must agree (max abs diff < 1e-4), priors too.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssdfast.model_files import load_weights, read_model_file, save_checkpoint
from ssdfast.models import (
    create_model,
    identify_pytorch_ssd,
    load_base_net,
    load_pretrained_ssd,
    model_from_pytorch_ssd,
)

from . import pytorch_ssd_reference as ref

TOL = 1e-4


def randomize(module: nn.Module, seed: int = 0, gain: float = 1.0) -> nn.Module:
    """Trained-looking random weights: He-scaled convs (activations stay O(1) through VGG16), random
    biases, BatchNorm affine and running statistics, L2Norm scales. Returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(gain / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            elif isinstance(m, ref.ScaledL2Norm):
                m.scale.copy_(torch.rand(m.scale.shape, generator=g) * 20 + 5)
    return module.eval()


# (case id, network name, reference options, the options ssdfast must pick, classes)
CASES = [
    ("vgg16-ssd-batchnorm", "vgg16-ssd", {}, {"conv4_3_norm": "batchnorm"}, 21),  # pytorch-ssd's since Sep 2018
    ("vgg16-ssd-l2norm", "vgg16-ssd", {"conv4_3_norm": "l2norm"}, {"conv4_3_norm": "l2norm"}, 21),  # before
    ("mb1-ssd", "mb1-ssd", {}, {}, 21),
    ("mb1-ssd-lite", "mb1-ssd-lite", {}, {}, 5),
    ("mb2-ssd-lite", "mb2-ssd-lite", {}, {"width_mult": 1.0, "backbone": "pytorch-ssd"}, 21),
    ("mb2-ssd-lite-0.5", "mb2-ssd-lite", {"width_mult": 0.5}, {"width_mult": 0.5, "backbone": "pytorch-ssd"}, 4),
    ("mb2-ssd-lite-0.75", "mb2-ssd-lite", {"width_mult": 0.75}, {"width_mult": 0.75, "backbone": "pytorch-ssd"}, 4),
    ("mb3-large-ssd-lite", "mb3-large-ssd-lite", {}, {"width_mult": 1.0, "backbone": "pytorch-ssd"}, 21),
    ("mb3-small-ssd-lite", "mb3-small-ssd-lite", {}, {"width_mult": 1.0, "backbone": "pytorch-ssd"}, 21),
]


def _outputs(model: nn.Module, seed: int = 1, size: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    "name, ref_options, options, classes",
    [pytest.param(*c[1:], id=c[0], marks=[pytest.mark.slow] if c[1].startswith("vgg") else []) for c in CASES],
)
def test_pytorch_ssd_file_loads_with_the_same_outputs(name, ref_options, options, classes, tmp_path):
    source = randomize(ref.create(name, classes, **ref_options), seed=len(name))
    path = tmp_path / f"{name}-Epoch-99-Loss-1.5.pth"
    torch.save(source.state_dict(), path)  # what pytorch-ssd's net.save() writes

    weights = read_model_file(path).state_dict
    assert identify_pytorch_ssd(weights) == (name, options)
    # network, variant, width and classes from the file
    model, report = model_from_pytorch_ssd(weights, source=str(path))
    assert report.source == str(path)
    assert report.loaded and not report.reinitialized and not report.not_in_file
    assert model.config.name == name and model.config.num_classes == classes
    assert {"width_mult": model.config.width_mult, **model.config.options}.items() >= options.items()
    assert model.config.antialias is False
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in source.parameters())
    assert torch.equal(model.priors, ref.priors(name))  # locations are relative to the same priors

    expected, got = _outputs(source), _outputs(model)
    for e, g in zip(expected, got):
        assert e.shape == g.shape and float(e.std()) > 0.1  # not a degenerate comparison
        diff = float((e - g).abs().max())
        assert diff < TOL, f"max abs diff {diff:.3g}"

    # the same with the network named (pytorch-ssd's --net; the width given where there is one)
    named, _ = model_from_pytorch_ssd(weights, name, classes, width_mult=options.get("width_mult"))
    assert named.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), model.state_dict().values()))


def test_parameter_counts_of_pytorch_ssd_mb3_at_21_classes():
    """The published figures: pytorch-ssd's MobileNetV3 SSD-Lite has 2.39 M (large) and 1.26 M
    (small) parameters with VOC's 21 classes (background included)."""
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)  # noqa: E731
    assert count(ref.create("mb3-large-ssd-lite", 21)) == 2.39
    assert count(ref.create("mb3-small-ssd-lite", 21)) == 1.26
    assert count(ref.create("mb3-large-ssd-lite", 91)) != 2.39  # so the figures are for 21 classes


def test_mb2_widths_pytorch_ssd_cannot_run():
    """pytorch-ssd sizes mb2-ssd-lite's first head ``round(576 * w)`` and its extras for 1280 channels,
    while its base net has ``6 * int(96 * w)`` and ``int(1280 * w)`` (w > 1): at widths such as 1.4 or
    0.35 its network fails on its first forward pass, so no trained file of it exists. ssdfast builds
    those widths with its heads and extras sized from the base net, whose channels are pytorch-ssd's:
    a pytorch-ssd MobileNetV2 base net at such a width loads and gives the same features."""
    x = torch.randn(1, 3, 160, 160)
    for width in (1.4, 0.35):
        with pytest.raises(RuntimeError):
            ref.create("mb2-ssd-lite", 3, width_mult=width).eval()(x)
        base = randomize(ref.mobilenet_v2_features(width), seed=3)
        model = create_model("mb2-ssd-lite", 3, width_mult=width, image_size=160).eval()
        load_base_net(model, base.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model.base_net(x), base(x), rtol=1e-4, atol=1e-4)
            model(x)


def test_identification_reads_width_and_backbone_off_the_shapes():
    # ssdfast's own layouts (bare state dicts of its networks) are told apart too
    for name, options in [
        ("mb2-ssd-lite", {"width_mult": 0.5, "backbone": "torchvision"}),
        ("mb2-ssd-lite", {"width_mult": 0.25, "backbone": "pytorch-ssd"}),
        ("mb3-large-ssd-lite", {"width_mult": 1.0, "backbone": "torchvision"}),
        ("mb3-small-ssd-lite", {"width_mult": 0.75, "backbone": "torchvision"}),
        ("mb3-small-ssd-lite", {"width_mult": 0.5, "backbone": "pytorch-ssd"}),
        ("vgg16-ssd512", {"conv4_3_norm": "l2norm"}),
    ]:
        with torch.device("meta"):
            sd = create_model(name, 3, image_size=272 if name.startswith("vgg") else 64, **options).state_dict()
        assert identify_pytorch_ssd(sd) == (name, options)
    sd = ref.create("mb2-ssd-lite", 3, width_mult=0.5).state_dict()
    assert identify_pytorch_ssd(sd, width_mult=0.5)[1]["width_mult"] == 0.5
    with pytest.raises(ValueError,
                       match=r"not mb2-ssd-lite's at width multiplier 0.75; it is mb2-ssd-lite \(width_mult=0.5\)"):
        identify_pytorch_ssd(sd, width_mult=0.75)
    with pytest.raises(ValueError,
                       match="cannot tell which network a state dict holds: .* none of pytorch-ssd's networks"):
        identify_pytorch_ssd({"base_net.0.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(ValueError, match="no base_net"):
        identify_pytorch_ssd({"features.0.weight": torch.zeros(8, 3, 3, 3)})


def test_named_network_and_file_must_agree(tmp_path):
    sd = randomize(ref.create("mb3-small-ssd-lite", 3)).state_dict()
    with pytest.raises(ValueError, match="holds a mb3-small-ssd-lite network, not mb3-large-ssd-lite"):
        model_from_pytorch_ssd(sd, "mb3-large-ssd-lite")
    with pytest.raises(ValueError, match="at width multiplier 0.5; it is mb3-small-ssd-lite"):
        model_from_pytorch_ssd(sd, "mb3-small-ssd-lite", width_mult=0.5)
    with pytest.raises(ValueError, match=r"prediction heads do not fit 4 classes \+ background"):
        model_from_pytorch_ssd(sd, "mb3-small-ssd-lite", 5)


# ----------------------------------------------------------------------------- --pretrained-ssd
def test_pretrained_ssd_takes_pytorch_ssd_files_of_every_network_any_class_count():
    for name, ref_options, options in [("vgg16-ssd", {"conv4_3_norm": "l2norm"}, {"conv4_3_norm": "l2norm"}),
                                       ("mb3-large-ssd-lite", {}, {}), ("mb3-small-ssd-lite", {}, {}),
                                       ("mb2-ssd-lite", {"width_mult": 0.75}, {"width_mult": 0.75})]:
        source = randomize(ref.create(name, 21, **ref_options), seed=5).state_dict()
        model = create_model(name, 4, image_size=272 if name.startswith("vgg") else 96, **options)
        report = load_pretrained_ssd(model, source)
        assert report.reinitialized and all(k.startswith("classification_headers.") for k in report.reinitialized)
        assert not report.not_in_file and len(report.loaded) + len(report.reinitialized) == len(source)
        if name != "mb2-ssd-lite":  # (its blocks are re-keyed: compared in test_weights)
            mine = model.state_dict()
            assert all(torch.equal(mine[k], source[k]) for k in report.loaded)


def test_pretrained_ssd_of_another_variant_says_which_option():
    bn = ref.create("vgg16-ssd", 21).state_dict()
    model = create_model("vgg16-ssd", 21, conv4_3_norm="l2norm")
    with pytest.raises(ValueError) as info:
        load_pretrained_ssd(model, bn)
    message = str(info.value)
    assert "source_layer_add_ons.0.scale" in message and "source_layer_add_ons.0.running_mean" in message
    assert "the file is a pytorch-ssd vgg16-ssd; the model is vgg16-ssd (conv4_3_norm='l2norm')" in message
    assert "conv4_3_norm='batchnorm'" in message

    mb3 = ref.create("mb3-large-ssd-lite", 21).state_dict()
    with pytest.raises(ValueError,
                       match=r"the model is mb3-large-ssd-lite \(backbone='torchvision'\): .*backbone='pytorch-ssd'"):
        load_pretrained_ssd(create_model("mb3-large-ssd-lite", 21, backbone="torchvision", image_size=64), mb3)
    narrow = ref.create("mb2-ssd-lite", 21, width_mult=0.5).state_dict()
    with pytest.raises(ValueError, match=r"the file is a pytorch-ssd mb2-ssd-lite \(width_mult=0.5\)"):
        load_pretrained_ssd(create_model("mb2-ssd-lite", 21, image_size=64), narrow)


def test_pretrained_ssdfast_checkpoint_of_another_variant(tmp_path):
    path = tmp_path / "tv.pth"
    save_checkpoint(path, create_model("mb3-small-ssd-lite", 3, image_size=64, backbone="torchvision"),
                    ["BACKGROUND", "a", "b"])
    with pytest.raises(ValueError, match=r"ssdfast checkpoint of mb3-small-ssd-lite \(backbone='torchvision'\)"):
        load_weights(create_model("mb3-small-ssd-lite", 3, image_size=64), path)
    assert load_weights(create_model("mb3-small-ssd-lite", 5, image_size=64, backbone="torchvision"), path).loaded


# ----------------------------------------------------------------------------- --base-net
def test_pytorch_ssd_mobilenet_v3_base_nets():
    """pytorch-ssd's mb3 base net: its ``features`` state dict, or a whole ``MobileNetV3_Large`` one
    (``conv1``/``bneck.i``/``conv2`` keys, plus ``features.N`` duplicates when saved from pytorch-ssd's class)."""
    features = randomize(ref.mobilenet_v3_features(ref.LARGE_BNECK, 960), seed=7)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = features(x)
    plain = features.state_dict()
    names = {"0": "conv1", "1": "bn1", "18": "conv2", "19": "bn2"}
    whole = {}
    for k, v in plain.items():
        head, _, rest = k.partition(".")
        whole[f"{names[head]}.{rest}" if head in names else f"bneck.{int(head) - 3}.{rest}"] = v
    whole |= {"linear3.weight": torch.zeros(1280, 960), "bn3.running_mean": torch.zeros(1280),
              "linear4.weight": torch.zeros(1000, 1280)}
    with_features = whole | {f"features.{k}": v for k, v in plain.items()}
    for sd in (plain, whole, with_features):
        model = create_model("mb3-large-ssd-lite", 3, image_size=96).eval()
        report = load_base_net(model, {f"module.{k}": v for k, v in sd.items()})
        assert not report.not_in_file
        with torch.no_grad():
            torch.testing.assert_close(model.base_net(x), expected, rtol=1e-5, atol=1e-5)
    assert sorted(report.ignored) == ["bn3.running_mean", "linear3.weight", "linear4.weight"]

    import torchvision

    imagenet = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"base net of mb3-large-ssd-lite \(backbone='torchvision'\)"):
        load_base_net(create_model("mb3-large-ssd-lite", 3, image_size=64), imagenet)
