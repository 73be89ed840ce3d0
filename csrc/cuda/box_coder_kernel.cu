// encode_boxes / decode_boxes on CUDA: one thread per box row, prior = row % P.
#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

constexpr int kThreads = 256;

template <bool kEncode>
__global__ void box_coder_kernel(const float* __restrict__ in, const float* __restrict__ priors, int64_t rows,
                                 int64_t num_priors, float v0, float v1, float* __restrict__ out) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t p = r % num_priors;
    float x[4], pr[4], y[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      x[c] = in[r * 4 + c];
      pr[c] = priors[p * 4 + c];
    }
    if (kEncode) {
      encode_one(x, pr, v0, v1, y);
    } else {
      decode_one(x, pr, v0, v1, y);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) out[r * 4 + c] = y[c];
  }
}

template __global__ void box_coder_kernel<true>(const float*, const float*, int64_t, int64_t, float, float, float*);
template __global__ void box_coder_kernel<false>(const float*, const float*, int64_t, int64_t, float, float, float*);

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace ssdfast {
namespace {
template <bool kEncode>
at::Tensor box_coder_cuda(const at::Tensor& boxes, const at::Tensor& priors, c10::ArrayRef<double> variances,
                          const char* name) {
  check_boxes(boxes, name, -1);
  TORCH_CHECK(boxes.dim() >= 2, name, " should have at least 2 dimensions, got ", boxes.dim());
  check_boxes(priors, "priors", 2);
  check_same_device(boxes, name, priors, "priors");
  check_variances(variances);
  const int64_t num_priors = priors.size(0);
  TORCH_CHECK(boxes.size(-2) == num_priors, name, " should have P=", num_priors, " rows (one per prior), got ",
              boxes.size(-2));
  const auto out_dtype = boxes.scalar_type();
  if (boxes.numel() == 0) return at::empty(boxes.sizes(), boxes.options());

  c10::cuda::CUDAGuard guard(boxes.device());
  const at::Tensor in = boxes.to(at::kFloat).contiguous();
  const at::Tensor pf = priors.to(at::kFloat).contiguous();
  at::Tensor out = at::empty(in.sizes(), in.options());
  const int64_t rows = in.numel() / 4;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(rows, kThreads), 1 << 20));
  box_coder_kernel<kEncode><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      in.data_ptr<float>(), pf.data_ptr<float>(), rows, num_priors, static_cast<float>(variances[0]),
      static_cast<float>(variances[1]), out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

at::Tensor encode_boxes_cuda(const at::Tensor& boxes, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  return box_coder_cuda<true>(boxes, priors, variances, "boxes");
}

at::Tensor decode_boxes_cuda(const at::Tensor& loc, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  return box_coder_cuda<false>(loc, priors, variances, "loc");
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) {
  m.impl("encode_boxes", &encode_boxes_cuda);
  m.impl("decode_boxes", &decode_boxes_cuda);
}

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
