// box_iou on CPU: rows of the [N, M] output split across threads.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "box_utils.h"

namespace ssdfast {
namespace {

at::Tensor box_iou_cpu(const at::Tensor& a, const at::Tensor& b) {
  check_boxes(a, "a", 2);
  check_boxes(b, "b", 2);
  check_same_device(a, "a", b, "b");
  const auto out_dtype = c10::promoteTypes(a.scalar_type(), b.scalar_type());
  const int64_t n = a.size(0), m = b.size(0);
  if (n == 0 || m == 0) return at::zeros({n, m}, a.options().dtype(out_dtype));
  const at::Tensor af = a.to(at::kFloat).contiguous();
  const at::Tensor bf = b.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({n, m}, a.options().dtype(at::kFloat));
  const float* pa = af.data_ptr<float>();
  const float* pb = bf.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t j = 0; j < m; ++j) po[i * m + j] = iou_xyxy(pa + 4 * i, pb + 4 * j);
    }
  });
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) { m.impl("box_iou", &box_iou_cpu); }

}  // namespace ssdfast
