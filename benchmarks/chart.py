"""PNG bar chart of the speedups in a benchmark results Markdown file.

    python -m benchmarks.chart benchmarks/results/<machine>.md     # writes <machine>.png beside it

Every table cell of the form ``1.7x`` under a column whose header reads ``A vs B`` is one bar
(``A`` is that many times faster than ``B``), labelled with its section, its row and the column.
Bars are drawn on a log scale around 1x, grouped and coloured by section.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass

__all__ = ["Speedup", "parse_speedups", "write_chart"]

_RATIO = re.compile(r"^\s*\**\s*([0-9]+(?:\.[0-9]+)?)\s*x\b")


@dataclass(frozen=True)
class Speedup:
    section: str
    row: str
    column: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.row} — {self.column}"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_speedups(markdown: str) -> list[Speedup]:
    """Every ``Nx`` cell under an ``A vs B`` column of every table, in document order."""
    out: list[Speedup] = []
    section = ""
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if all(set(c) <= set("-: ") for c in cells):  # the |---| separator
            continue
        for name, cell in zip(header, cells):
            m = _RATIO.match(cell)
            if " vs " in name and m:
                out.append(Speedup(section, re.sub(r"\s+", " ", cells[0]), name, float(m.group(1))))
    return out


def write_chart(speedups: list[Speedup], path: str, title: str = "ssdfast speedups") -> str | None:
    """Horizontal bars, one per speedup, log x axis, a line at 1x. Returns ``path`` (None when
    there is nothing to draw)."""
    if not speedups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sections = list(dict.fromkeys(s.section for s in speedups))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {name: colours[i % len(colours)] for i, name in enumerate(sections)}
    height = max(2.5, 1.2 + 0.28 * len(speedups))
    fig, ax = plt.subplots(figsize=(10, height))
    ys = list(range(len(speedups)))[::-1]
    values = [max(s.value, 1e-3) for s in speedups]
    ax.barh(ys, values, color=[colour[s.section] for s in speedups], left=0)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [f"{s.section}: {s.label}" for s in speedups], fontsize=7)
    for y, s in zip(ys, speedups):
        ax.text(max(s.value, 1e-3), y, f" {s.value:.2f}x", va="center", fontsize=7)
    lo, hi = min(values + [1.0]) / 1.5, max(values + [1.0]) * 2.5
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if lo <= t <= hi]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("speedup (x, log scale; > 1 means the first named is faster)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def chart_for(markdown_path: str, title: str | None = None) -> str | None:
    """Write ``<markdown_path without .md>.png`` from the speedups in that file."""
    with open(markdown_path) as f:
        text = f.read()
    if title is None:
        first = text.splitlines()[0] if text else ""
        title = first.lstrip("# ").strip() or "ssdfast speedups"
    return write_chart(parse_speedups(text), os.path.splitext(markdown_path)[0] + ".png", title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("markdown", help="a results file written by python -m benchmarks.run")
    args = parser.parse_args(argv)
    out = chart_for(args.markdown)
    print(f"wrote {out}" if out else "no speedups found", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
