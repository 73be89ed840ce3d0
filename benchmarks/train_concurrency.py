"""Two trainings at once on one machine: the epoch time of one ``ssdfast-train`` run alone and of two
runs started together, and their ratio.

On a machine with C cores, two runs at once can at best take 2x the time of one alone when one run
uses the whole machine (less when one run alone leaves cores idle); much more than 2x means the runs
starve each other (threads spinning on cores the other run needs). Each run is a real
``ssdfast-train`` process on generated VOC data, with its defaults for threads and data workers::

    python -m benchmarks.train_concurrency                       # mb2-ssd-lite, batch 16, 128 images of 300 px
    python -m benchmarks.train_concurrency --out benchmarks/results/train-concurrency.md
    python -m benchmarks.train_concurrency --train-args="--num-workers 2"   # other flags for every run
    python -m benchmarks.train_concurrency --repo /path/to/other/checkout   # another version's ssdfast-train

The time of an epoch is the ``time_s`` of its ``metrics.jsonl`` record; the middle epoch of three is
used, so that both runs of a pair are training during all of it. The CPU time of each run (all its
epochs, start-up and data workers included) shows work wasted under contention (spinning threads)
whatever else runs on the machine; the load average before each case is printed with the table:
measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["generate_data", "run_trainings", "main"]

REPO = Path(__file__).resolve().parents[1]


def generate_data(root: Path, num_images: int, image_size: int) -> Path:
    """A synthetic VOC set of ``num_images`` in ``root``, all of them training images (no test split:
    no validation, in any version of ``ssdfast-train``)."""
    from ssdfast.data.synthetic import generate

    generate(root, format="voc", num_images=num_images, image_size=image_size, seed=0, num_classes=3)
    main = root / "ImageSets" / "Main"
    ids = [line for name in ("trainval.txt", "test.txt") for line in (main / name).read_text().split()]
    (main / "trainval.txt").write_text("\n".join(ids) + "\n")
    (main / "test.txt").unlink()
    return root


def _command(data: Path, folder: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "ssdfast.cli.train", "--dataset-type", "voc", "--datasets", str(data),
            "--net", args.net, "--batch-size", str(args.batch_size),
            "--num-epochs", str(args.epochs), "--device", "cpu", "--lr", "0.01", "--debug-steps", "1000",
            "--model-dir", str(folder), *shlex.split(args.train_args)]


def _epoch_times(folder: Path) -> list[float]:
    from ssdfast.engine.run_logs import read_metrics

    return [float(r["time_s"]) for r in read_metrics(folder / "metrics.jsonl") if r.get("kind") == "epoch"]


def run_trainings(count: int, data: Path, work: Path, args: argparse.Namespace) -> tuple[list[float], float]:
    """Start ``count`` trainings together; returns the measured epoch's time of each (seconds) and the
    CPU time (user + system, data workers included) the runs used per run, in all."""
    repo = Path(args.repo).resolve()
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(item.split("=", 1) for item in args.env)
    procs = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i in range(count):
        folder = work / f"run-{count}-{i}"
        log = open(work / f"run-{count}-{i}.stderr", "w")
        procs.append((folder, log, subprocess.Popen(_command(data, folder, args), env=env, stdout=log,
                                                    stderr=subprocess.STDOUT, cwd=repo)))
    times = []
    for folder, log, proc in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            tail = Path(log.name).read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"ssdfast-train exited {rc}:\n" + "\n".join(tail))
        epochs = _epoch_times(folder)
        times.append(epochs[len(epochs) // 2])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return times, cpu / count


def _runnable() -> int:
    """Processes runnable right now, besides this one (Linux: /proc/loadavg's 4th field); -1 elsewhere."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_concurrency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="mb2-ssd-lite")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=128, help="training images (generated)")
    parser.add_argument("--image-size", type=int, default=300, help="side of the generated images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the middle one is measured)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each case this many times (median)")
    parser.add_argument("--train-args", default="", help="more ssdfast-train flags for every run, as one string")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for every run, e.g. OMP_NUM_THREADS=2 (repeatable)")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose ssdfast-train runs (default: this one)")
    parser.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ssdfast-concurrency-") as tmp:
        work = Path(tmp)
        data = generate_data(work / "data", args.images, args.image_size)
        alone, together, cpu_alone, cpu_together, loads = [], [], [], [], []
        for _ in range(args.repeats):
            loads.append(_runnable())
            times, cpu = run_trainings(1, data, work, args)
            alone += times
            cpu_alone.append(cpu)
            loads.append(_runnable())
            times, cpu = run_trainings(2, data, work, args)
            together.append(statistics.mean(times))
            cpu_together.append(cpu)
        one, two = statistics.median(alone), statistics.median(together)

    from ssdfast.threads import available_cores, default_num_workers

    flags = f" {args.train_args}" if args.train_args else ""
    which = "" if Path(args.repo).resolve() == REPO else f" from {args.repo}"
    which += "".join(f", {item}" for item in args.env)
    table = "\n".join([
        f"### Two trainings at once ({time.strftime('%Y-%m-%d %H:%M')}, {available_cores()} cores, "
        f"load average before {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; other processes runnable when each "
        f"case started: {', '.join(str(x) for x in loads)})",
        "",
        f"`ssdfast-train --net {args.net} --batch-size {args.batch_size}{flags}`{which} on {args.images} "
        f"generated images of {args.image_size} px (this checkout sizes {default_num_workers()} data worker(s) "
        f"by default); seconds per epoch (the middle epoch of {args.epochs}, median of {args.repeats}):",
        "",
        "| one run alone | two runs at once (each) | ratio | CPU s per run, alone | CPU s per run, two at once |",
        "|---:|---:|---:|---:|---:|",
        f"| {one:.1f} | {two:.1f} | {two / one:.2f}x | {statistics.median(cpu_alone):.0f} | "
        f"{statistics.median(cpu_together):.0f} |",
        "",
    ])
    print(table)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
