"""Small SSDs with weights at a trained network's scale, for the export tests.

A freshly built SSD outputs almost constant logits, so comparing its export with PyTorch would
prove little; random weights with BatchNorm statistics left at their defaults make a network so
sensitive that float rounding changes its outputs by more than the 1e-4 being checked. So: random
conv weights rescaled layer by layer on real images until each layer's output has unit spread
(LSUV), BatchNorm near identity, and the heads scaled to logits of std ~2 and offsets of std ~1.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ssdfast.export.inputs import prepare_inputs, sample_images
from ssdfast.models import WIDTH_MULT_NETS, create_model

# Networks with a width multiplier (WIDTH_MULT_NETS) are exported at width 0.25 to keep the tests fast.
CLASS_NAMES = ["BACKGROUND", "cat", "dog"]


def calibrate(model: nn.Module, images: torch.Tensor, seed: int = 0, logit_std: float = 2.0,
              loc_std: float = 1.0) -> nn.Module:
    """Give ``model`` random weights with well-scaled activations (in place); returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    hooks = []

    def unit_std(mod: nn.Module, inputs, out):
        s = float(out.std()) + 1e-6
        mod.weight.div_(s)
        if mod.bias is not None:
            mod.bias.div_(s)
        return out / s

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                hooks.append(mod.register_forward_hook(unit_std))
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
        model.eval()
        model(images)
        for h in hooks:
            h.remove()
        confidences, locations = model(images)
        for heads, out, target in ((model.classification_headers, confidences, logit_std),
                                   (model.regression_headers, locations, loc_std)):
            k = target / max(float(out.std()), 1e-6)
            for head in heads:
                conv = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1]
                conv.weight.mul_(k)
                if conv.bias is not None:
                    conv.bias.mul_(k)
    assert math.isfinite(float(confidences.std()))
    return model


def make_model(name: str, image_size: int | None = None, num_classes: int = 3, seed: int = 0,
               **options: str) -> nn.Module:
    """``create_model(name, ..., **options)`` with calibrated random weights (width 0.25 where supported)."""
    kwargs = {"width_mult": 0.25} if name in WIDTH_MULT_NETS else {}
    model = create_model(name, num_classes, image_size=image_size, **kwargs, **options)
    images = prepare_inputs(sample_images(2, (160, 200), seed=seed + 100), model.config)[0]
    return calibrate(model, images, seed=seed)
