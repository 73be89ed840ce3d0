"""``ssdfast-detect``: run a trained SSD on images, folders, globs, video files or a camera.

Prints one JSON line per image (or video frame) on stdout::

    {"file": "street.jpg", "width": 640, "height": 480, "boxes": [[x1, y1, x2, y2], ...],
     "scores": [...], "labels": ["car", ...], "label_ids": [7, ...]}

(video frames add ``"frame"`` and ``"time"`` in seconds), writes annotated copies to ``--output``
and reports images/s on stderr. The model is an ssdfast checkpoint, a pytorch-ssd ``.pth`` (with
``--net`` and its labels) or an exported ``.onnx`` / OpenVINO ``.xml``, run in the ``--runtime`` asked
for (:func:`ssdfast.load_detector`); images are read by :func:`ssdfast.io.load_image`, video by
:mod:`ssdfast.io.video` (PyAV or OpenCV).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..device import resolve_device
from ..errors import DataError, MissingPackageError, ModelFileError, SettingsError
from ..ops.settings import DISPLAY
from ._common import (
    add_argument,
    add_model_file_arguments,
    add_postprocess_arguments,
    add_runtime_arguments,
    load_detector_arg,
    make_parser,
    postprocess_settings,
    run_main,
    str2bool,
)
from ._detect_files import Outputs, camera_index, detection_record, expand_inputs, is_stream

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  ssdfast-detect models/best.pth photo.jpg                        # JSON lines on stdout
  ssdfast-detect models/best.pth images/ "more/*.png" --output annotated/
  ssdfast-detect models/best.pth clip.mp4 --output out/ --threshold 0.5
  ssdfast-detect models/best.pth --camera 0 --show                 # or the input /dev/video0
  ssdfast-detect models/mb1-ssd-Epoch-99.pth --net mb1-ssd --labels models/labels.txt photo.jpg
  ssdfast-detect mb1-ssd models/mb1-ssd.pth models/labels.txt photo.jpg   # run_ssd_example.py's order
  ssdfast-detect models/fruit/ssd-mobilenet.onnx photos/ --preprocess detectnet   # the exported file, as on a Jetson

model files: an ssdfast checkpoint carries its network and class names; a pytorch-ssd .pth needs
--net and its label file (default: labels.txt beside it); an exported .onnx (jetson format) or
OpenVINO .xml takes its class names from --labels or the labels.txt beside it.

detections: per class, the --top-k highest-scoring candidates above --threshold go through NMS
(--iou-threshold); then the classes are merged and the best --max-detections kept per image.
(--top-k used to be another name for --max-detections here; it now means what top_k means in
ssdfast's Detector and ssdfast-export, and caps each class as pytorch-ssd's predictor top_k does.)

video: read and written with PyAV (pip install av) or OpenCV (pip install opencv-python-headless;
opencv-python for --show windows), PyAV first; animated GIFs with Pillow. Cameras need OpenCV.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ssdfast-detect`` argument parser."""
    p = make_parser("ssdfast-detect", "Detect objects with a trained SSD in images, folders, videos or a camera.",
                    _EPILOG)
    add_argument(p, "model", nargs="?", metavar="MODEL",
                 help="model file: an ssdfast checkpoint (ssdfast-train's best.pth / last.pth), a pytorch-ssd "
                      ".pth (with --net), or an exported .onnx / OpenVINO .xml; or give it with --model")
    add_argument(p, "inputs", nargs="*", metavar="INPUT",
                 help="image or video files, folders (their images and videos), glob patterns such as 'imgs/*.jpg', "
                      "stream URLs, or a camera as /dev/videoN")
    add_argument(p, "--model", "--trained-model", dest="model_flag", default=None, metavar="FILE",
                 help="the model file, as detectnet's --model / eval_ssd.py's --trained_model (then every "
                      "positional argument is an input)")
    add_model_file_arguments(p.add_argument_group("pytorch-ssd model files"))
    add_runtime_arguments(p.add_argument_group("runtime"))
    add_argument(p, "--output", "-o", default=None, metavar="PATH",
                 help="write annotated images / videos to this folder (or this file, for a single input)")
    add_postprocess_arguments(p, DISPLAY, {"score_threshold": ("--threshold", "--score-threshold"),
                                           "iou_threshold": ("--iou-threshold", "--nms-iou-threshold"),
                                           "top_k": ("--top-k", "--candidates-per-class")})
    add_argument(p, "--batch-size", type=int, default=8, help="images (or video frames) per forward pass")
    add_argument(p, "--device", default="auto", help="device: auto, cpu, cuda, cuda:1 ...")
    add_argument(p, "--use-cuda", type=str2bool, default=None, metavar="BOOL",
                 help="pytorch-ssd's spelling: false runs on the CPU (with --device auto)")
    add_argument(p, "--num-workers", "--workers", type=int, default=None,
                 help="image decoding worker processes; default: one core left for the network, at most 4")
    add_argument(p, "--recursive", "-r", action="store_true", help="look for images in sub-folders too")
    add_argument(p, "--camera", type=int, default=None, metavar="INDEX",
                 help="read frames from this camera (OpenCV), as pytorch-ssd's run_ssd_live_demo.py")
    add_argument(p, "--show", action="store_true",
                 help="show annotated video / camera frames in a window (OpenCV; q quits)")
    add_argument(p, "--max-frames", type=int, default=None, metavar="N",
                 help="stop each video / the camera after N frames")
    add_argument(p, "--video-backend", default="auto", choices=("auto", "pyav", "opencv"),
                 help="video library: PyAV, OpenCV, or auto (PyAV when installed); GIFs always use Pillow")
    add_argument(p, "--line-width", type=int, default=None,
                 help="box line width in pixels; None: scales with the image")
    add_argument(p, "--quiet", "-q", action="store_true",
                 help="no progress on stderr (the JSON lines still go to stdout)")
    return p


def _split_positionals(args: argparse.Namespace) -> None:
    """``args.model`` and ``args.inputs`` from the positionals: ``MODEL INPUT...``, ``--model FILE
    INPUT...``, or run_ssd_example.py's ``NET MODEL [LABELS.txt] INPUT...``."""
    from ..models import canonical_name, list_models

    positionals = ([args.model] if args.model is not None else []) + list(args.inputs)
    if args.model_flag is not None:
        args.model, args.inputs = args.model_flag, positionals
        return
    first = positionals[0] if positionals else None
    if (first is not None and not os.path.exists(first) and canonical_name(first) in list_models()
            and len(positionals) > 1):
        if args.net is not None and canonical_name(args.net) != canonical_name(first):
            raise SettingsError(f"--net {args.net} and the network {first} given before the model file disagree")
        args.net = first
        positionals = positionals[1:]
        if len(positionals) > 1 and positionals[1].lower().endswith(".txt") and os.path.isfile(positionals[1]):
            if args.label_file is None:
                args.label_file = positionals[1]
            positionals = positionals[:1] + positionals[2:]
    args.model, args.inputs = (positionals[0], positionals[1:]) if positionals else (None, [])


def _check_args(args: argparse.Namespace) -> None:
    from ..io.video import available_backends

    args.settings = postprocess_settings(args)
    if args.batch_size < 1:
        raise SettingsError(f"--batch-size should be at least 1, got {args.batch_size}")
    if args.num_workers is not None and args.num_workers < 0:
        raise SettingsError(f"--num-workers should be >= 0, got {args.num_workers}")
    if args.max_frames is not None and args.max_frames < 1:
        raise SettingsError(f"--max-frames should be at least 1, got {args.max_frames}")
    if args.model is None:
        raise SettingsError("give the model file (an ssdfast checkpoint, a pytorch-ssd .pth or an exported .onnx) and "
                            "the inputs")
    if not args.inputs and args.camera is None:
        raise SettingsError("give images, folders, globs or videos to detect in, or --camera INDEX")
    cameras = [i for i in (camera_index(x) for x in args.inputs) if i is not None]
    if (args.camera is not None or cameras) and "opencv" not in available_backends():
        raise MissingPackageError("--camera needs OpenCV: pip install opencv-python-headless (opencv-python for --show "
                                  "windows)")
    if args.video_backend != "auto" and args.video_backend not in available_backends():
        package = "av" if args.video_backend == "pyav" else "opencv-python-headless"
        raise MissingPackageError(f"--video-backend {args.video_backend}: not installed (pip install {package})")
    if not os.path.isfile(args.model):
        raise ModelFileError(f"{args.model}: no such model file")


class _Run:
    """The detector, the outputs and the counters of one invocation."""

    def __init__(self, args: argparse.Namespace, detector: Any, outputs: Outputs, workers: int):
        self.args, self.detector, self.outputs, self.workers = args, detector, outputs, workers
        self.images = 0
        self.failed: list[str] = []
        self.warned: set[str] = set()
        self._window = args.show
        self.stop = False

    def emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        self.images += 1

    def warn(self, message: str, key: str) -> None:
        """One ``warning:`` line on stderr per ``key`` (a file)."""
        if key not in self.warned:
            self.warned.add(key)
            print(f"warning: {message}", file=sys.stderr)

    def draw(self, image: Any, det: Any) -> Any:
        from ..visualize import annotate

        return annotate(image, det, width=self.args.line_width)

    def show(self, title: str, frame_rgb: Any) -> None:
        if not self._window:
            return
        import numpy as np

        try:
            import cv2
        except ImportError:
            print("warning: --show needs OpenCV (pip install opencv-python); not showing frames", file=sys.stderr)
            self._window = False
            return
        try:
            cv2.imshow(title, np.ascontiguousarray(frame_rgb[:, :, ::-1]))
            if cv2.waitKey(1) & 0xFF == ord("q"):
                self.stop = True
        except cv2.error:  # a headless OpenCV build, or no display
            print("warning: --show: this OpenCV cannot open windows (opencv-python-headless, or no display); "
                  "going on without", file=sys.stderr)
            self._window = False

    # ---------------------------------------------------------------- images
    def images_from(self, paths: list[str]) -> None:
        from torch.utils.data import DataLoader

        from ..visualize import save_image

        loader = DataLoader(_ImageFiles(paths), batch_size=self.args.batch_size, shuffle=False,
                            num_workers=min(self.workers, len(paths)), collate_fn=list)
        for batch in loader:
            good = []
            for path, image, warning, error in batch:
                if image is None:
                    self.warn(f"skipping {error}", path)
                    self.failed.append(path)
                    continue
                if warning is not None:  # e.g. a truncated JPEG: used as decoded
                    self.warn(warning, path)
                good.append((path, image))
            if not good:
                continue
            dets = self.detector([image for _, image in good])
            for (path, image), det in zip(good, dets):
                self.emit(detection_record(path, det, image.shape[-1], image.shape[-2]))
                out = self.outputs.path_for(path)
                if out is not None:
                    save_image(self.draw(image, det), out)
            sys.stdout.flush()

    # ---------------------------------------------------------------- video and camera
    def video(self, source: str, reader: Any) -> None:
        from ..io.video import create_video_writer

        writer = None
        out = self.outputs.path_for(source, video=True)
        live = source.startswith("camera:")
        per_batch = 1 if live else self.args.batch_size  # live: no waiting for a batch
        index = 0
        try:
            frames = iter(reader)
            done = False
            while not done and not self.stop:
                batch = []
                while len(batch) < per_batch:
                    if self.args.max_frames is not None and index + len(batch) >= self.args.max_frames:
                        done = True
                        break
                    frame = next(frames, None)
                    if frame is None:
                        done = True
                        break
                    batch.append(frame)
                if not batch:
                    break
                dets = self.detector([f.pixels for f in batch])
                for frame, det in zip(batch, dets):
                    height, width = frame.pixels.shape[:2]
                    self.emit(detection_record(source, det, width, height, frame=index, time=round(frame.time, 3)))
                    if out is not None or self._window:
                        drawn = self.draw(frame.pixels, det).permute(1, 2, 0).numpy()
                        if out is not None:
                            if writer is None:
                                writer = create_video_writer(out, reader.fps, width, height, self.args.video_backend)
                            writer.write(drawn)
                        self.show(source, drawn)
                    index += 1
                sys.stdout.flush()
        except DataError as exc:  # a damaged stream, a frame that cannot be written: the next input
            self.warn(str(exc), source)
            self.failed.append(source)
        finally:
            reader.close()
            if writer is not None:
                writer.close()
        if index == 0 and source not in self.failed:
            self.warn(f"{source}: no frame could be read", source)
            self.failed.append(source)


class _ImageFiles:
    """Image files for a DataLoader: ``(path, uint8 [3, H, W] or None, warning or None, error or None)``."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from ..io import load_image

        path = self.paths[i]
        try:
            loaded = load_image(path)
        except DataError as exc:  # one line naming the file
            return path, None, None, str(exc)
        return path, loaded.pixels, loaded.warning, None


def _load_detector(args: argparse.Namespace, device: Any) -> Any:
    detector = load_detector_arg(args.model, args, device, args.settings, "MODEL")
    if not args.quiet:
        print(detector.source.description, file=sys.stderr)
    return detector


def _main(argv: list[str] | None) -> int:
    from ..io.video import is_video, open_camera, open_video, resolve_backend

    args = build_parser().parse_args(argv)
    _split_positionals(args)
    _check_args(args)
    camera = args.camera
    sources = []
    for item in args.inputs:
        index = camera_index(item)
        if index is None:
            sources.append(item)
        elif camera is None:
            camera = index
        else:
            raise SettingsError(f"{item}: one camera at a time (already reading camera {camera})")
    files = expand_inputs(sources, args.recursive)
    videos = [f for f in files if is_stream(f) or is_video(f)]
    for v in videos:  # fail early on a format no installed library reads or writes
        resolve_backend(args.video_backend, v)
    outputs = Outputs(args.output, files, camera is not None)
    if outputs.single is not None and (videos or camera is not None):
        resolve_backend(args.video_backend, outputs.single, writing=True, flag="--output")
    device = resolve_device(args.device, args.use_cuda)

    from ..threads import planned_cpu

    with planned_cpu(args.num_workers, device.type) as workers:
        detector = _load_detector(args, device)
        run = _Run(args, detector, outputs, workers)
        from .. import ops

        ops.backend()  # load the kernels now, not inside the timed first batch
        start = time.perf_counter()
        video_set = set(videos)
        images = [f for f in files if f not in video_set]
        if images:
            run.images_from(images)
        for path in videos:
            if run.stop:
                break
            try:
                reader = open_video(path, args.video_backend)
            except DataError as exc:
                run.warn(f"skipping {exc}", path)
                run.failed.append(path)
                continue
            run.video(path, reader)
        if camera is not None and not run.stop:
            reader = open_camera(camera)
            if not args.quiet:
                print(f"camera {camera}: {reader.width}x{reader.height}; Ctrl-C{' or q' if args.show else ''} stops",
                      file=sys.stderr)
            try:
                run.video(f"camera:{camera}", reader)
            except KeyboardInterrupt:
                pass
        seconds = time.perf_counter() - start
    if not args.quiet:
        rate = run.images / seconds if seconds > 0 else float("inf")
        where = f"; annotated files in {args.output}" if args.output else ""
        print(f"{run.images} images in {seconds:.2f} s: {rate:.1f} images/s on {run.detector.device} "
              f"({run.detector.source.runtime}){where}", file=sys.stderr)
    if args.show:
        try:
            import cv2

            cv2.destroyAllWindows()
        except Exception:  # no OpenCV, or one without windows
            pass
    if run.failed:
        print(f"{len(run.failed)} inputs could not be read: {', '.join(run.failed[:5])}"
              f"{' ...' if len(run.failed) > 5 else ''}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssdfast-detect``; returns the exit code (2 for a usage error, 1 when an input could
    not be read)."""
    from ..threads import quiet_openmp

    quiet_openmp()  # before torch is imported: OpenMP threads then sleep instead of spinning
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
