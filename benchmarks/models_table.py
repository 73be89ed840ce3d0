"""The networks table of the README: parameters, GFLOPs, priors, CPU forward+loss time.

    python -m benchmarks.models_table [--batch-size 8] [--classes 21]

GFLOPs are 2 x multiply-adds counted by torch.utils.flop_counter at batch 1 and the network's
default input size; the time is the median of a few forward + MultiBoxLoss passes (no grad).
Every network with its default options (pytorch-ssd's), then the variants (options of their own).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssdfast.loss import MultiBoxLoss
from ssdfast.models import create_model, list_models, model_options


def network_cases() -> list[tuple[str, dict[str, str]]]:
    """``(name, options)``: each network as pytorch-ssd builds it, then each non-default option value."""
    cases: list[tuple[str, dict[str, str]]] = [(name, {}) for name in list_models()]
    for name in list_models():
        if name == "mb2-ssd-lite":
            continue  # its backbones differ only at width != 1: the same network here
        for option, values in model_options(name).items():
            cases += [(name, {option: v}) for v in values[1:]]
    return cases


def network_rows(batch_size: int = 8, num_classes: int = 21, repeats: int = 3) -> list[str]:
    rows = [
        f"| network | options | input | params | GFLOPs | priors | CPU forward+loss, batch {batch_size} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    g = torch.Generator().manual_seed(0)
    for name, options in network_cases():
        model = create_model(name, num_classes, **options).eval()
        size = model.config.image_size
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, size, size, generator=g))
        criterion = MultiBoxLoss(model.priors)
        images = torch.randn(batch_size, 3, size, size, generator=g)
        gt_boxes = torch.rand(batch_size, 4, 4, generator=g) * 0.5
        gt_boxes[..., 2:] += gt_boxes[..., :2] + 0.1
        gt_labels = torch.randint(1, num_classes, (batch_size, 4), generator=g)
        times = []
        with torch.no_grad():
            model(images[:1])  # warm-up
            for _ in range(repeats):
                t = time.perf_counter()
                conf, loc = model(images)
                criterion(conf, loc, gt_boxes.clamp(max=1), gt_labels)
                times.append(time.perf_counter() - t)
        rows.append(
            f"| `{name}` | {', '.join(f'{k}={v}' for k, v in model.config.options.items()) or '-'} | {size} | "
            f"{params / 1e6:.2f} M | {counter.get_total_flops() / 1e9:.2f} | "
            f"{model.priors.shape[0]} | {statistics.median(times) * 1e3:.0f} ms |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the timed forward+loss")
    parser.add_argument("--classes", type=int, default=21, help="number of classes, background included")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per network (median)")
    args = parser.parse_args(argv)
    print("\n".join(network_rows(args.batch_size, args.classes, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
