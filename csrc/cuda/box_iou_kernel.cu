// box_iou on CUDA: one thread per (i, j) pair, threads of a warp along j so the stores coalesce.
#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

constexpr int kTileX = 32;
constexpr int kTileY = 8;

__global__ void box_iou_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n, int64_t m,
                               float* __restrict__ out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTileX + threadIdx.x;
  if (j >= m) return;
  float bj[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) bj[c] = b[j * 4 + c];
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * kTileY + threadIdx.y; i < n;
       i += static_cast<int64_t>(gridDim.y) * kTileY) {
    float ai[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) ai[c] = a[i * 4 + c];
    out[i * m + j] = iou_xyxy(ai, bj);
  }
}

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace ssdfast {
namespace {
at::Tensor box_iou_cuda(const at::Tensor& a, const at::Tensor& b) {
  check_boxes(a, "a", 2);
  check_boxes(b, "b", 2);
  check_same_device(a, "a", b, "b");
  const auto out_dtype = c10::promoteTypes(a.scalar_type(), b.scalar_type());
  const int64_t n = a.size(0), m = b.size(0);
  if (n == 0 || m == 0) return at::empty({n, m}, a.options().dtype(out_dtype));

  c10::cuda::CUDAGuard guard(a.device());
  const at::Tensor af = a.to(at::kFloat).contiguous();
  const at::Tensor bf = b.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({n, m}, af.options());
  const dim3 block(kTileX, kTileY);
  const dim3 grid(static_cast<unsigned>(cuda::ceil_div(m, kTileX)),
                  static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(n, kTileY), 65535)));
  box_iou_kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(af.data_ptr<float>(), bf.data_ptr<float>(), n,
                                                                         m, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) { m.impl("box_iou", &box_iou_cuda); }

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
