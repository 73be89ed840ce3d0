"""Weight files of both layouts load: torchvision ImageNet state dicts and pytorch-ssd's files.

No downloads: the state dicts are generated here in the key layouts of the real files, from
torchvision's modules and from pytorch-ssd's modules as re-stated in ``pytorch_ssd_reference.py``
(same structure and names as qfgaohao/pytorch-ssd vision/nn/{vgg,mobilenet,mobilenet_v2}.py).
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ssdfast.model_files import load_weights, save_checkpoint
from ssdfast.models import create_model, load_base_net, load_pretrained_ssd

from . import pytorch_ssd_reference as ref


# ----------------------------------------------------------------------------- pytorch-ssd modules
def _ps_vgg() -> nn.ModuleList:
    """pytorch-ssd's vgg(cfg) as used by create_vgg_ssd (the layout of vgg16_reducedfc.pth)."""
    return nn.ModuleList(ref.vgg_layers())


def _ps_mobilenet_v1() -> nn.Sequential:
    """pytorch-ssd's MobileNetV1(1001).model (the layout of mobilenet_v1_with_relu_69_5.pth)."""
    return ref.mobilenet_v1_model()


def _ps_mobilenet_v2() -> nn.Sequential:
    """pytorch-ssd's MobileNetV2().features (the layout of mb2-imagenet-71_8.pth)."""
    return ref.mobilenet_v2_features(1.0)


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, so a wrong mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                values = torch.rand(t.shape, generator=g) * 0.5 + 0.75 \
                    if name.endswith(("running_var", "weight")) and t.dim() == 1 \
                    else torch.randn(t.shape, generator=g) * 0.1
                t.copy_(values)
    return module.eval()


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _base_features(model, x):
    with torch.no_grad():
        for layer in model.base_net:
            x = layer(x)
    return x


# ----------------------------------------------------------------------------- base nets
def test_vgg16_reducedfc_layout():
    ps = _randomize(_ps_vgg())
    sd = ps.state_dict()
    assert "31.weight" in sd and "33.weight" in sd and "0.weight" in sd  # vgg16_reducedfc.pth keys
    model = create_model("vgg16-ssd", 3).eval()
    report = load_base_net(model, sd)
    assert len(report.loaded) == len(sd) and not report.not_in_file
    for k, v in sd.items():
        assert torch.equal(model.base_net.state_dict()[k], v)


def test_torchvision_vgg16_layout_with_reduced_fc():
    with torch.device("meta"):
        tv = torchvision.models.vgg16(weights=None)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in tv.state_dict().items() if k.startswith("features.")}
    # The ImageNet classifier, without allocating its 100M floats: fc6 columns numbered, fc7 rows.
    sd["classifier.0.weight"] = torch.arange(25088.0)[None, :].expand(4096, 25088)
    sd["classifier.0.bias"] = torch.arange(4096.0)
    sd["classifier.3.weight"] = torch.arange(4096.0)[:, None].expand(4096, 4096)
    sd["classifier.3.bias"] = torch.arange(4096.0)
    sd["classifier.6.weight"] = torch.zeros(1000, 4096)
    sd["classifier.6.bias"] = torch.zeros(1000)
    model = create_model("vgg16-ssd512", 3)
    report = load_base_net(model, sd)
    base = model.base_net.state_dict()
    for k, v in sd.items():
        if k.startswith("features."):
            assert torch.equal(base[k[len("features."):]], v)
    w6 = base["31.weight"]  # [1024, 512, 3, 3]: fc6 reshaped to 512x7x7, every 3rd tap
    c, y, x = 5, 2, 1
    assert w6.shape == (1024, 512, 3, 3) and w6[7, c, y, x] == c * 49 + (3 * y) * 7 + 3 * x
    assert torch.equal(base["31.bias"], torch.arange(0, 4096.0, 4))
    assert base["33.weight"].shape == (1024, 1024, 1, 1) and base["33.weight"][3, 0, 0, 0] == 12
    assert report.ignored == ["classifier.6.weight", "classifier.6.bias"]
    assert "sub-sampled" in str(report)


def test_torchvision_vgg16_features_only_leaves_fc_initialised():
    with torch.device("meta"):
        tv = torchvision.models.vgg16(weights=None)
    sd = {k: torch.zeros(v.shape) for k, v in tv.state_dict().items() if k.startswith("features.")}
    model = create_model("vgg16-ssd", 3)
    report = load_base_net(model, sd)
    assert report.not_in_file == ["base_net.31.weight", "base_net.31.bias", "base_net.33.weight", "base_net.33.bias"]
    assert model.base_net[31].weight.abs().sum() > 0


def test_mobilenet_v1_pytorch_ssd_layout(tmp_path):
    ps = _randomize(_ps_mobilenet_v1(), seed=1)
    path = tmp_path / "mobilenet_v1_with_relu_69_5.pth"
    torch.save(ps.state_dict(), path)
    for name in ("mb1-ssd", "mb1-ssd-lite"):
        model = create_model(name, 3, image_size=64).eval()
        report = load_weights(model, path, base_net=True)  # the file read by ssdfast.model_files
        assert report.source == str(path) and not report.not_in_file
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            _assert_same(_base_features(model, x), ps(x))


def test_mobilenet_v2_pytorch_ssd_layout_is_rekeyed():
    ps = _randomize(_ps_mobilenet_v2(), seed=2)
    sd = ps.state_dict()
    assert "1.conv.3.weight" in sd and "2.conv.7.running_var" in sd  # flat mb2-imagenet-71_8.pth keys
    model = create_model("mb2-ssd-lite", 3, image_size=64).eval()
    load_base_net(model, sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same(_base_features(model, x), ps(x))


@pytest.mark.parametrize(
    "name, factory",
    [("mb2-ssd-lite", torchvision.models.mobilenet_v2),
     ("mb3-large-ssd-lite", torchvision.models.mobilenet_v3_large),
     ("mb3-small-ssd-lite", torchvision.models.mobilenet_v3_small)],
)
def test_torchvision_mobilenet_layouts(name, factory, tmp_path):
    tv = _randomize(factory(weights=None), seed=3)
    path = tmp_path / "imagenet.pth"
    torch.save(tv.state_dict(), path)
    # torchvision's ImageNet MobileNetV3 fits the torchvision-backbone variant (pytorch-ssd's mb3 is another
    # network); for mb2-ssd-lite at width 1 both backbones are the same network
    model = create_model(name, 3, image_size=64, backbone="torchvision").eval()
    report = load_base_net(model, torch.load(path, weights_only=True), source=str(path))
    assert all(k.startswith("classifier.") for k in report.ignored) and report.ignored
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same(_base_features(model, x), tv.features(x))


def test_mismatched_base_net_lists_keys():
    model = create_model("mb3-large-ssd-lite", 3, image_size=64, backbone="torchvision")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_base_net(model, torchvision.models.mobilenet_v2(weights=None).state_dict())
    message = str(info.value)
    assert "does not fit the base net of mb3-large-ssd-lite" in message
    assert "keys missing from the file: 1.block.0.0.weight" in message
    assert "unexpected keys in the file: 1.conv.0.0.weight" in message
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing copied

    narrow = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5).state_dict()
    with pytest.raises(ValueError, match=r"0\.0\.weight \(file \[16, 3, 3, 3\], model \[32, 3, 3, 3\]\)"):
        load_base_net(create_model("mb2-ssd-lite", 3, image_size=64), narrow)


def test_contents_without_a_state_dict():
    model = create_model("mb1-ssd", 3, image_size=64)
    for load in (load_base_net, load_pretrained_ssd):
        with pytest.raises(ValueError, match="holds no state dict"):
            load(model, {"epoch": 3})


# ----------------------------------------------------------------------------- whole detectors
_PS_FLAT = {  # torchvision InvertedResidual key -> pytorch-ssd's, by number of conv layers
    4: {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"},
    3: {"0.0": "0", "0.1": "1", "1": "3", "2": "4"},
}


def _to_pytorch_ssd_keys(model) -> dict[str, torch.Tensor]:
    """An ssdfast mb2-ssd-lite state dict written with pytorch-ssd's flat block keys."""
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] in ("base_net", "extras") and len(parts) > 3 and parts[2] == "conv":
            block = model.get_submodule(".".join(parts[:2]))
            inner = ".".join(parts[3:-1])
            key = ".".join(parts[:3] + [_PS_FLAT[len(block.conv)][inner], parts[-1]])
        out[key] = value.clone()
    return out


def test_pytorch_ssd_mb2_checkpoint_with_other_classes(tmp_path):
    torch.manual_seed(0)
    source = _randomize(create_model("mb2-ssd-lite", 21, image_size=96), seed=4)
    sd = _to_pytorch_ssd_keys(source)
    assert "base_net.14.conv.3.weight" in sd and "extras.0.conv.7.running_mean" in sd
    path = tmp_path / "mb2-ssd-lite-mp-0_686.pth"
    torch.save(sd, path)
    model = create_model("mb2-ssd-lite", 4, image_size=96).eval()
    report = load_weights(model, path)
    # the classification heads' last convs depend on the class count: re-initialised
    assert sorted({k.rsplit(".", 1)[0] for k in report.reinitialized}) == [
        "classification_headers.0.3", "classification_headers.1.3", "classification_headers.2.3",
        "classification_headers.3.3", "classification_headers.4.3", "classification_headers.5",
    ]
    assert "re-initialised (shape differs)" in str(report)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(source.extract_features(x), model.extract_features(x)):
            _assert_same(a, b)
        _assert_same(source(x)[1], model(x)[1])  # regression heads loaded too
    assert model.classification_headers[5].bias.abs().sum() == 0  # fresh head init


def test_pytorch_ssd_vgg_checkpoint_keys_match_directly():
    source = create_model("vgg16-ssd", 21, conv4_3_norm="l2norm")  # pytorch-ssd's VGG before Sep 2018
    sd = source.state_dict()
    for key in ("base_net.31.weight", "source_layer_add_ons.0.scale", "extras.3.2.weight",
                "classification_headers.5.weight", "regression_headers.0.bias"):
        assert key in sd  # pytorch-ssd's vgg16-ssd-mp-0_7726.pth names
    sd["source_layer_add_ons.0.scale"] = torch.full((512,), 7.0)
    model = create_model("vgg16-ssd", 21, conv4_3_norm="l2norm")
    report = load_pretrained_ssd(model, {f"module.{k}": v for k, v in sd.items()})  # DataParallel prefix
    assert not report.reinitialized and not report.not_in_file and len(report.loaded) == len(sd)
    assert torch.equal(model.source_layer_add_ons[0].scale, torch.full((512,), 7.0))


def test_ssdfast_checkpoint_as_pretrained(tmp_path):
    source = create_model("mb1-ssd-lite", 3, image_size=64)
    path = tmp_path / "mb1.pth"
    save_checkpoint(path, source, ["BACKGROUND", "a", "b"])
    model = create_model("mb1-ssd-lite", 6, image_size=64)
    report = load_weights(model, path)
    assert report.reinitialized and all(k.startswith("classification_headers.") for k in report.reinitialized)
    assert torch.equal(model.base_net[3][0].weight, source.base_net[3][0].weight)
    assert "ssdfast checkpoint of 'mb1-ssd-lite'" in report.notes
    with pytest.raises(ValueError, match=f"^--pretrained-ssd {path}: .*ssdfast checkpoint of 'mb1-ssd-lite', "
                                         "the model is 'mb1-ssd'"):
        load_weights(create_model("mb1-ssd", 6, image_size=64), path, flag="--pretrained-ssd")
    # the contents alone (no checkpoint said): its network is still named, from its keys
    with pytest.raises(ValueError, match=r"the file is a pytorch-ssd mb1-ssd-lite; the model is mb1-ssd"):
        load_pretrained_ssd(create_model("mb1-ssd", 6, image_size=64), torch.load(path, weights_only=True))


def test_base_net_from_a_whole_detector():
    source = create_model("mb2-ssd-lite", 5, image_size=64)
    model = create_model("mb2-ssd-lite", 3, image_size=64)
    report = load_base_net(model, _to_pytorch_ssd_keys(source))  # a pytorch-ssd SSD as --base-net
    assert report.ignored and all(not k.startswith("base_net.") for k in report.ignored)
    assert torch.equal(model.base_net[14].conv[1][0].weight, source.base_net[14].conv[1][0].weight)
    assert not torch.equal(model.extras[0].conv[0][0].weight, source.extras[0].conv[0][0].weight)
