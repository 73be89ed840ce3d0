"""Training input pipeline throughput: images/s of TrainTransform + make_loader on generated VOC data.

Run as a script to print the pipeline's images/s and, for comparison, the training step's images/s
of a network (forward + MultiBoxLoss + backward + SGD step on random batches): the pipeline keeps up
with training when its number is the larger one. Both use the same CPU cores, so on a small machine
measure them one after the other, as here::

    python benchmarks/bench_data.py                        # 300 px, batch 32, 2 workers, mb2-ssd-lite
    python benchmarks/bench_data.py --root data/VOC2007 --size 300 --net none
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

__all__ = ["pipeline_images_per_second", "train_step_images_per_second"]

_MEAN = (127 / 255,) * 3  # pytorch-ssd's normalization, (x - 127) / 128
_STD = (128 / 255,) * 3


def pipeline_images_per_second(
    root: str,
    size: int = 300,
    batch_size: int = 32,
    num_workers: int = 2,
    seconds: float = 10.0,
    dataset_type: str = "voc",
) -> float:
    """Images/s delivered by the training pipeline on the dataset at ``root``.

    Decode (torchvision.io) + :class:`~ssdfast.data.transforms.TrainTransform` (photometric, zoom-out,
    IoU crop, flip, resize to ``size``, normalize) + :func:`~ssdfast.data.collate_detection` through
    :func:`~ssdfast.data.make_loader`; epochs repeat until ``seconds`` have passed. The first batch
    (worker start-up) is not counted.
    """
    from ssdfast.data import build_dataset, make_loader
    from ssdfast.data.transforms import TrainTransform

    dataset = build_dataset(dataset_type, [root], split="train", transform=TrainTransform(size, _MEAN, _STD))
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True)
    threads = torch.get_num_threads()
    if num_workers == 0:
        torch.set_num_threads(1)  # as in a worker
    try:
        images = 0
        start = None
        while True:
            for batch in loader:
                if start is None:  # warm-up batch: workers starting
                    start = time.perf_counter()
                    continue
                images += int(batch[0].shape[0])
                if time.perf_counter() - start >= seconds:
                    return images / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        del loader


def train_step_images_per_second(
    net: str = "mb2-ssd-lite", size: int = 300, batch_size: int = 32, num_classes: int = 6, steps: int = 5
) -> float:
    """Images/s of ``net``'s training step on random batches (forward, MultiBoxLoss, backward, SGD), CPU."""
    from ssdfast.loss import MultiBoxLoss
    from ssdfast.models import create_model

    torch.manual_seed(0)
    model = create_model(net, num_classes, image_size=size)
    model.train()
    criterion = MultiBoxLoss(model.priors)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch_size, 3, size, size)
    xy = torch.rand(batch_size, 3, 2) * 0.6
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(batch_size, 3, 2) * 0.3], -1).clamp(max=1.0)
    labels = torch.randint(1, num_classes, (batch_size, 3))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        confidences, locations = model(images)
        regression, classification = criterion(confidences, locations, boxes, labels)
        (regression + classification).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None,
                        help="VOC root (default: generate synthetic VOC data in a temporary folder)")
    parser.add_argument("--num-images", type=int, default=500, help="images to generate when --root is not given")
    parser.add_argument("--image-size", type=int, default=500, help="long side of generated images (VOC's are ~500 px)")
    parser.add_argument("--size", type=int, default=300, help="network input size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--net", default="mb2-ssd-lite", help="network whose training step to time, or 'none'")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from ssdfast.data.synthetic import generate

            root = os.path.join(tmp, "voc")
            t = time.perf_counter()
            generate(root, "voc", num_images=args.num_images, image_size=args.image_size, seed=0)
            print(f"generated {args.num_images} images of {args.image_size} px in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
        rate = pipeline_images_per_second(root, args.size, args.batch_size, args.num_workers, args.seconds)
    print(f"pipeline: {rate:.1f} images/s ({args.size} px, batch {args.batch_size}, {args.num_workers} workers, "
          f"{os.cpu_count()} CPUs)")
    if args.net != "none":
        step_rate = train_step_images_per_second(args.net, args.size, args.batch_size, steps=args.steps)
        print(f"training step ({args.net}, {torch.get_num_threads()} threads): {step_rate:.1f} images/s")
        print(f"pipeline / training step: {rate / step_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
