// hard_negative_mask on CPU: per row, nth_element selects the k hardest negatives in O(P),
// instead of the two full argsorts SSD implementations usually do.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "box_utils.h"

namespace ssdfast {
namespace {

at::Tensor hard_negative_mask_cpu(const at::Tensor& neg_loss, const at::Tensor& labels, int64_t neg_pos_ratio) {
  TORCH_CHECK(neg_loss.dim() == 2, "neg_loss should be a 2-D tensor [B, P], got ", neg_loss.dim(), "-D");
  TORCH_CHECK(neg_loss.is_floating_point(), "neg_loss should be a floating-point tensor, got ", neg_loss.scalar_type());
  TORCH_CHECK(labels.sizes() == neg_loss.sizes(), "labels should have the shape of neg_loss");
  TORCH_CHECK(!labels.is_floating_point() && labels.scalar_type() != at::kBool, "labels should be an integer tensor");
  check_same_device(neg_loss, "neg_loss", labels, "labels");
  TORCH_CHECK(neg_pos_ratio >= 0, "neg_pos_ratio should be non-negative, got ", neg_pos_ratio);
  const int64_t B = neg_loss.size(0), P = neg_loss.size(1);
  at::Tensor mask = at::empty({B, P}, labels.options().dtype(at::kBool));
  if (B == 0 || P == 0) return mask;
  const at::Tensor lf = neg_loss.to(at::kFloat).contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  const float* pl = lf.data_ptr<float>();
  const int64_t* plab = lab.data_ptr<int64_t>();
  bool* pm = mask.data_ptr<bool>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> negatives;
    for (int64_t b = begin; b < end; ++b) {
      const float* loss = pl + b * P;
      const int64_t* row = plab + b * P;
      bool* m = pm + b * P;
      negatives.clear();
      int64_t num_pos = 0;
      for (int64_t p = 0; p < P; ++p) {
        m[p] = row[p] > 0;
        num_pos += row[p] > 0;
        if (row[p] == 0) negatives.push_back(p);
      }
      const int64_t num_neg = static_cast<int64_t>(negatives.size());
      const int64_t k = std::min(num_pos * neg_pos_ratio, num_neg);
      if (k <= 0) continue;
      auto harder = [loss](int64_t i, int64_t j) { return score_before(loss[i], i, loss[j], j); };
      if (k < num_neg) std::nth_element(negatives.begin(), negatives.begin() + k, negatives.end(), harder);
      for (int64_t i = 0; i < k; ++i) m[negatives[i]] = true;
    }
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) { m.impl("hard_negative_mask", &hard_negative_mask_cpu); }

}  // namespace ssdfast
