"""Which memory format trains each network faster here: one training step in NCHW vs channels-last,
and whether ``ssdfast-train``'s own quick measurement picks the faster one.

    python -m benchmarks.memory_format                       # CPU, every network, batch 4
    python -m benchmarks.memory_format --networks vgg16-ssd,mb1-ssd --batch 8 --rounds 7
    python -m benchmarks.memory_format --device cuda --amp   # on a GPU

Prints a Markdown table: the step's milliseconds in each layout (medians of interleaved rounds in one
process, so both layouts see the same machine) and the layout ``ssdfast-train`` picks without
``--channels-last`` (:func:`ssdfast.engine.memory_format.measure_memory_format`: a few forward and
backward passes of 2 images before training), flagged when it is not the faster one. ``--save``
writes it to ``benchmarks/results/memory-format-<machine>.md``.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # `python benchmarks/memory_format.py`: run as the module it is
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import torch

from . import train_cases
from .timing import fmt_ms, time_contenders

__all__ = ["memory_format_table", "main"]


def memory_format_table(networks: list[str], batch: int, device: str = "cpu", amp: bool = False,
                        rounds: int = 5) -> str:
    """The Markdown table of one training step per network in both layouts."""
    from ssdfast.engine.memory_format import measure_memory_format
    from ssdfast.models import create_model

    rows = [
        f"One training step (forward, MultiBoxLoss, backward, fused SGD) at batch {batch}, 81 classes, on {device}"
        f"{' with AMP' if amp else ''}: NCHW vs channels-last, medians of {rounds} interleaved rounds.",
        "",
        "| network (px) | NCHW ms | channels-last ms | channels-last speed-up | faster | ssdfast-train picks |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in networks:
        size = train_cases.image_size_of(name)
        data = train_cases.make_batch(batch, size, seed=0, device=device)
        contenders = {
            layout: train_cases.ssdfast_step(name, data, device=device, amp=amp, channels_last=cl, backends=("native",),
                                             image_size=size)["native"]
            for layout, cl in (("nchw", False), ("channels-last", True))
        }
        t = time_contenders(contenders, rounds=rounds, warmup=1, device=device)
        faster = "channels-last" if t["channels-last"] < t["nchw"] else "NCHW"
        model = create_model(name, 81, image_size=size, **train_cases.TWIN_OPTIONS.get(name, {})).to(device)
        picked = measure_memory_format(model, size, torch.device(device),
                                       amp_dtype=train_cases.amp_dtype_of(device, amp)).channels_last
        default = "channels-last" if picked else "NCHW"
        mark = "" if default == faster else " (not the faster here)"
        rows.append(f"| {name} ({size}) | {fmt_ms(t['nchw'])} | {fmt_ms(t['channels-last'])} | "
                    f"{t['nchw'] / t['channels-last']:.2f}x | {faster} | {default}{mark} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_format", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--networks", default=None, help="comma-separated networks (default: all)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per network (default 5)")
    parser.add_argument("--amp", action="store_true", help="autocast (float16 on cuda, bfloat16 on cpu)")
    parser.add_argument("--save", action="store_true",
                        help="also write benchmarks/results/memory-format-<machine>.md")
    args = parser.parse_args(argv)
    from .run import machine_name

    networks = args.networks.split(",") if args.networks else train_cases.all_networks()
    table = memory_format_table([n.strip() for n in networks], args.batch, args.device, args.amp, args.rounds)
    machine = machine_name(args.device)
    text = (f"# Training memory format on {machine}\n\ntorch {torch.__version__}, {torch.get_num_threads()} threads."
            f"\n\n{table}\n")
    print(text)
    if args.save:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"memory-format-{machine}.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
