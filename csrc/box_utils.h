// Box arithmetic shared by the CPU and CUDA kernels.
//
// The order of float operations matches ssdfast/ops/reference.py, so IoUs (and therefore matching
// and NMS decisions) agree with the reference bit for bit; setup.py turns off FMA contraction for
// the same reason. exp/log may differ from PyTorch's in the last bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#if !defined(__CUDA_ARCH__)  // host-side checks only; device passes skip the heavy headers
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#endif

#if defined(__CUDACC__)
#define SSDFAST_HD __host__ __device__ __forceinline__
#else
#define SSDFAST_HD inline
#endif

namespace ssdfast {

// Smallest width/height in encode (reference.ENCODE_EPS) and the exp clamp in decode
// (reference.DECODE_CLAMP = log(1000 / 16)), both as float32.
constexpr float kEncodeEps = 1e-6f;
constexpr float kDecodeClamp = 4.135166556742356f;

// IoU of two xyxy boxes; 0 when either is degenerate (x2 <= x1 or y2 <= y1).
SSDFAST_HD float iou_xyxy(const float* a, const float* b) {
  const float iw = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]), 0.f);
  const float ih = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]), 0.f);
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float uni = (area_a + area_b) - inter;
  const bool valid = (a[2] > a[0]) && (a[3] > a[1]) && (b[2] > b[0]) && (b[3] > b[1]);
  return valid ? inter / uni : 0.f;
}

// cxcywh prior -> xyxy.
SSDFAST_HD void cxcywh_to_xyxy(const float* p, float* out) {
  const float hw = p[2] / 2.f;
  const float hh = p[3] / 2.f;
  out[0] = p[0] - hw;
  out[1] = p[1] - hh;
  out[2] = p[0] + hw;
  out[3] = p[1] + hh;
}

// SSD offsets of xyxy box b against cxcywh prior p.
SSDFAST_HD void encode_one(const float* b, const float* p, float v0, float v1, float* out) {
  const float pw = fmaxf(p[2], kEncodeEps);
  const float ph = fmaxf(p[3], kEncodeEps);
  const float cx = (b[0] + b[2]) / 2.f;
  const float cy = (b[1] + b[3]) / 2.f;
  const float w = fmaxf(b[2] - b[0], kEncodeEps);
  const float h = fmaxf(b[3] - b[1], kEncodeEps);
  out[0] = (cx - p[0]) / (pw * v0);
  out[1] = (cy - p[1]) / (ph * v0);
  out[2] = logf(w / pw) / v1;
  out[3] = logf(h / ph) / v1;
}

// xyxy box from SSD offsets l against cxcywh prior p.
SSDFAST_HD void decode_one(const float* l, const float* p, float v0, float v1, float* out) {
  const float cx = l[0] * v0 * p[2] + p[0];
  const float cy = l[1] * v0 * p[3] + p[1];
  const float w = expf(fminf(l[2] * v1, kDecodeClamp)) * p[2];
  const float h = expf(fminf(l[3] * v1, kDecodeClamp)) * p[3];
  const float hw = w / 2.f;
  const float hh = h / 2.f;
  out[0] = cx - hw;
  out[1] = cy - hh;
  out[2] = cx + hw;
  out[3] = cy + hh;
}

// NaN-aware "a ranks before b" for descending scores, ties by lower index (as torch.sort(stable)).
SSDFAST_HD bool score_before(float sa, int64_t ia, float sb, int64_t ib) {
  const bool na = sa != sa, nb = sb != sb;
  if (na != nb) return na;  // NaN sorts first in a descending torch.sort
  if (!na && sa != sb) return sa > sb;
  return ia < ib;
}

#if !defined(__CUDA_ARCH__)
// Host-side argument checks shared by both backends (the Python wrappers check too, with the
// user-facing names; these guard direct torch.ops.ssdfast.* calls).
inline void check_boxes(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(dim < 0 || t.dim() == dim, name, " should be a ", dim, "-D tensor, got ", t.dim(), "-D");
  TORCH_CHECK(t.dim() >= 1 && t.size(-1) == 4, name, " should have 4 elements in its last dimension, got ",
              t.dim() ? t.size(-1) : 0);
  TORCH_CHECK(t.is_floating_point(), name, " should be a floating-point tensor, got ", t.scalar_type());
}

inline void check_variances(c10::ArrayRef<double> v) {
  TORCH_CHECK(v.size() == 2 && v[0] > 0 && v[1] > 0, "variances should be two positive numbers");
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.device() == b.device(), "all tensors should be on the same device, got ", an, " on ", a.device(),
              " and ", bn, " on ", b.device());
}

#endif  // !defined(__CUDA_ARCH__)

}  // namespace ssdfast
