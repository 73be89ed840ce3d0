"""Detector: preprocessing of every image kind, post-processing to pixels, a checkpoint round trip."""
from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from ssdfast.detector import Detections, Detector, postprocess, preprocess
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model
from ssdfast.ops import DISPLAY, EVALUATION, PostprocessSettings

CLASSES = ["BACKGROUND", "cat", "dog"]
#: Every candidate: random weights give detections at score threshold 0.
EVERY = PostprocessSettings(score_threshold=0.0)
V = (0.1, 0.2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mb2-ssd-lite", 3, width_mult=0.25, image_size=64).eval()


def test_preprocess_accepts_every_image_kind(model):
    cfg = model.config
    color = (200, 100, 50)
    pil = Image.new("RGB", (40, 30), color)  # w=40, h=30
    gray = Image.new("L", (20, 10), 100)
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = 7
    chw_uint8 = torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, 64, 64).clone()
    chw_float = chw_uint8.float() / 255
    batch, sizes = preprocess([pil, gray, rgba, chw_uint8, chw_float, np.full((5, 6, 3), color, np.uint8)], cfg)
    assert batch.shape == (6, 3, 64, 64) and batch.dtype == torch.float32
    assert sizes == [(30, 40), (10, 20), (16, 24), (64, 64), (64, 64), (5, 6)]
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    expected = (torch.tensor(color).float().view(3, 1, 1) / 255 - mean) / std
    for i in (0, 2, 3, 4, 5):  # uniform images stay uniform through the resize
        torch.testing.assert_close(batch[i], expected.expand(3, 64, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1], ((100 / 255 - mean) / std).expand(3, 64, 64), atol=1e-5, rtol=0)
    single, single_sizes = preprocess(pil, cfg)
    assert single.shape == (1, 3, 64, 64) and single_sizes == [(30, 40)]
    stacked, stacked_sizes = preprocess(torch.rand(2, 3, 20, 30), cfg)
    assert stacked.shape == (2, 3, 64, 64) and stacked_sizes == [(20, 30)] * 2
    with pytest.raises(ValueError, match="C in"):
        preprocess(np.zeros((5, 5, 2), np.uint8), cfg)
    with pytest.raises(TypeError, match="expected a PIL image"):
        preprocess("image.jpg", cfg)


def test_postprocess_scales_and_clips_to_pixels():
    priors = torch.tensor([[0.25, 0.5, 0.5, 0.4], [0.9, 0.9, 0.4, 0.4]])  # cxcywh normalized
    # prior 0: class 1 with probability 0.8; prior 1: class 2 with 0.6 (its box sticks out: clipped)
    probabilities = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])
    confidences = probabilities.log()
    locations = torch.zeros(1, 2, 4)
    det, = postprocess(confidences, locations, priors, [(100, 200)], V, PostprocessSettings(score_threshold=0.3))
    assert isinstance(det, Detections) and det.label_names is None  # no class names given
    boxes, scores, labels = det.boxes, det.scores, det.labels
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.6]))
    assert labels.tolist() == [1, 2]
    # prior 0 -> xyxy (0, 0.3, 0.5, 0.7) * (w=200, h=100); prior 1 -> (0.7, 0.7, 1.1, 1.1) clipped
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 30.0, 100.0, 70.0], [140.0, 70.0, 200.0, 100.0]]))
    # offsets move the box: dx = 1 -> center + 0.1 * w_prior
    locations[0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    det, = postprocess(confidences, locations, priors, [(100, 200)], V, PostprocessSettings(score_threshold=0.7),
                       class_names=CLASSES)
    torch.testing.assert_close(det.boxes, torch.tensor([[10.0, 30.0, 110.0, 70.0]]))
    assert det.label_names == ["cat"]
    results = postprocess(confidences.expand(2, 2, 3), torch.zeros(2, 2, 4), priors, [(10, 10), (20, 40)], V,
                          PostprocessSettings(score_threshold=0.99))
    assert [r.boxes.shape for r in results] == [(0, 4), (0, 4)]
    with pytest.raises(ValueError, match="1 image sizes for a batch of 2"):
        postprocess(confidences.expand(2, 2, 3), torch.zeros(2, 2, 4), priors, [(10, 10)], V, EVALUATION)
    with pytest.raises(TypeError, match="settings should be a PostprocessSettings, got float"):
        postprocess(confidences, locations, priors, [(100, 200)], V, 0.3)


def test_detector_round_trip_through_checkpoint(model, tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model, CLASSES)
    detector = Detector.from_checkpoint(path, device="cpu", settings=replace(DISPLAY, score_threshold=0.2,
                                                                            max_detections=50))
    images = [
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)),
        np.random.default_rng(1).integers(0, 255, (120, 90, 3), dtype=np.uint8),
        torch.rand(3, 33, 44),
    ]
    every = replace(detector.settings, score_threshold=0.0)
    results = detector(images, every)  # random weights: threshold 0 gives detections
    assert len(results) == 3 and all(isinstance(r, Detections) for r in results)
    for det, (h, w) in zip(results, [(48, 80), (120, 90), (33, 44)]):
        assert 0 < len(det) <= 50
        assert det.boxes.dtype == torch.float32 and det.boxes.shape == (len(det), 4)
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= w).all() and (det.boxes[:, 3] <= h).all()
        assert (det.scores[:-1] >= det.scores[1:]).all()
        assert set(det.labels.tolist()) <= {1, 2}
        assert det.label_names == [CLASSES[i] for i in det.labels.tolist()]
    # the same numbers as running the pieces by hand with the original model
    batch, sizes = preprocess(images, model.config)
    with torch.no_grad():
        confidences, locations = model(batch)
    manual = postprocess(confidences, locations, model.priors, sizes, model.config.variances, every)
    for det, want in zip(results, manual):
        torch.testing.assert_close(det.boxes, want.boxes)
        torch.testing.assert_close(det.scores, want.scores)
        assert torch.equal(det.labels, want.labels)
    # one image alone -> a list of one; the detector's own threshold applies by default
    alone = detector(images[0])
    assert len(alone) == 1 and all(s > 0.2 for s in alone[0].scores.tolist())
    assert math.isclose(detector.settings.score_threshold, 0.2)


# ----------------------------------------------------------------------------- OpenCV-style resize
def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, noisy uint8 HxWx3 image (neighbouring pixels related, as in a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx * 3 + yy * 5) % 256], -1) + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _opencv_linear_rule(img: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's INTER_LINEAR restated in NumPy (in exact arithmetic): output pixel centres mapped to
    ``src = (dst + 0.5) * in / out - 0.5``, clamped to the first / last pixel's centre (edges
    repeated), bilinear between the two neighbours, no antialiasing, rounded to uint8."""
    def taps(n_in):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    x0, x1, fx = taps(img.shape[1])
    y0, y1, fy = taps(img.shape[0])
    a = img.astype(np.float64)
    rows = a[:, x0] * (1 - fx)[None, :, None] + a[:, x1] * fx[None, :, None]
    out = rows[y0] * (1 - fy)[:, None, None] + rows[y1] * fy[:, None, None]
    return np.floor(out + 0.5).clip(0, 255)


RESIZE_CASES = [((97, 131), 64), ((128, 128), 64), ((40, 30), 64), ((300, 200), 64)]


@pytest.mark.parametrize("shape, size", RESIZE_CASES)
def test_antialias_false_resizes_as_opencv(shape, size):
    from ssdfast.data.transforms import resize_image

    img = _photo(*shape, seed=shape[0])
    ours = resize_image(torch.from_numpy(img).permute(2, 0, 1), size, antialias=False).permute(1, 2, 0).numpy()
    assert ours.dtype == np.uint8 and ours.shape == (size, size, 3)
    diff = np.abs(ours.astype(int) - _opencv_linear_rule(img, size))
    # OpenCV rounds its 11-bit fixed-point weights: off by one on some pixels, never more
    assert diff.max() <= 1 and diff.mean() < 0.25
    antialiased = resize_image(torch.from_numpy(img).permute(2, 0, 1), size).permute(1, 2, 0).numpy()
    if shape[0] > size:  # downscaling: antialiasing is a different image
        assert np.abs(antialiased.astype(int) - _opencv_linear_rule(img, size)).mean() > 2
    try:
        import cv2
    except ImportError:
        return
    want = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    off = np.abs(ours.astype(int) - want)
    # OpenCV's fixed-point arithmetic restated: on downscales the same pixels (bit for bit with
    # opencv-python 4.14 and 5.0 on x86-64); upscales differ by one level on a few percent at most
    assert off.max() <= 1 and (off > 0).mean() < (0.001 if shape[0] > size and shape[1] > size else 0.05)


def test_detector_preprocessing_follows_config_antialias(model):
    """A model loaded from a pytorch-ssd file (config.antialias False) is fed OpenCV-style resizes;
    an ssdfast model torchvision's antialiased ones; EvalTransform does the same."""
    from torchvision.transforms.v2 import functional as TF

    from ssdfast.data.transforms import EvalTransform

    cfg = model.config
    img = _photo(150, 200, seed=3)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    antialiased, _ = preprocess(img, cfg)
    want = TF.resize(chw, [64, 64], antialias=True).float() / 255
    torch.testing.assert_close(antialiased[0], (want - mean) / std, atol=1e-5, rtol=0)
    cfg.antialias = False
    try:
        detector = Detector(model, CLASSES)
        batch, sizes = detector.preprocess(img)
        opencv = torch.from_numpy(_opencv_linear_rule(img, 64)).permute(2, 0, 1).float() / 255
        assert sizes == [(150, 200)]
        assert ((batch[0] - (opencv - mean) / std).abs() * std).max() <= 1 / 255 + 1e-6
        evaluated = EvalTransform(64, cfg.mean, cfg.std, antialias=False)(chw, torch.zeros(0, 4), torch.zeros(0))[0]
        torch.testing.assert_close(evaluated, batch[0], atol=1e-5, rtol=0)
    finally:
        cfg.antialias = True


def _detectnet_rule(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """jetson-inference's gpuTensorNormMean (c/tensorConvert.cu) restated in NumPy: output pixel (x, y)
    reads source pixel ``(int)((float)x * scale.x)``, ``scale = make_float2((float)in_w / (float)out_w, ...)``,
    then ``(px * (1 / 255) - 0.5) / 0.5`` per RGB channel, all in float32."""
    h, w = img.shape[:2]
    sx, sy = np.float32(w) / np.float32(out_w), np.float32(h) / np.float32(out_h)
    xs = (np.arange(out_w, dtype=np.float32) * sx).astype(np.int64)
    ys = (np.arange(out_h, dtype=np.float32) * sy).astype(np.int64)
    px = img[ys][:, xs].astype(np.float32)
    return ((px * np.float32(1 / 255) - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)


@pytest.mark.parametrize("shape,size", [((480, 640), (300, 300)), ((37, 61), (64, 64)), ((300, 300), (300, 300)),
                                        ((333, 500), (320, 512)), ((720, 1280), (300, 300))])
def test_detectnet_preprocessing_is_jetson_inferences(shape, size):
    """--preprocess detectnet: the pixels detectNet feeds an exported SSD (nearest-neighbour sampling
    without half-pixel offset, RGB, (pixel / 255 - 0.5) / 0.5), as its CUDA kernel computes them; the
    same rule as torch's legacy nearest interpolation."""
    from ssdfast.detector import Preprocessing, prepare_image, resize_nearest

    img = _photo(*shape, seed=4)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    detectnet = Preprocessing(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "nearest")
    got = prepare_image(chw, detectnet).numpy()
    np.testing.assert_allclose(got, _detectnet_rule(img, *size), rtol=0, atol=1e-6)
    interpolated = torch.nn.functional.interpolate(chw[None].float(), size=size, mode="nearest")[0]
    torch.testing.assert_close(resize_nearest(chw, size).float(), interpolated, rtol=0, atol=0)
    if shape != size:  # not the antialiased bilinear image
        assert np.abs(prepare_image(chw, detectnet.with_resize("antialias")).numpy() - got).max() > 0.1


def test_preprocessing_values(model):
    from ssdfast.detector import Preprocessing

    own = Preprocessing.of(model.config)
    assert own == Preprocessing((64, 64), model.config.mean, model.config.std, "antialias")
    assert (Preprocessing.of(model.config, "nearest").resize == "nearest"
            and own.with_resize("opencv").resize == "opencv")
    with pytest.raises(ValueError, match="resize should be one of antialias, opencv, nearest, got 'bicubic'"):
        Preprocessing(64, (0.5,) * 3, (0.5,) * 3, "bicubic")
    with pytest.raises(ValueError, match="std should be positive"):
        Preprocessing(64, (0.5,) * 3, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="mean should be 3 finite numbers"):
        Preprocessing(64, (0.5, 0.5), (0.5,) * 3)


def test_detectnet_preprocessing_of_a_torch_model(model, tmp_path):
    """The torch runtime fed as detectNet feeds the export: nearest resize and the model's own mean/std,
    which the exported graph folds in (the same numbers as [-1, 1] into the graph)."""
    from ssdfast import load_detector
    from ssdfast.detector import prepare_image

    ckpt = tmp_path / "model.pth"
    save_checkpoint(ckpt, model, CLASSES)
    detector = load_detector(ckpt, runtime="torch", preprocess="detectnet", settings=EVERY)
    assert detector.preprocessing.resize == "nearest" and detector.preprocessing.mean == tuple(model.config.mean)
    assert "detectnet preprocessing" in detector.source.description
    image = _photo(90, 120, seed=5)
    batch, _ = detector.preprocess(image)
    into_graph = _detectnet_rule(image, 64, 64)  # what the exported graph is fed, in [-1, 1]
    mean = np.asarray(model.config.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(model.config.std, np.float32).reshape(3, 1, 1)
    np.testing.assert_allclose(batch[0].numpy(), ((into_graph + 1) / 2 - mean) / std, rtol=0, atol=1e-5)
    plain = load_detector(ckpt, runtime="torch", settings=EVERY)
    assert plain.preprocessing.resize == "antialias"
    assert not torch.equal(plain.preprocess(image)[0], batch)
    assert prepare_image(torch.from_numpy(image).permute(2, 0, 1), detector.preprocessing).shape == (3, 64, 64)


def test_from_file_reads_checkpoints_and_pytorch_ssd_files(model, tmp_path):
    """Detector.from_file: an ssdfast checkpoint as from_checkpoint reads it, and a pytorch-ssd state
    dict (mb2-ssd-lite's keys are pytorch-ssd's) with --net-style options, class names from a label
    file or labels.txt beside it; the pytorch-ssd model is fed OpenCV-style resizes."""
    from ssdfast.errors import ModelFileError

    image = np.random.default_rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    ckpt = tmp_path / "model.pth"
    save_checkpoint(ckpt, model, CLASSES)
    a = Detector.from_file(ckpt, settings=EVERY, fused=False)
    assert a.config.antialias and a.class_names == CLASSES
    torch.testing.assert_close(a(image)[0].scores, Detector(model, CLASSES, settings=EVERY)(image)[0].scores)

    folder = tmp_path / "jetson"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "ssd.pth")
    (folder / "labels.txt").write_text("cat\ndog\n")  # dusty-nv's format: no BACKGROUND line
    c = Detector.from_file(folder / "ssd.pth", net="mb2_ssd_lite", width_mult=0.25, resolution=64, settings=EVERY)
    assert c.class_names == CLASSES and c.config.antialias is False
    original = model.state_dict()
    for name, p in c.model.state_dict().items():
        torch.testing.assert_close(p, original[name])
    # same weights, other resize: the detections are those of the OpenCV-style input
    batch, sizes = preprocess(image, c.config)
    with torch.no_grad():
        conf, loc = model(batch)
    want = postprocess(conf, loc, model.priors, sizes, V, EVERY)[0]
    got, = c(image)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.boxes, want.boxes, rtol=1e-4, atol=1e-3)
    assert (c.preprocess(image)[0] - a.preprocess(image)[0]).abs().max() > 0.05  # not the antialiased input
    found = Detector.from_file(folder / "ssd.pth", fused=False)  # the network identified from the file
    assert found.config.name == "mb2-ssd-lite" and found.config.width_mult == 0.25 and found.class_names == CLASSES
    torch.save({"weight": torch.zeros(3)}, folder / "junk.pth")
    with pytest.raises(ModelFileError, match="--net"):
        Detector.from_file(folder / "junk.pth")


def test_detect_batch_gives_what_call_gives(model):
    images = [np.random.default_rng(s).integers(0, 255, (40 + s, 50, 3), dtype=np.uint8) for s in range(3)]
    # detect_batch: a batch prepared elsewhere (e.g. in loader workers) gives what __call__ gives
    fused = Detector(model, CLASSES, settings=EVERY)
    batch, sizes = preprocess(images, model.config)  # contiguous, on the CPU
    for a, b in zip(fused.detect_batch(batch, sizes), fused(images)):
        torch.testing.assert_close(a.boxes, b.boxes)
        assert a.label_names == b.label_names
    assert fused.detect_batch(torch.zeros(0, 3, 64, 64), []) == []
    with pytest.raises(ValueError, match="one size per image"):
        fused.detect_batch(batch, sizes[:1])


def test_settings_reach_the_op_whole(model, monkeypatch):
    """``detector.settings`` (or a call's own settings) is what ops.ssd_postprocess gets, field by field."""
    import ssdfast.ops

    images = [np.random.default_rng(s).integers(0, 255, (40 + 9 * s, 50, 3), dtype=np.uint8) for s in range(2)]
    detector = Detector(model, CLASSES, fused=False)
    assert detector.settings == DISPLAY  # the default: for showing detections
    seen = []
    real = ssdfast.ops.ssd_postprocess

    def spy(*args, **kwargs):
        seen.append({name: kwargs[name] for name in ("score_threshold", "iou_threshold", "top_k", "max_detections")})
        return real(*args, **kwargs)

    monkeypatch.setattr(ssdfast.ops, "ssd_postprocess", spy)
    odd = PostprocessSettings(score_threshold=0.123, iou_threshold=0.321, top_k=7, max_detections=9)
    detector(images)
    detector(images, odd)
    detector.settings = odd
    detector(images)
    assert seen == [asdict(DISPLAY), asdict(odd), asdict(odd)]
    with pytest.raises(TypeError, match="settings should be a PostprocessSettings, got float"):
        detector.settings = 0.3
    with pytest.raises(TypeError, match="settings should be a PostprocessSettings, got float"):
        Detector(model, CLASSES, "cpu", 0.3)


def test_each_setting_changes_the_detections_as_it_says(model):
    images = [np.random.default_rng(s).integers(0, 255, (40 + 9 * s, 50, 3), dtype=np.uint8) for s in range(2)]
    detector = Detector(model, CLASSES, settings=EVERY, fused=False)
    every = detector(images)
    with torch.no_grad():
        probabilities = torch.softmax(model(preprocess(images, model.config)[0])[0], -1)
    assert all(len(d) > 2 for d in every)
    # top_k=1: one candidate per class, so one detection per class, its best-scoring prior
    for i, det in enumerate(detector(images, replace(EVERY, top_k=1))):
        assert sorted(det.labels.tolist()) == [1, 2]
        for label, score in zip(det.labels.tolist(), det.scores.tolist()):
            assert score == pytest.approx(probabilities[i, :, label].max().item())
    # max_detections=1: the best detection of all
    for det, whole in zip(detector(images, replace(EVERY, max_detections=1)), every):
        assert len(det) == 1 and torch.equal(det.boxes, whole.boxes[:1]) and det.scores[0] == whole.scores[0]
    # a score threshold keeps the detections scoring above it, the same ones
    cut = float(every[0].scores[len(every[0]) // 2])
    for det, whole in zip(detector(images, replace(EVERY, score_threshold=cut)), every):
        assert det.scores.tolist() == [s for s in whole.scores.tolist() if s > cut]
    assert [len(d) for d in detector(images, replace(EVERY, score_threshold=1.0))] == [0, 0]
    # iou_threshold 0: one box per class survives wherever boxes overlap at all
    loose = detector(images, replace(EVERY, iou_threshold=1.0))
    strict = detector(images, replace(EVERY, iou_threshold=0.0))
    assert all(len(s) < len(w) for s, w in zip(strict, loose))
