// encode_boxes / decode_boxes on CPU: an elementwise pass over [..., P, 4], prior = row % P.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "box_utils.h"

namespace ssdfast {
namespace {

template <typename Fn>
at::Tensor apply_rows(const at::Tensor& x, const at::Tensor& priors, Fn fn) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const at::Tensor pf = priors.to(at::kFloat).contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  const int64_t rows = x.numel() / 4;
  const int64_t num_priors = priors.size(0);
  if (rows > 0) {
    const float* px = xf.data_ptr<float>();
    const float* pp = pf.data_ptr<float>();
    float* po = out.data_ptr<float>();
    at::parallel_for(0, rows, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) fn(px + 4 * r, pp + 4 * (r % num_priors), po + 4 * r);
    });
  }
  return x.scalar_type() == at::kFloat ? out : out.to(x.scalar_type());
}

void check_coder_args(const at::Tensor& x, const char* name, const at::Tensor& priors, c10::ArrayRef<double> v) {
  check_boxes(x, name, -1);
  TORCH_CHECK(x.dim() >= 2, name, " should have at least 2 dimensions [..., P, 4]");
  check_boxes(priors, "priors", 2);
  check_same_device(x, name, priors, "priors");
  TORCH_CHECK(x.size(-2) == priors.size(0), name, " should have P=", priors.size(0), " rows, got ", x.size(-2));
  check_variances(v);
}

at::Tensor encode_boxes_cpu(const at::Tensor& boxes, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  check_coder_args(boxes, "boxes", priors, variances);
  const float v0 = static_cast<float>(variances[0]), v1 = static_cast<float>(variances[1]);
  return apply_rows(boxes, priors, [=](const float* b, const float* p, float* o) { encode_one(b, p, v0, v1, o); });
}

at::Tensor decode_boxes_cpu(const at::Tensor& loc, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  check_coder_args(loc, "loc", priors, variances);
  const float v0 = static_cast<float>(variances[0]), v1 = static_cast<float>(variances[1]);
  return apply_rows(loc, priors, [=](const float* l, const float* p, float* o) { decode_one(l, p, v0, v1, o); });
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) {
  m.impl("encode_boxes", &encode_boxes_cpu);
  m.impl("decode_boxes", &decode_boxes_cpu);
}

}  // namespace ssdfast
