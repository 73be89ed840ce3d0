"""Print the ssdfast benchmark tables (Markdown); save them only when asked.

    python -m benchmarks.run --quick            # CPU, a few minutes; prints the tables
    python benchmarks/run.py --quick            # the same
    python -m benchmarks.run --section ops      # one section
    python -m benchmarks.run --device cuda      # on a GPU (AMP by default)
    python -m benchmarks.run --quick --save     # also write benchmarks/results/<machine>.md (+ .png)
    python -m benchmarks.run --output my.md     # also write my.md (+ my.png)

The committed results under benchmarks/results/ are only replaced with ``--save``.

Sections:
  ops        each kernel vs its pure-PyTorch reference and the loop SSD users run today
  train      one training step (forward, MultiBoxLoss, backward, SGD) per network: ssdfast with
             native ops vs reference ops vs torchvision's SSD on the same batch
  infer      end to end (uint8 480x640 images -> boxes in pixels), images/s at two batch sizes:
             the ssdfast Detector in each runtime (torch, onnxruntime, openvino) vs torchvision's SSD
             vs the ONNX export called by hand in onnxruntime
  deploy     the mAP of what ships: a trained model, its FP32 export and INT8 files in each CPU runtime,
             with ssdfast's and detectNet's preprocessing
  data       training data pipeline images/s next to the mb2-ssd-lite training step
  coco-eval  COCO evaluation of a generated 5,000-image result set: ssdfast vs pycocotools
Every ratio in a table is measured side by side in the same run. A PNG chart of the speedups is
written beside the Markdown file.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

if __package__ in (None, ""):  # `python benchmarks/run.py`: run as the module it is
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import torch

from . import ops_cases
from .timing import fmt_ms, time_contenders


@dataclass
class Settings:
    """What a section is run with (from the command line)."""

    device: str = "cpu"
    quick: bool = False
    amp: bool = False
    channels_last: bool | None = None  # None: the layout ssdfast-train picks per network and device
    train_batch: int | None = None  # default: 4 quick, 8 CPU, 64 GPU
    infer_batches: tuple[int, ...] | None = None  # default: (1, 32)
    networks: tuple[str, ...] | None = None  # train / infer sections; default: quick's three or all / all four
    work: str | None = None  # deploy section: where the trained models stay (reused); default: a temporary folder


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


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _rounds(s: Settings) -> int:
    return 3 if s.quick else 7


def _time_each_once(contenders: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Median seconds of calls that take seconds: one call per contender per round, interleaved,
    no warm-up or repetition (what ``time_contenders`` adds for short calls)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


def _x(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}x" if a and b else "—"


def _ms(t: float | None) -> str:
    return fmt_ms(t) if t else "—"


def train_section(s: Settings) -> str:
    from . import train_cases

    batch = s.train_batch or (4 if s.quick else 64 if s.device.startswith("cuda") else 8)
    names = s.networks or (train_cases.QUICK_NETWORKS if s.quick else tuple(train_cases.all_networks()))
    layout = {None: "in the memory format `ssdfast-train` measures faster for the network on this machine "
                    "(`python -m benchmarks.memory_format`)",
              True: "channels-last (forced)", False: "NCHW (forced)"}[s.channels_last]
    rows = [
        f"One step (forward, MultiBoxLoss, backward, SGD) at batch {batch}, 81 classes{', AMP' if s.amp else ''}. "
        f"native / reference: the same ssdfast network, as `ssdfast-train` runs it ({layout}, fused SGD), with "
        "`ssdfast.ops` on the compiled kernels or on the pure-PyTorch reference; torchvision: its counterpart "
        "(`weights=None`) on the same images and boxes, in NCHW as its reference scripts train it; "
        "torchvision-cl: the same converted to channels-last by hand.",
        "",
        "| network (px) | native ms | reference ms | torchvision ms | torchvision-cl ms | native images/s "
        "| native vs reference | native vs torchvision | native vs torchvision-cl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        contenders = train_cases.train_case(name, batch, device=s.device, amp=s.amp, channels_last=s.channels_last)
        t = time_contenders(contenders, rounds=_rounds(s), warmup=0, device=s.device)
        native = t.get("native")
        first = native or t["reference"]
        tv = train_cases.TORCHVISION_TWINS.get(name)
        rows.append(
            f"| {name} ({train_cases.image_size_of(name)}){f' vs {tv}' if tv else ''} | {_ms(native)} | "
            f"{_ms(t.get('reference'))} | {_ms(t.get('torchvision'))} | {_ms(t.get('torchvision-cl'))} | "
            f"{batch / first:.1f} | {_x(native, t.get('reference'))} | {_x(native, t.get('torchvision'))} | "
            f"{_x(native, t.get('torchvision-cl'))} |"
        )
        _log(rows[-1])
        del contenders
    return "\n".join(rows)


#: The bars of the inference table: (what, network, batch or None for every batch, contender ratio, at least).
INFER_BARS = (
    ("torch vs torchvision", "mb3-large-ssd-lite", None, 1.3),
    ("torch vs torchvision", "vgg16-ssd", None, 1.1),
    ("fastest vs torchvision", "mb3-large-ssd-lite", 1, 2.0),
    ("fastest vs torchvision", "vgg16-ssd", 1, 1.3),
    ("onnxruntime vs raw", None, None, 0.95),
    ("INT8 vs FP32", "vgg16-ssd", None, 1.5),
    ("INT8 vs FP32", "mb1-ssd", None, 1.5),
    ("INT8 vs FP32", "mb2-ssd-lite", None, 1.25),
)
#: Contender -> its column, in order: the Detector in each runtime (FP32, then INT8), then the others.
_INFER_COLUMNS = {"ssdfast": "torch", "ssdfast-onnxruntime": "onnxruntime", "ssdfast-openvino": "openvino",
                  "ssdfast-onnxruntime-int8": "onnxruntime INT8", "ssdfast-openvino-int8": "openvino INT8",
                  "onnxruntime": "raw onnxruntime", "torchvision": "torchvision", "torchvision-cl": "torchvision-cl"}
#: The Detector's FP32 runtimes (the fastest of them is held to torchvision: INT8 is another model).
_RUNTIMES = ("ssdfast", "ssdfast-onnxruntime", "ssdfast-openvino")
#: The same runtime's INT8 contender of each FP32 one.
_INT8_OF = {"ssdfast-onnxruntime": "ssdfast-onnxruntime-int8", "ssdfast-openvino": "ssdfast-openvino-int8"}


def _infer_bars(name: str, batch: int, ratios: dict[str, float | None]) -> str:
    verdicts = []
    for what, network, at_batch, bar in INFER_BARS:
        value = ratios.get(what)
        if value is None or network not in (None, name) or at_batch not in (None, batch):
            continue
        verdicts.append(f"{what} {'met' if value >= bar else 'MISSED'} ({bar}x)")
    return "; ".join(verdicts) or "—"


def infer_section(s: Settings) -> str:
    from . import infer_cases

    batches = s.infer_batches or (1, 32)
    names = s.networks or tuple(infer_cases.INFER_NETWORKS)
    h, w = infer_cases.ORIGINAL_SIZE
    mode = "AMP" if s.amp else "float32"
    rows = [
        f"End to end from uint8 {h}x{w} images to boxes in pixels, 81 classes, {mode}, "
        f"{torch.get_num_threads()} threads for every contender, `torch.inference_mode`. "
        "torch / onnxruntime / openvino: `Detector` in that runtime (`ssdfast.load_detector`; torch: its "
        "inference copy of the network, as built by default; the others run the network's `jetson` export, "
        "FP32), ssdfast's preprocessing and `ops.ssd_postprocess` around it; raw onnxruntime: the same export "
        "called by hand + `ops.ssd_postprocess`; torchvision: the twin model in eval mode with its own "
        "transform and post-processing, as shipped (NCHW); torchvision-cl: the same converted to channels-last "
        "by hand. Both sides of a pair use torchvision's post-processing settings (networks without a twin: "
        "ssd300_vgg16's) and their heads are calibrated to "
        f"{infer_cases.CANDIDATES_PER_IMAGE} candidates per image (see benchmarks/infer_cases.py). "
        "fastest: the fastest of the Detector's FP32 runtimes. INT8: the Q/DQ file `ssdfast-export --int8` writes "
        "for CPUs (`-int8-cpu.onnx`, calibrated on 16 generated images), in the same runtime; INT8 vs FP32: the "
        "better of the two runtimes' ratios. Bars: "
        + ", ".join(f"{what}{f' ({net}' if net else ''}{f', batch {b}' if b else ''}{')' if net else ''} >= {bar}x"
                    for what, net, b, bar in INFER_BARS) + ".",
        "",
        "| network vs torchvision (batch) | " + " | ".join(f"{c} images/s" for c in _INFER_COLUMNS.values())
        + " | torch vs torchvision | fastest vs torchvision | onnxruntime vs raw onnxruntime | INT8 vs FP32 | bars |",
        "|---|" + "---:|" * (len(_INFER_COLUMNS) + 4) + "---|",
    ]
    for name in names:
        builder, size = infer_cases.INFER_NETWORKS[name]
        for batch in batches:
            contenders = infer_cases.infer_case(name, batch, device=s.device, amp=s.amp)
            # Building the case ran every network once; a batch of seconds needs no extra warm-up call.
            # Small batches take milliseconds: more and longer rounds (~0.5 s each) average out noise.
            small = batch <= 4
            t = time_contenders(contenders, rounds=max(5, _rounds(s)),
                                warmup=1 if small else 0, min_time=0.5 if small else 0.05, device=s.device)
            ips = {k: batch / v for k, v in t.items()}
            fastest = max((k for k in _RUNTIMES if k in ips), key=lambda k: ips[k])
            tv = ips.get("torchvision")
            int8 = {fp32: ips[int8] / ips[fp32] for fp32, int8 in _INT8_OF.items() if fp32 in ips and int8 in ips}
            int8_best = max(int8, key=int8.get) if int8 else None
            ratios = {
                "torch vs torchvision": ips["ssdfast"] / tv if tv else None,
                "fastest vs torchvision": ips[fastest] / tv if tv else None,
                "onnxruntime vs raw": (ips["ssdfast-onnxruntime"] / ips["onnxruntime"]
                                       if "ssdfast-onnxruntime" in ips and "onnxruntime" in ips else None),
                "INT8 vs FP32": int8[int8_best] if int8_best else None,
            }
            cells = [f"{ips[k]:.1f}" if k in ips else "—" for k in _INFER_COLUMNS]
            fastest_cell = "—" if tv is None else f"{ratios['fastest vs torchvision']:.2f}x ({_INFER_COLUMNS[fastest]})"
            twin = f" vs {builder}" if builder else ""
            rows.append(
                f"| {name} ({size}){twin} ({batch}) | " + " | ".join(cells) + " | "
                + " | ".join(["—" if ratios["torch vs torchvision"] is None
                              else f"{ratios['torch vs torchvision']:.2f}x",
                              fastest_cell,
                              "—" if ratios["onnxruntime vs raw"] is None else f"{ratios['onnxruntime vs raw']:.2f}x",
                              "—" if int8_best is None else f"{int8[int8_best]:.2f}x ({_INFER_COLUMNS[int8_best]})",
                              _infer_bars(name, batch, ratios)]) + " |"
            )
            _log(rows[-1])
            del contenders
    return "\n".join(rows)


def _bench_data_images_per_s(batch: int, quick: bool) -> tuple[float, str] | None:
    """The data developer's pipeline measurement (benchmarks/bench_data.py), when it is there:
    a function ``pipeline_images_per_s`` (or ``images_per_second``) returning images/s, called with
    the keyword arguments it accepts among ``batch_size`` and ``quick``."""
    import inspect

    try:
        from . import bench_data
    except ImportError:
        return None
    fn = getattr(bench_data, "pipeline_images_per_s", None) or getattr(bench_data, "images_per_second", None)
    if fn is None:
        return None
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in (("batch_size", batch), ("quick", quick)) if k in accepted}
    value = fn(**kwargs)
    return float(value), "benchmarks/bench_data.py"


def data_section(s: Settings) -> str:
    from . import train_cases

    batch = s.train_batch or (4 if s.quick else 64 if s.device.startswith("cuda") else 8)
    workers = 0 if s.quick else min(4, os.cpu_count() or 1)
    measured = _bench_data_images_per_s(batch, s.quick)
    if measured is None:
        num_images = 4 * batch + batch if s.quick else 16 * batch + batch
        pipe = train_cases.pipeline_images_per_s(batch, num_images=num_images, num_workers=workers)
        how = f"generated VOC JPEGs (500 px), `TrainTransform(300)`, `make_loader`, {workers} workers"
    else:
        pipe, how = measured
    contenders = train_cases.train_case("mb2-ssd-lite", batch, device=s.device, amp=s.amp,
                                        channels_last=s.channels_last, torchvision=False)
    contenders = {k: v for k, v in contenders.items() if k == "native"} or contenders
    t = time_contenders(contenders, rounds=_rounds(s), warmup=0, device=s.device)
    step = batch / next(iter(t.values()))
    rows = [
        f"Training data pipeline ({how}) vs the mb2-ssd-lite training step (batch {batch}, "
        f"{next(iter(t))} ops) on this machine: the pipeline keeps the step fed when its images/s is higher.",
        "",
        "| batch | pipeline images/s | mb2-ssd-lite step images/s | pipeline vs step |",
        "|---|---:|---:|---:|",
        f"| batch {batch} | {pipe:.1f} | {step:.1f} | {pipe / step:.2f}x |",
    ]
    _log(rows[-1])
    return "\n".join(rows)


def coco_eval_section(s: Settings) -> str:
    from . import eval_cases

    num_images, per_image = 5000, (10 if s.quick else 100)
    contenders = eval_cases.coco_eval_case(num_images, per_image)
    t = _time_each_once(contenders, rounds=1 if s.quick else 3)
    fce = f"{t['faster-coco-eval']:.2f}" if "faster-coco-eval" in t else "—"
    backend = ("faster-coco-eval" if eval_cases.faster_coco_eval_available()
               else "pycocotools; faster-coco-eval not installed")
    rows = [
        f"COCO box evaluation (load results, evaluate, accumulate, summarize) of a generated result set: "
        f"{num_images} images, 1-15 ground-truth boxes each, {per_image} detections per image. ssdfast: "
        f"`ssdfast.evaluation.coco.evaluate_coco` (backend: {backend}); pycocotools: `COCO.loadRes` + "
        "`COCOeval` called directly.",
        "",
        "| result set | ssdfast s | pycocotools s | faster-coco-eval s | ssdfast vs pycocotools |",
        "|---|---:|---:|---:|---:|",
        f"| {num_images} images x {per_image} detections | {t['ssdfast']:.2f} | {t['pycocotools']:.2f} | {fce} | "
        f"{_x(t['ssdfast'], t['pycocotools'])} |",
    ]
    _log(rows[-1])
    return "\n".join(rows)


def deploy_section(s: Settings) -> str:
    import shutil
    import tempfile

    from . import deploy_cases

    trained = deploy_cases.TRAINED[:1] if s.quick else deploy_cases.TRAINED
    work = s.work or tempfile.mkdtemp(prefix="ssdfast-bench-deploy-")
    try:
        rows = deploy_cases.deploy_rows(work, trained, log=_log)
    finally:
        if s.work is None:
            shutil.rmtree(work, ignore_errors=True)
    intro = ("The mAP of what ships (benchmarks/deploy_cases.py): the demo's model(s), trained on its generated "
             "VOC-format set (160 px), exported (`jetson`, FP32) and quantized as `ssdfast-export --int8` does "
             "(`-int8-cpu`: ONNX Runtime / OpenVINO; `-int8-tensorrt`: TensorRT's explicit quantization), each run "
             "through `ssdfast.load_detector` in each CPU runtime and scored on the held-out split (VOC mAP@0.5, "
             "11-point) with ssdfast's preprocessing and with detectNet's (nearest-neighbour resize), beside the "
             "PyTorch model: what `ssdfast-export --check --data` prints. Margins: 0.5 point FP32, 1.0 INT8.")
    return intro + "\n\n" + "\n".join(rows)


SECTIONS: dict[str, Callable[[Settings], str]] = {
    "ops": lambda s: ops_section(s.device, s.quick),
    "train": train_section,
    "infer": infer_section,
    "deploy": deploy_section,
    "data": data_section,
    "coco-eval": coco_eval_section,
}


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes such as 1,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes should be positive, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (CPU, minutes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--section", action="append", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the tables to this Markdown file (and a PNG chart beside it)")
    parser.add_argument("--save", action="store_true",
                        help="also write them to benchmarks/results/<machine>.md, replacing the committed results "
                             "for this machine")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="autocast (float16) training and inference (default: on for cuda)")
    parser.add_argument("--channels-last", "--channels_last", dest="channels_last",
                        action=argparse.BooleanOptionalAction, default=None,
                        help="train the ssdfast networks channels-last (or, with --no-channels-last, NCHW); default: "
                             "the layout ssdfast-train picks per network and device. torchvision is timed in both")
    parser.add_argument("--train-batch", "--train_batch", dest="train_batch", type=int, default=None,
                        help="training batch size (default: 4 with --quick, 8 on CPU, 64 on cuda)")
    parser.add_argument("--infer-batches", "--infer_batches", dest="infer_batches", type=_batches, default=None,
                        help="inference batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--networks", default=None,
                        help="comma-separated networks for the train section (default: all; three with --quick) "
                             "and the infer section (default: mb1-ssd, mb2-ssd-lite, mb3-large-ssd-lite, vgg16-ssd)")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="deploy section: train the demo models into DIR and reuse them on the next run "
                             "(default: a temporary folder, removed)")
    parser.add_argument("--no-chart", "--no_chart", dest="chart", action="store_false",
                        help="do not write the PNG chart beside the Markdown file")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    settings = Settings(
        device=args.device,
        quick=args.quick,
        amp=cuda if args.amp is None else args.amp,
        channels_last=args.channels_last,
        train_batch=args.train_batch,
        infer_batches=args.infer_batches,
        networks=tuple(n.strip() for n in args.networks.split(",")) if args.networks else None,
        work=args.work,
    )
    torch.manual_seed(0)
    machine = machine_name(args.device)
    parts = [
        f"# ssdfast benchmarks on {machine}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
        f"{', quick' if args.quick else ''}. Times are medians of interleaved rounds in one run.",
    ]
    for name in args.section or list(SECTIONS):
        start = time.perf_counter()
        parts += ["", f"## {name}", "", SECTIONS[name](settings)]
        _log(f"[{name}: {time.perf_counter() - start:.0f} s]")
    text = "\n".join(parts) + "\n"
    print(text)
    if args.output is None and not args.save:
        print("(not saved: --save writes benchmarks/results/<machine>.md, --output FILE.md another file)",
              file=sys.stderr)
        return 0
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{machine}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}", file=sys.stderr)
    if args.chart:
        from .chart import chart_for

        png = chart_for(out)
        if png:
            print(f"wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
