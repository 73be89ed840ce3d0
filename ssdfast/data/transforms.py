"""SSD input transforms on torchvision.transforms.v2 (the paper's augmentations, as torchvision's SSD recipe).

Both transforms take a decoded ``uint8`` image ``[3, H, W]``, boxes in pixels ``xyxy`` ``float [G, 4]``
and labels ``int64 [G]``, and return ``(image float32 [3, S, S] normalized, boxes float32 [G', 4]
normalized xyxy in [0, 1], labels int64 [G'])``. The image stays ``uint8`` until the final
normalization, ``(x / 255 - mean) / std`` with ``mean``/``std`` given for images scaled to [0, 1]
(``model.config.mean`` / ``model.config.std``).

:class:`TrainTransform`: photometric distortion -> zoom out (expand onto a mean-coloured canvas up to
4x) -> IoU-constrained random crop (min IoU sampled from {none, 0.1, 0.3, 0.5, 0.7, 0.9}, crop kept
only when a box centre lies inside; boxes whose centre falls outside are dropped) -> horizontal flip
-> resize to ``size x size`` -> clamp and drop boxes under 1 output pixel -> normalize.
:class:`EvalTransform`: resize and normalize only.

:func:`resize_image` is the one resize to the network's input, for evaluation and inference alike
(``ssdfast.detector`` uses it): torchvision's antialiased bilinear (what ssdfast trains with) or, for a
model whose ``config.antialias`` is False (pytorch-ssd's, trained on ``cv2.resize``), OpenCV's
``INTER_LINEAR`` restated in torch, fixed-point arithmetic included.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["TrainTransform", "EvalTransform", "normalize_uint8", "resize_image"]


def _labels_of(sample: dict) -> Tensor:
    """labels_getter for SanitizeBoundingBoxes (module level so the transform pickles for workers)."""
    return sample["labels"]


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
    std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
    if mean_t.numel() != 3 or std_t.numel() != 3:
        raise ValueError(f"mean and std should have 3 values (one per channel), got {list(mean)} and {list(std)}")
    if (std_t <= 0).any():
        raise ValueError(f"std should be positive, got {list(std)}")
    if (mean_t.abs() > 1.5).any() or (std_t > 1.5).any():
        raise ValueError(
            f"mean/std are given for images scaled to [0, 1] (e.g. 0.5, 0.5), got mean={list(mean)} std={list(std)}"
        )
    return (mean_t * 255.0).view(3, 1, 1), (std_t * 255.0).view(3, 1, 1)


def normalize_uint8(image: Tensor, mean255: Tensor, std255: Tensor) -> Tensor:
    """uint8 ``[3, H, W]`` -> float32 ``(x - 255 * mean) / (255 * std)`` in one pass."""
    return image.to(torch.float32).sub_(mean255).div_(std255)


def resize_image(image: Tensor, size: int | tuple[int, int], *, antialias: bool = True) -> Tensor:
    """``image [..., C, H, W]`` (uint8, or float) -> ``[..., C, size, size]`` (``size`` an int) or
    ``[..., C, h, w]`` (``size = (h, w)``) of the same dtype, aspect ratio not kept.

    ``antialias=True``: torchvision's bilinear with antialiasing (what ssdfast trains with).
    ``antialias=False``: OpenCV's ``cv2.resize(..., INTER_LINEAR)`` as pytorch-ssd feeds its models:
    half-pixel centres, edge pixels repeated, no antialiasing; on uint8 images OpenCV's own 11-bit
    fixed-point weights and rounding (see :func:`_resize_like_opencv`), so the pixels are OpenCV's
    (measured against OpenCV 4.14 and 5.0: identical on downscaled photos; upscales differ by 1 on
    a few pixels in a hundred at most); float images are interpolated in float
    (``F.interpolate(mode="bilinear", align_corners=False)``, the same rule without rounding).
    """
    out_h, out_w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == (out_h, out_w):
        return image
    if antialias:
        return F.resize(image.contiguous(), [out_h, out_w], antialias=True)
    if image.dtype == torch.uint8:
        return _resize_like_opencv(image, out_h, out_w)
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    out = torch.nn.functional.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                          antialias=False)
    return out.reshape(*lead, *out.shape[-3:])


#: OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights of uint8 resizes are integers summing to 2**11.
_COEF_ONE = 1 << 11


def _opencv_taps(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and fixed-point weights of OpenCV's INTER_LINEAR along one axis:
    ``(i0, i1, w0, w1)`` with ``out[j] ~ (w0[j] * in[i0[j]] + w1[j] * in[i1[j]]) / 2048``."""
    scale = 1.0 / (n_out / n_in)  # OpenCV: scale = 1 / inv_scale, in double
    f = ((torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).to(torch.float32)
    i0 = torch.floor(f)
    frac = f - i0
    i0 = i0.to(torch.int64)
    before = i0 < 0  # left of the first pixel's centre: the first pixel
    after = i0 >= n_in - 1  # right of the last one's: the last pixel
    frac = torch.where(before | after, torch.zeros_like(frac), frac)
    i0 = i0.clamp(0, n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w0 = torch.round((1.0 - frac) * _COEF_ONE).to(torch.int32)
    return i0, i1, w0, _COEF_ONE - w0


def _resize_like_opencv(image: Tensor, out_h: int, out_w: int) -> Tensor:
    """uint8 ``[..., H, W]`` -> uint8 ``[..., out_h, out_w]`` as OpenCV's ``cv2.resize`` INTER_LINEAR.

    OpenCV computes uint8 bilinear resizes in fixed point: 11-bit weights, a horizontal pass into
    integers, then a vertical pass that drops 4 bits of each row, multiplies by the 11-bit weights
    keeping the high 16 bits of each product, and rounds the sum ((a + b + 2) >> 2). This is that
    arithmetic in int32 torch ops (any device); its exact 2x downscale (which OpenCV sends to
    INTER_AREA) comes out the same, the 2x2 mean rounded half up.
    """
    in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
    x0, x1, a0, a1 = _opencv_taps(in_w, out_w, image.device)
    y0, y1, b0, b1 = _opencv_taps(in_h, out_h, image.device)

    def rows(index: Tensor, weights: Tensor) -> Tensor:  # rows ``index``: horizontal pass, then weighted
        r = image.index_select(-2, index)
        shape = (*r.shape[:-1], out_w)
        h = torch.gather(r, -1, x0.expand(shape)).to(torch.int32).mul_(a0)  # gather: faster than index_select here
        h += torch.gather(r, -1, x1.expand(shape)).to(torch.int32).mul_(a1)
        return h.bitwise_right_shift_(4).mul_(weights[:, None]).bitwise_right_shift_(16)

    out = rows(y0, b0).add_(rows(y1, b1))
    return out.add_(2).bitwise_right_shift_(2).to(torch.uint8)  # <= (1020 + 2) >> 2 = 255: no clamp needed


def _check_inputs(image: Tensor, boxes: Tensor, labels: Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image should be a uint8 tensor [3, H, W], got {image.dtype} {tuple(image.shape)}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes should be [G, 4] pixels xyxy, got {tuple(boxes.shape)}")
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"labels should have one entry per box: {labels.shape[0]} labels for {boxes.shape[0]} boxes")


class _IoUCrop(v2.RandomIoUCrop):
    """v2.RandomIoUCrop with the same sampling rule, its ``trials`` drawn and tested at once.

    torchvision's version tests one candidate crop per Python iteration (up to 40 per IoU option,
    a dozen tensor ops each): half of the whole training transform's time. Here the candidates of
    an option are tested in a few vectorized ops and the first valid one is taken, as before.
    """

    def make_params(self, flat_inputs: list) -> dict:
        try:
            from torchvision.transforms.v2._utils import get_bounding_boxes, query_size
        except ImportError:  # a torchvision that moved its helpers: its own (slower) sampler
            return super().make_params(flat_inputs)

        orig_h, orig_w = query_size(flat_inputs)
        boxes = get_bounding_boxes(flat_inputs)
        boxes = F.convert_bounding_box_format(
            boxes.as_subclass(torch.Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY
        ).to(torch.float32)
        cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
        cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        while True:
            idx = int(torch.randint(low=0, high=len(self.options), size=(1,)))
            min_iou = self.options[idx]
            if min_iou >= 1.0:  # the leave-as-is option
                return dict()
            r = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            new_w = (orig_w * r[:, 0]).floor()
            new_h = (orig_h * r[:, 1]).floor()
            aspect = new_w / new_h.clamp(min=1)
            r = torch.rand(self.trials, 2)
            left = ((orig_w - new_w) * r[:, 0]).floor()
            top = ((orig_h - new_h) * r[:, 1]).floor()
            right, bottom = left + new_w, top + new_h
            ok = (aspect >= self.min_aspect_ratio) & (aspect <= self.max_aspect_ratio) & (new_w > 0) & (new_h > 0)
            within = (left[:, None] < cx) & (cx < right[:, None]) & (top[:, None] < cy) & (cy < bottom[:, None])
            iw = (torch.minimum(right[:, None], boxes[:, 2]) - torch.maximum(left[:, None], boxes[:, 0])).clamp(min=0)
            ih = (torch.minimum(bottom[:, None], boxes[:, 3]) - torch.maximum(top[:, None], boxes[:, 1])).clamp(min=0)
            inter = iw * ih
            iou = inter / (area + (new_w * new_h)[:, None] - inter).clamp(min=1e-6)
            best = (torch.where(within, iou, torch.full_like(iou, -1.0)).amax(dim=1) if len(boxes)
                    else torch.full((self.trials,), -1.0))
            ok &= within.any(dim=1) & (best >= min_iou)
            hits = torch.nonzero(ok)
            if len(hits):
                t = int(hits[0])
                return dict(
                    top=int(top[t]), left=int(left[t]), height=int(new_h[t]), width=int(new_w[t]),
                    is_within_crop_area=within[t],
                )


class _SquareNormalized:
    """What both transforms share: the output side and the normalization, checked."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        if int(size) <= 0:
            raise ValueError(f"size should be positive, got {size}")
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean255, self._std255 = _check_mean_std(mean, std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, mean={self.mean}, std={self.std})"


class TrainTransform(_SquareNormalized):
    """SSD training augmentation (see the module docstring).

    Args:
        size: output side in pixels (square).
        mean, std: per-channel normalization for images scaled to [0, 1].
        zoom_out_max: largest zoom-out canvas side, relative to the image (the paper: 4).
        p_photometric, p_zoom_out, p_flip: probabilities of those steps.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        zoom_out_max: float = 4.0,
        p_photometric: float = 0.5,
        p_zoom_out: float = 0.5,
        p_flip: float = 0.5,
    ):
        super().__init__(size, mean, std)
        fill = [int(round(v)) for v in self._mean255.flatten().tolist()]
        self._photometric = v2.RandomPhotometricDistort(p=p_photometric)
        self._zoom_out = v2.RandomZoomOut(fill=fill, side_range=(1.0, float(zoom_out_max)), p=p_zoom_out)
        self._crop = _IoUCrop()
        self._flip = v2.RandomHorizontalFlip(p=p_flip)
        self._resize = v2.Resize((self.size, self.size), antialias=True)
        self._clamp = v2.ClampBoundingBoxes()
        self._sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_of)

    def __call__(self, image: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 [3,H,W], pixel xyxy [G,4], int64 [G] -> float [3,S,S] normalized, normalized xyxy [G',4], [G']."""
        _check_inputs(image, boxes, labels)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        sample = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(boxes.to(torch.float32), format="XYXY", canvas_size=(height, width)),
            "labels": labels,
        }
        sample = self._photometric(sample)
        sample = self._zoom_out(sample)
        if labels.numel() > 0:  # the IoU crop needs a box to aim at
            sample = self._crop(sample)
        sample = self._flip(sample)
        sample = self._resize(sample)
        sample = self._clamp(sample)
        sample = self._sanitize(sample)
        out_image = normalize_uint8(sample["image"].as_subclass(torch.Tensor), self._mean255, self._std255)
        out_boxes = sample["boxes"].as_subclass(torch.Tensor).to(torch.float32) / float(self.size)
        return out_image, out_boxes.clamp_(0.0, 1.0), sample["labels"].to(torch.int64)



class EvalTransform(_SquareNormalized):
    """Resize to ``size x size`` and normalize (see the module docstring).

    ``antialias``: the model's ``config.antialias`` (False for pytorch-ssd models: OpenCV's bilinear,
    see :func:`resize_image`).
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, antialias: bool = True):
        super().__init__(size, mean, std)
        self.antialias = bool(antialias)

    def __call__(self, image: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 [3,H,W], pixel xyxy [G,4], int64 [G] -> float [3,S,S] normalized, normalized xyxy [G,4], [G]."""
        _check_inputs(image, boxes, labels)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        resized = resize_image(image, self.size, antialias=self.antialias)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        out_boxes = (boxes.to(torch.float32) / scale).clamp_(0.0, 1.0)
        return normalize_uint8(resized, self._mean255, self._std255), out_boxes, labels.to(torch.int64)
