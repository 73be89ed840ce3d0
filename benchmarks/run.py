"""Print the ssdfast benchmark tables (Markdown) and save them under benchmarks/results/.

    python -m benchmarks.run --quick            # CPU, a few minutes
    python -m benchmarks.run --section ops      # one section
    python -m benchmarks.run --device cuda      # on a GPU

Sections: ops (each kernel vs its pure-PyTorch reference and the loop SSD users run today).
Every ratio in a table is measured side by side in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

from . import ops_cases
from .timing import fmt_ms, time_contenders


def machine_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{os.cpu_count()}core-{platform.machine()}"


def ops_section(device: str, quick: bool) -> str:
    rows = [
        "| op (size) | native ms | reference ms | today's loop ms | native vs reference | native vs loop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, contenders in ops_cases.all_cases(device).items():
        t = time_contenders(contenders, rounds=3 if quick else 9, device=device)
        other = "loop" if "loop" in t else "torchvision"
        rows.append(
            f"| {name}{' (vs torchvision)' if other == 'torchvision' else ''} | {fmt_ms(t['native'])} | "
            f"{fmt_ms(t['reference'])} | {fmt_ms(t[other])} | {t['reference'] / t['native']:.1f}x | "
            f"{t[other] / t['native']:.1f}x |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


SECTIONS = {"ops": ops_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (CPU, minutes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--output", default=None, help="Markdown file to write (default benchmarks/results/<machine>.md)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    machine = machine_name(args.device)
    parts = [
        f"# ssdfast benchmarks on {machine}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
        f"{', quick' if args.quick else ''}. Times are medians of interleaved rounds in one run.",
    ]
    for name in args.section or list(SECTIONS):
        parts += ["", f"## {name}", "", SECTIONS[name](args.device, args.quick)]
    text = "\n".join(parts) + "\n"
    print(text)
    out = args.output or os.path.join(os.path.dirname(__file__), "results", f"{machine}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
