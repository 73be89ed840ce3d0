"""Training-step contenders: ssdfast (native ops / reference ops) vs torchvision's SSD, same batch.

One contender is one optimizer step: forward, loss, backward, SGD step (no host sync, no
``loss.item()``). Shared by ``test_bench_e2e.py`` (pytest-benchmark) and ``run.py`` (the table).

- ``native``: an ssdfast network + :class:`ssdfast.loss.MultiBoxLoss` with the compiled ops;
- ``reference``: the same network, model and optimizer, with ``ssdfast.ops`` switched to its
  pure-PyTorch reference (``ssdfast.ops.wrappers._BACKEND``, restored after each call);
- ``torchvision``: ``ssd300_vgg16`` / ``ssdlite320_mobilenet_v3_large`` (``weights=None,
  weights_backbone=None``) in training mode, given the same images (a list of ``[3, S, S]`` float
  images in [0, 1]) and the same boxes in pixels; its own transform normalizes them. In NCHW, as
  torchvision's detection reference scripts train it;
- ``torchvision-cl``: the same model and images in channels_last, what a user who converts it by
  hand gets.

The ssdfast side runs as ``ssdfast-train`` does by default: in the memory format it measures faster
for the network on this machine (:func:`ssdfast.engine.memory_format.measure_memory_format`;
``channels_last=True/False`` forces one) and with fused SGD (:func:`ssdfast.engine.optim.make_sgd`);
torchvision gets
``torch.optim.SGD``'s default implementation, as in its reference scripts.

The ssdfast networks take the batch already normalized (the data pipeline's output), so their step
starts one normalization later than torchvision's; that normalization costs < 1% of a step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from ssdfast.ops import wrappers

__all__ = [
    "QUICK_NETWORKS",
    "TORCHVISION_TWINS",
    "IMAGE_SIZES",
    "TrainBatch",
    "ops_backend",
    "make_batch",
    "train_case",
    "all_networks",
]

#: Networks of ``--quick``.
QUICK_NETWORKS = ("vgg16-ssd", "mb3-large-ssd-lite", "mb2-ssd-lite")

#: ssdfast network -> torchvision builder name of its counterpart.
TORCHVISION_TWINS = {"vgg16-ssd": "ssd300_vgg16", "mb3-large-ssd-lite": "ssdlite320_mobilenet_v3_large"}
#: The ssdfast variant that is its twin's network (torchvision's SSD300 has an L2Norm at conv4_3, its
#: SSDLite torchvision's MobileNetV3), used for these names so the comparisons are like for like.
TWIN_OPTIONS = {"vgg16-ssd": {"conv4_3_norm": "l2norm"}, "mb3-large-ssd-lite": {"backbone": "torchvision"}}

#: Image side per network where it differs from the network's default (the torchvision twin's size).
IMAGE_SIZES = {"mb3-large-ssd-lite": 320}


def all_networks() -> list[str]:
    """Every network name of ``ssdfast.models``."""
    from ssdfast.models import list_models

    return list_models()


def image_size_of(name: str) -> int:
    """Side of the square training images of network ``name``."""
    from ssdfast.models import DEFAULT_IMAGE_SIZES

    return IMAGE_SIZES.get(name, DEFAULT_IMAGE_SIZES[name])


@contextlib.contextmanager
def ops_backend(name: str) -> Iterator[None]:
    """Run ``ssdfast.ops`` on backend ``name`` ("native" / "reference") inside the block."""
    wrappers.backend()  # resolve the default first (loads the extension when it is there)
    previous = wrappers._BACKEND
    wrappers._BACKEND = name
    try:
        yield
    finally:
        wrappers._BACKEND = previous


def native_available() -> bool:
    """Whether the compiled ssdfast kernels are loaded (else only the reference contender runs)."""
    return wrappers.backend() == "native"


@dataclass
class TrainBatch:
    """One synthetic batch, in both APIs.

    Attributes:
        images01: ``[B, 3, S, S]`` float in [0, 1].
        gt_boxes: ``[B, G, 4]`` normalized xyxy, padded (padding label -1).
        gt_labels: ``[B, G]`` int64, 1..C-1 or -1.
    """

    images01: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.images01.shape[0])

    def normalized(self, mean, std) -> Tensor:
        """The images as ssdfast networks take them: ``(x - mean) / std``."""
        m = torch.tensor(mean, dtype=torch.float32, device=self.images01.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=self.images01.device).view(1, 3, 1, 1)
        return (self.images01 - m) / s

    def torchvision_inputs(self) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """``(images, targets)`` for a torchvision detection model: boxes in pixels, padding dropped."""
        size = self.images01.shape[-1]
        images = list(self.images01.unbind(0))
        targets = []
        for boxes, labels in zip(self.gt_boxes, self.gt_labels):
            keep = labels >= 0
            targets.append({"boxes": boxes[keep] * size, "labels": labels[keep]})
        return images, targets


def make_batch(batch_size: int, image_size: int, num_classes: int = 81, max_gt: int = 8, seed: int = 0,
               device: str = "cpu") -> TrainBatch:
    """Random images and 1..``max_gt`` random boxes per image (normalized xyxy, 2%..60% of the side)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=g)
    xy = torch.rand(batch_size, max_gt, 2, generator=g) * 0.6
    wh = torch.rand(batch_size, max_gt, 2, generator=g) * 0.38 + 0.02
    boxes = torch.cat((xy, xy + wh), -1).clamp(0, 1)
    labels = torch.randint(1, num_classes, (batch_size, max_gt), generator=g)
    counts = torch.randint(1, max_gt + 1, (batch_size,), generator=g)
    labels[torch.arange(max_gt)[None, :] >= counts[:, None]] = -1
    return TrainBatch(images.to(device), boxes.to(device), labels.to(device))


#: pytorch-ssd's SGD settings, with a small learning rate so repeated steps on one batch stay finite.
SGD_OPTIONS = {"lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4}


def _sgd(model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of a contender: ssdfast's as ``ssdfast-train`` builds it (fused when it can),
    torchvision's as its reference scripts do (``torch.optim.SGD``'s default implementation)."""
    if fused:
        from ssdfast.engine.optim import make_sgd

        return make_sgd(model.parameters(), **SGD_OPTIONS)
    return torch.optim.SGD(model.parameters(), **SGD_OPTIONS)


def _step_fn(loss_fn: Callable[[], Tensor], optimizer: torch.optim.Optimizer, device: str,
             amp: bool) -> Callable[[], None]:
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=amp)

    def step() -> None:
        # time_contenders runs in inference mode; a training step needs autograd back.
        with torch.inference_mode(False), torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, enabled=amp):
                loss = loss_fn()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def ssdfast_step(name: str, batch: TrainBatch, *, num_classes: int = 81, device: str = "cpu", amp: bool = False,
                 channels_last: bool | None = None, backends: tuple[str, ...] = ("native", "reference"),
                 image_size: int | None = None) -> dict[str, Callable[[], None]]:
    """``{backend: step}`` for ssdfast network ``name``: one model and optimizer, ops switched per call;
    ``channels_last`` None: the layout ``ssdfast-train`` measures faster for the network here."""
    from ssdfast.engine.memory_format import layout, measure_memory_format
    from ssdfast.loss import MultiBoxLoss
    from ssdfast.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes, image_size=image_size or int(batch.images01.shape[-1]),
                         **TWIN_OPTIONS.get(name, {})).to(device).train()
    if channels_last is None:
        channels_last = measure_memory_format(model, model.config.image_size, torch.device(device),
                                              amp_dtype=amp_dtype_of(device, amp)).channels_last
    memory_format = layout(channels_last)
    model = model.to(memory_format=memory_format)
    criterion = MultiBoxLoss(model.priors, variances=model.config.variances).to(device)
    images = batch.normalized(model.config.mean, model.config.std).contiguous(memory_format=memory_format)
    optimizer = _sgd(model, fused=True)

    def loss() -> Tensor:
        confidences, locations = model(images)
        regression, classification = criterion(confidences, locations, batch.gt_boxes, batch.gt_labels)
        return regression + classification

    out: dict[str, Callable[[], None]] = {}
    for backend in backends:
        if backend == "native" and not native_available():
            continue
        step = _step_fn(loss, optimizer, device, amp)

        def run(step: Callable[[], None] = step, backend: str = backend) -> None:
            with ops_backend(backend):
                step()

        out[backend] = run
    return out


def amp_dtype_of(device: str, amp: bool) -> torch.dtype | None:
    """The autocast dtype ``ssdfast-train --amp`` uses on ``device`` (None without ``amp``)."""
    from ssdfast.engine import TrainConfig
    from ssdfast.engine.optim import amp_dtype

    return amp_dtype(TrainConfig(amp="auto" if amp else None), torch.device(device))


def torchvision_model(builder: str, num_classes: int = 81) -> torch.nn.Module:
    """torchvision's SSD builder ``builder`` with random weights (no download)."""
    from torchvision.models import detection

    torch.manual_seed(0)
    return getattr(detection, builder)(weights=None, weights_backbone=None, num_classes=num_classes)


def torchvision_step(builder: str, batch: TrainBatch, *, num_classes: int = 81, device: str = "cpu",
                     amp: bool = False, channels_last: bool = False) -> Callable[[], None]:
    """One training step of torchvision's ``builder`` on ``batch`` (its losses summed)."""
    model = torchvision_model(builder, num_classes).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, targets = batch.torchvision_inputs()
    optimizer = _sgd(model)

    def loss() -> Tensor:
        losses = model(images, targets)
        return losses["bbox_regression"] + losses["classification"]

    return _step_fn(loss, optimizer, device, amp)


def train_case(name: str, batch_size: int, *, num_classes: int = 81, device: str = "cpu", amp: bool = False,
               channels_last: bool | None = None, torchvision: bool = True,
               seed: int = 0) -> dict[str, Callable[[], None]]:
    """Contenders for one training step of network ``name``: native, reference (in ``channels_last``:
    None is ``ssdfast-train``'s layout) and (when it has a torchvision counterpart and ``torchvision``)
    torchvision in NCHW and in channels_last, all on the same batch."""
    size = image_size_of(name)
    batch = make_batch(batch_size, size, num_classes, seed=seed, device=device)
    out = ssdfast_step(name, batch, num_classes=num_classes, device=device, amp=amp, channels_last=channels_last,
                       image_size=size)
    if torchvision and name in TORCHVISION_TWINS:
        builder = TORCHVISION_TWINS[name]
        out["torchvision"] = torchvision_step(builder, batch, num_classes=num_classes, device=device, amp=amp)
        out["torchvision-cl"] = torchvision_step(builder, batch, num_classes=num_classes, device=device,
                                                 amp=amp, channels_last=True)
    return out


def pipeline_images_per_s(batch_size: int, *, image_size: int = 300, num_images: int = 64, num_workers: int = 0,
                          source_size: int = 500, network: str = "mb2-ssd-lite") -> float:
    """Images/s of the training data pipeline: JPEG decode + ``TrainTransform`` + collate, through
    ``make_loader``, on a generated VOC set (``num_images`` JPEGs of ``source_size`` px), one epoch
    after a warm-up batch. Prefers the data developer's ``benchmarks.bench_data`` when it has a
    function for it."""
    import shutil
    import tempfile
    import time

    from ssdfast.data import build_dataset, make_loader
    from ssdfast.data.synthetic import generate
    from ssdfast.data.transforms import TrainTransform
    from ssdfast.models import create_model

    config = create_model(network, 21, image_size=image_size).config
    root = tempfile.mkdtemp(prefix="ssdfast-bench-data-")
    try:
        generate(root, format="voc", num_images=num_images, image_size=source_size, seed=0, num_classes=5)
        dataset = build_dataset("voc", [root], "train", transform=TrainTransform(image_size, config.mean, config.std))
        loader = make_loader(dataset, batch_size, shuffle=True, num_workers=num_workers, drop_last=True)
        it = iter(loader)
        next(it)  # warm-up: workers started, first batch
        count, start = 0, time.perf_counter()
        for images, *_ in it:
            count += int(images.shape[0])
        elapsed = time.perf_counter() - start
        del it, loader
        return count / elapsed if count else float("nan")
    finally:
        shutil.rmtree(root, ignore_errors=True)
