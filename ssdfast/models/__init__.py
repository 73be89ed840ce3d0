"""SSD and SSD-Lite networks with pytorch-ssd's names, layouts and priors.

>>> from ssdfast.models import create_model, list_models
>>> model = create_model("mb2-ssd-lite", num_classes=21)             # 300 x 300, 3000 priors
>>> confidences, locations = model(images)                            # [B, 3000, 21], [B, 3000, 4]

A name is the network pytorch-ssd (qfgaohao's, and dusty-nv's for jetson-inference) builds under it,
so its ``.pth`` files load and give its outputs:

==================  ==========================================================================
name                network (default options first; see :func:`model_options`)
==================  ==========================================================================
vgg16-ssd           SSD300 on VGG16, 8732 priors; ``conv4_3_norm="batchnorm"`` (pytorch-ssd's
                    today) or ``"l2norm"`` (the SSD paper's, pytorch-ssd's before Sep 2018)
vgg16-ssd512        SSD512 on VGG16, 24564 priors (not in pytorch-ssd); same ``conv4_3_norm``
mb1-ssd             MobileNetV1 SSD, 3000 priors
mb1-ssd-lite        MobileNetV1 SSD-Lite (separable heads and extras, no BatchNorm)
mb2-ssd-lite        MobileNetV2 SSD-Lite; ``width_mult``; ``backbone="pytorch-ssd"`` (its channel
                    rounding) or ``"torchvision"`` (torchvision's; the same network at width 1)
mb3-large-ssd-lite  pytorch-ssd's MobileNetV3-Large SSD-Lite; ``backbone="torchvision"``: on
                    torchvision's MobileNetV3-Large (its ImageNet weights load); ``width_mult``
mb3-small-ssd-lite  the same for MobileNetV3-Small
==================  ==========================================================================

``create_model(name, num_classes, width_mult=1.0, image_size=None, **options)`` builds any network
of :func:`list_models` at its default size or another one: the feature-map sizes are read off the
network at that size and the priors follow (:func:`ssdfast.priors.scale_prior_spec`). The options
are stored in ``model.config`` (so checkpoints rebuild the same variant: :func:`model_from_config`).
Weights (state dicts: reading files is :mod:`ssdfast.model_files`'s): :func:`load_base_net`
(ImageNet backbones, torchvision or pytorch-ssd layouts), :func:`load_pretrained_ssd` (a whole
pytorch-ssd or ssdfast detector, any class count) and :func:`model_from_pytorch_ssd` (a pytorch-ssd
state dict as it is; :func:`identify_pytorch_ssd` tells its network from its keys and shapes).

The code lives in named modules (this file only re-exports): :mod:`.registry` (names, builders,
:func:`create_model`), :mod:`.ssd`, :mod:`.vgg`, :mod:`.mobilenet` (the networks), :mod:`.identify`,
:mod:`.state_dicts`, :mod:`.weights`, :mod:`.pytorch_ssd` (weights), :mod:`.fuse` (inference copies).
"""
from __future__ import annotations

from .identify import describe_network, identify_pytorch_ssd
from .pytorch_ssd import model_from_pytorch_ssd
from .registry import (
    DEFAULT_IMAGE_SIZES,
    MODEL_BUILDERS,
    MODEL_OPTIONS,
    canonical_name,
    create_model,
    list_models,
    model_from_config,
    model_options,
)
from .ssd import BACKBONES, CONV4_3_NORMS, SSD, WIDTH_MULT_NETS, SSDConfig
from .state_dicts import state_dict_of
from .weights import LoadReport, load_base_net, load_pretrained_ssd

__all__ = [
    "SSD",
    "SSDConfig",
    "MODEL_BUILDERS",
    "MODEL_OPTIONS",
    "DEFAULT_IMAGE_SIZES",
    "CONV4_3_NORMS",
    "BACKBONES",
    "WIDTH_MULT_NETS",
    "list_models",
    "model_options",
    "canonical_name",
    "create_model",
    "model_from_config",
    "load_base_net",
    "load_pretrained_ssd",
    "LoadReport",
    "model_from_pytorch_ssd",
    "identify_pytorch_ssd",
    "describe_network",
    "state_dict_of",
]
