"""End-to-end inference contenders: uint8 images of the original size in, per-image boxes in pixels out.

Shared by ``test_bench_e2e.py`` (pytest-benchmark) and ``run.py`` (the images/s table). Each case is
one network (:data:`INFER_NETWORKS`; paired with a torchvision model where there is one) at one batch
size; every contender takes the same list of ``uint8 [3, H, W]`` images (480x640 by default, as
decoded from a file) and returns per-image detections:

- ``ssdfast``: :class:`ssdfast.Detector` as a user builds it, so with its default fused path
  (``detector.preprocess``: uint8 resize + normalize into a channels_last batch; the network's
  inference copy, BatchNorm folded and channels_last, made once when the detector is built;
  ``detector.postprocess``: softmax + ``ops.ssd_postprocess`` + scaling to pixels): the torch runtime;
- ``ssdfast-onnxruntime``, ``ssdfast-openvino`` and their ``-int8`` twins (:data:`RUNTIME_CONTENDERS`):
  the same network's export (FP32, or its INT8 Q/DQ file) run by :func:`ssdfast.load_detector` in that
  runtime -- the Detector with the network of another runtime, its preprocessing and
  ``ops.ssd_postprocess`` ssdfast's;
- ``torchvision``: ``ssd300_vgg16`` / ``ssdlite320_mobilenet_v3_large`` in eval mode, fed the
  images as float in [0, 1] (its own transform resizes and normalizes, its own post-processing),
  as shipped (NCHW);
- ``torchvision-cl``: the same model converted to channels_last by hand (same weights);
- ``onnxruntime``: the ssdfast network exported in the ``jetson`` format (softmax scores + decoded
  boxes, no NMS) run by onnxruntime called by hand, then ``ops.ssd_postprocess`` (the boxes re-encoded
  against the priors, as the op decodes) and scaling to pixels: the floor the Detector with the
  onnxruntime runtime is held to (no overhead of its own).

A runtime contender is a runtime and an exported file (:data:`EXPORTED_FILES`: the FP32 export and the
INT8 file ``ssdfast-export --int8`` writes for CPUs; :data:`RUNTIME_CONTENDERS`).

Fairness:

- same threads (onnxruntime and OpenVINO get ``torch.get_num_threads()`` threads), everything under
  ``torch.inference_mode`` (``time_contenders`` wraps the calls);
- the same post-processing settings on both sides of a pair: torchvision's defaults for its model
  (``ssd300_vgg16``: score 0.01, NMS IoU 0.45, top-k 400, 200 detections; ``ssdlite320``: score
  0.001, NMS IoU 0.55, top-k 300, 300 detections), given to ssdfast as well (networks without a
  torchvision twin: ``ssd300_vgg16``'s, :data:`UNPAIRED_SETTINGS`);
- the same candidate load: a randomly initialised 81-class network scores every prior ~1/81 for
  every class, so every (prior, class) pair passes a 0.01 threshold and post-processing would be NMS
  over P x 80 boxes, which no trained detector produces. So every network (both sides) first gets
  BatchNorm statistics from the benchmark images (:func:`recalibrate_batchnorm`; with the default
  ones a random MobileNet's activations shrink to 1e-26), then its classification heads are scaled
  to foreground logits of standard deviation ``LOGIT_STD`` and their background bias shifted
  (:func:`calibrate_background`) so that it yields about ``CANDIDATES_PER_IMAGE`` scores above the
  pair's threshold per image, like a trained detector. Only weights change, never the work a
  network does.
"""
from __future__ import annotations

import atexit
import copy
import importlib.util
import os
import shutil
import tempfile
from dataclasses import asdict
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ssdfast import ops
from ssdfast.ops import PostprocessSettings

__all__ = [
    "INFER_PAIRS",
    "INFER_NETWORKS",
    "RUNTIME_CONTENDERS",
    "EXPORTED_FILES",
    "ORIGINAL_SIZE",
    "CANDIDATES_PER_IMAGE",
    "make_images",
    "calibrate_background",
    "recalibrate_batchnorm",
    "torchvision_settings",
    "ssdfast_detector",
    "infer_case",
]

#: ssdfast network -> (torchvision builder, image side of both).
INFER_PAIRS = {
    "mb3-large-ssd-lite": ("ssdlite320_mobilenet_v3_large", 320),
    "vgg16-ssd": ("ssd300_vgg16", 300),
}
#: Every network of the inference table -> (its torchvision twin or None, image side).
INFER_NETWORKS = {"mb1-ssd": (None, 300), "mb2-ssd-lite": (None, 300), **INFER_PAIRS}
#: Post-processing of a network without a torchvision twin: ``ssd300_vgg16``'s defaults.
UNPAIRED_SETTINGS = PostprocessSettings(score_threshold=0.01, iou_threshold=0.45, top_k=400, max_detections=200)

#: Exported files a runtime contender runs, by name: ``make(model, folder) -> path``
#: (``model``: the calibrated ssdfast SSD; ``folder``: a fresh folder of its own).
EXPORTED_FILES: dict[str, Callable[[nn.Module, str], str]] = {}
#: The runtime contenders: (contender name, runtime, exported file of EXPORTED_FILES): the FP32 export
#: and the INT8 file ``ssdfast-export --int8`` writes for CPUs, in ONNX Runtime and OpenVINO.
RUNTIME_CONTENDERS = (
    ("ssdfast-onnxruntime", "onnxruntime", "fp32"),
    ("ssdfast-openvino", "openvino", "fp32"),
    ("ssdfast-onnxruntime-int8", "onnxruntime", "int8-cpu"),
    ("ssdfast-openvino-int8", "openvino", "int8-cpu"),
)
#: Images the INT8 file is calibrated on (generated, prepared as the evaluation transform prepares them).
INT8_CALIBRATION_IMAGES = 16

#: (height, width) of the benchmark images before preprocessing.
ORIGINAL_SIZE = (480, 640)

#: Scores above the score threshold per image that each calibrated network yields.
CANDIDATES_PER_IMAGE = 2000
#: Images the statistics are calibrated on (the first ones of every benchmark batch).
CALIBRATION_IMAGES = 2
#: Standard deviation of the foreground logits of each calibrated network.
LOGIT_STD = 2.0


def make_images(batch_size: int, height: int = ORIGINAL_SIZE[0], width: int = ORIGINAL_SIZE[1],
                seed: int = 0) -> list[Tensor]:
    """``batch_size`` random ``uint8 [3, height, width]`` images (smooth blobs plus noise, so the
    activations are not those of pure noise); image ``i`` is the same for every ``batch_size``."""
    images = []
    for i in range(batch_size):
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        low = torch.rand(1, 3, max(1, height // 32), max(1, width // 32), generator=g)
        smooth = nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]
        noisy = smooth * 200 + torch.rand(3, height, width, generator=g) * 55
        images.append(noisy.clamp_(0, 255).to(torch.uint8))
    return images


def _last_conv(module: nn.Module) -> nn.Conv2d:
    if isinstance(module, nn.Conv2d):
        return module
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise TypeError(f"no Conv2d in {type(module).__name__}")
    return convs[-1]


def _background_shift(logits: Tensor, score_threshold: float, candidates_per_image: int) -> float:
    """The shift ``d`` of the class-0 logit for which ``logits[B, P, C]`` gives about
    ``candidates_per_image`` foreground scores ``> score_threshold`` per image (bisection)."""
    logits = logits.float()
    batch = logits.shape[0]

    def count(d: float) -> float:
        shifted = logits.clone()
        shifted[..., 0] += d
        return float((torch.softmax(shifted, -1)[..., 1:] > score_threshold).sum()) / batch

    lo, hi = -30.0, 60.0  # count(lo) is large, count(hi) ~ 0
    for _ in range(40):
        mid = (lo + hi) / 2
        if count(mid) > candidates_per_image:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def calibrate_background(heads: Sequence[nn.Module], num_classes: int, logits: Tensor, score_threshold: float,
                         candidates_per_image: int = CANDIDATES_PER_IMAGE, logit_std: float = LOGIT_STD) -> float:
    """Give classification ``heads`` the output statistics of a trained detector.

    ``logits`` are the heads' current outputs ``[B, P, C]`` (channels of each head ordered
    ``anchor * C + class``, as both ssdfast and torchvision lay them out). The last conv of every head
    is scaled so the foreground logits have standard deviation ``logit_std``, then its background
    bias is shifted so that the same inputs give ``candidates_per_image`` foreground scores above
    ``score_threshold`` per image. Returns the shift.
    """
    spread = float(logits[..., 1:].float().std())
    scale = logit_std / spread if spread > 0 else 1.0
    d = _background_shift(logits.float() * scale, score_threshold, candidates_per_image)
    with torch.no_grad():
        for head in heads:
            conv = _last_conv(head)
            conv.weight.mul_(scale)
            conv.bias.mul_(scale)
            conv.bias[0::num_classes] += d
    return d


def recalibrate_batchnorm(model: nn.Module, forward: Callable[[], Any]) -> None:
    """Set every BatchNorm's running statistics to those of one ``forward()`` in training mode.

    Randomly initialised networks with default statistics (mean 0, var 1) shrink their activations
    layer after layer (torchvision's SSDLite reaches 1e-26 at its last map), which no trained network
    does and which can push CPU arithmetic into denormals.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    try:
        with torch.no_grad():
            forward()
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def torchvision_settings(model: nn.Module) -> PostprocessSettings:
    """A torchvision SSD's post-processing settings, as ssdfast takes them."""
    return PostprocessSettings(
        score_threshold=float(model.score_thresh),
        iou_threshold=float(model.nms_thresh),
        top_k=int(model.topk_candidates),
        max_detections=int(model.detections_per_img),
    )


def _torchvision_logits(model: nn.Module, images: list[Tensor]) -> Tensor:
    """The class logits ``[B, P, C]`` of a torchvision SSD (its transform, backbone and head)."""
    transformed, _ = model.transform([im.float() / 255 for im in images])
    features = list(model.backbone(transformed.tensors).values())
    return model.head(features)["cls_logits"]


def _class_names(num_classes: int) -> list[str]:
    return ["BACKGROUND"] + [f"class{i}" for i in range(1, num_classes)]


def ssdfast_detector(name: str, image_size: int, settings: PostprocessSettings, calibration_images: list[Tensor], *,
                     num_classes: int = 81, device: str = "cpu", **detector_options: Any):
    """An :class:`ssdfast.Detector` for a random ``name`` network with calibrated statistics
    (:func:`recalibrate_batchnorm`, :func:`calibrate_background`) and ``settings`` (see
    :func:`torchvision_settings`), built as a user would: its defaults (the fused path, channels_last;
    ``fused=False`` in ``detector_options`` to compare)."""
    from ssdfast.detector import Detector, preprocess
    from ssdfast.models import create_model

    from .train_cases import TWIN_OPTIONS

    torch.manual_seed(0)
    model = create_model(name, num_classes, image_size=image_size, **TWIN_OPTIONS.get(name, {})).eval()
    batch = preprocess(calibration_images, model.config)[0]
    recalibrate_batchnorm(model, lambda: model(batch))
    with torch.inference_mode():
        confidences, _ = model(batch)
    calibrate_background(model.classification_headers, num_classes, confidences, settings.score_threshold)
    return Detector(model, _class_names(num_classes), device, settings, **detector_options)


def torchvision_detector(builder: str, calibration_images: list[Tensor], *, num_classes: int = 81,
                         device: str = "cpu") -> nn.Module:
    """torchvision's ``builder`` in eval mode, random weights, calibrated statistics."""
    from .train_cases import torchvision_model

    model = torchvision_model(builder, num_classes).eval()
    recalibrate_batchnorm(model, lambda: _torchvision_logits(model, calibration_images))
    with torch.inference_mode():
        logits = _torchvision_logits(model, calibration_images)
    calibrate_background(model.head.classification_head.module_list, num_classes, logits, float(model.score_thresh))
    return model.to(device)


_EXPORT_DIR: str | None = None
_EXPORTS: dict[tuple[str, ...], str] = {}


def _export_fp32(model: nn.Module, folder: str) -> str:
    """The jetson-format export with a dynamic batch (and labels.txt): what the runtimes run."""
    from ssdfast.export import export_onnx

    path = os.path.join(folder, "model.onnx")
    export_onnx(model, path, format="jetson", batch_size=None, class_names=_class_names(int(model.config.num_classes)))
    return path


def _export_int8_cpu(model: nn.Module, folder: str) -> str:
    """The FP32 export quantized as ``ssdfast-export --int8 --int8-target cpu`` does (Q/DQ, unsigned
    activations), calibrated on generated images of the benchmark's size; its labels.txt beside it."""
    from ssdfast.export.inputs import calibration_batches
    from ssdfast.export.quantize import quantize_onnx

    fp32 = exported_file(model, "fp32")
    batches = calibration_batches(make_images(INT8_CALIBRATION_IMAGES, seed=1), model.config, 1)
    path = quantize_onnx(fp32, os.path.join(folder, "model-int8-cpu.onnx"), batches, target="cpu").path
    shutil.copy(os.path.join(os.path.dirname(fp32), "labels.txt"), os.path.join(folder, "labels.txt"))
    return str(path)


EXPORTED_FILES["fp32"] = _export_fp32
EXPORTED_FILES["int8-cpu"] = _export_int8_cpu


def exported_file(model: nn.Module, kind: str = "fp32") -> str:
    """``EXPORTED_FILES[kind]`` of ``model``, made once per process per network, size and classes."""
    global _EXPORT_DIR
    config = model.config
    key = (kind, config.name, str(config.image_size), str(config.num_classes))
    if key not in _EXPORTS:
        if _EXPORT_DIR is None:
            _EXPORT_DIR = tempfile.mkdtemp(prefix="ssdfast-bench-onnx-")
            atexit.register(shutil.rmtree, _EXPORT_DIR, True)  # vgg16-ssd's file is ~100 MB
        folder = os.path.join(_EXPORT_DIR, "-".join(key))
        os.makedirs(folder, exist_ok=True)
        _EXPORTS[key] = EXPORTED_FILES[kind](model, folder)
    return _EXPORTS[key]


def onnx_available(device: str = "cpu") -> bool:
    """onnxruntime is importable and can run on ``device`` (CUDA needs its CUDA provider)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return not device.startswith("cuda") or "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def onnx_contender(detector, images: list[Tensor], device: str = "cpu") -> Callable[[], list]:
    """The detector's network exported (jetson format) in onnxruntime + ``ops.ssd_postprocess``."""
    import onnxruntime as ort
    from torchvision.transforms.v2 import functional as TF

    model = detector.model
    config = model.config
    size = int(config.image_size)
    path = exported_file(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # onnxruntime's pool threads busy-wait for work after each run by default; interleaved with the
    # other contenders they would spin on the cores the next contender computes on.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    session = ort.InferenceSession(path, options, providers=providers)
    input_name = session.get_inputs()[0].name
    priors = model.priors.detach().float().cpu()
    variances = tuple(config.variances)
    settings = asdict(detector.settings)

    def run() -> list[tuple[Tensor, Tensor, Tensor]]:
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        resized = torch.stack([TF.resize(im, [size, size], antialias=True) for im in images])
        x = resized.to(torch.float32).mul_(1 / 127.5).sub_(1.0)  # jetson input: RGB in [-1, 1]
        scores, boxes = session.run(None, {input_name: x.numpy()})
        scores_t, boxes_t = torch.from_numpy(scores), torch.from_numpy(boxes)
        loc = ops.encode_boxes(boxes_t, priors, variances)  # ssd_postprocess decodes: hand it offsets
        out_boxes, out_scores, labels, num = ops.ssd_postprocess(loc, scores_t, priors, variances, **settings)
        hw = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=torch.float32)
        out_boxes = torch.minimum((out_boxes * hw[:, None, :]).clamp(min=0), hw[:, None, :])
        return [(out_boxes[i, :n], out_scores[i, :n], labels[i, :n]) for i, n in enumerate(num.tolist())]

    return run


def runtime_available(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def runtime_contenders(detector, images: list[Tensor]) -> dict[str, Callable[[], list]]:
    """The detector's network in every installed runtime of :data:`RUNTIME_CONTENDERS` (CPU), as
    :func:`ssdfast.load_detector` runs an exported file: same settings and threads as ``detector``."""
    from ssdfast import load_detector

    out: dict[str, Callable[[], list]] = {}
    for name, runtime, kind in RUNTIME_CONTENDERS:
        if not runtime_available(runtime):
            continue
        other = load_detector(exported_file(detector.model, kind), runtime=runtime, settings=detector.settings,
                              threads=torch.get_num_threads())
        out[name] = lambda other=other: other(images)
    return out


def infer_case(name: str, batch_size: int, *, num_classes: int = 81, device: str = "cpu",
               torchvision_channels_last: bool = True, amp: bool = False, onnx: bool = True,
               runtimes: bool = True, images: list[Tensor] | None = None) -> dict[str, Callable[[], Any]]:
    """Contenders for end-to-end inference of network ``name`` (see :data:`INFER_NETWORKS`) on a batch:
    ``ssdfast``; ``torchvision`` and ``torchvision-cl`` (when ``torchvision_channels_last``) for a network
    with a torchvision twin; ``onnxruntime`` (when ``onnx`` and it is installed); the runtime contenders
    (when ``runtimes``, on CPU, those installed)."""
    builder, size = INFER_NETWORKS[name]
    images = images if images is not None else make_images(batch_size)
    calibration = make_images(CALIBRATION_IMAGES)  # the first images of every batch
    tv_model = None
    settings = UNPAIRED_SETTINGS
    if builder is not None:
        tv_model = torchvision_detector(builder, calibration, num_classes=num_classes, device=device)
        settings = torchvision_settings(tv_model)
    detector = ssdfast_detector(name, size, settings, calibration, num_classes=num_classes, device=device)
    device_type = torch.device(device).type

    def ssdfast_run() -> list:
        with torch.autocast(device_type, enabled=amp):
            return detector(images)

    out: dict[str, Callable[[], Any]] = {"ssdfast": ssdfast_run}
    if tv_model is not None:
        def torchvision_run(model: nn.Module = tv_model) -> list:
            with torch.autocast(device_type, enabled=amp):
                return model([im.to(device).float().div_(255) for im in images])

        out["torchvision"] = torchvision_run
        if torchvision_channels_last:
            tv_cl = copy.deepcopy(tv_model).to(memory_format=torch.channels_last)
            out["torchvision-cl"] = lambda: torchvision_run(tv_cl)
    if onnx and onnx_available(device):
        out["onnxruntime"] = onnx_contender(detector, images, device)
    if runtimes and device_type == "cpu":
        out.update(runtime_contenders(detector, images))
    return out
