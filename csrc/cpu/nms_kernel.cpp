// batched_nms on CPU: boxes ordered by (score desc, index asc), split by category, greedy NMS
// within each category (categories in parallel), kept boxes returned in the global order.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "box_utils.h"

namespace ssdfast {
namespace {

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  check_boxes(boxes, "boxes", 2);
  const int64_t n = boxes.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n, "scores should be a 1-D tensor of N=", n, " elements");
  TORCH_CHECK(scores.is_floating_point(), "scores should be a floating-point tensor");
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == n, "idxs should be a 1-D tensor of N=", n, " elements");
  TORCH_CHECK(!idxs.is_floating_point(), "idxs should be an integer tensor");
  check_same_device(boxes, "boxes", scores, "scores");
  check_same_device(boxes, "boxes", idxs, "idxs");
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1]");
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));

  const at::Tensor bf = boxes.to(at::kFloat).contiguous();
  const at::Tensor sf = scores.to(at::kFloat).contiguous();
  const at::Tensor cf = idxs.to(at::kLong).contiguous();
  const float* pb = bf.data_ptr<float>();
  const float* ps = sf.data_ptr<float>();
  const int64_t* pc = cf.data_ptr<int64_t>();
  const float thr = static_cast<float>(iou_threshold);

  // rank -> original index, by (score desc, index asc)
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [ps](int64_t i, int64_t j) { return score_before(ps[i], i, ps[j], j); });
  // ranks grouped by category, score order kept within a category
  std::vector<int64_t> by_class(n);
  std::iota(by_class.begin(), by_class.end(), 0);
  std::stable_sort(by_class.begin(), by_class.end(),
                   [&](int64_t r1, int64_t r2) { return pc[order[r1]] < pc[order[r2]]; });
  std::vector<int64_t> starts{0};
  for (int64_t i = 1; i < n; ++i)
    if (pc[order[by_class[i]]] != pc[order[by_class[i - 1]]]) starts.push_back(i);
  starts.push_back(n);
  const int64_t num_groups = static_cast<int64_t>(starts.size()) - 1;

  std::vector<uint8_t> keep_rank(n, 0);
  at::parallel_for(0, num_groups, 1, [&](int64_t gbegin, int64_t gend) {
    std::vector<float> gboxes;
    std::vector<uint8_t> suppressed;
    for (int64_t g = gbegin; g < gend; ++g) {
      const int64_t s = starts[g], e = starts[g + 1], m = e - s;
      gboxes.resize(static_cast<size_t>(m) * 4);
      for (int64_t i = 0; i < m; ++i)
        for (int k = 0; k < 4; ++k) gboxes[4 * i + k] = pb[4 * order[by_class[s + i]] + k];
      suppressed.assign(m, 0);
      for (int64_t i = 0; i < m; ++i) {
        if (suppressed[i]) continue;
        keep_rank[by_class[s + i]] = 1;
        const float* bi = gboxes.data() + 4 * i;
        for (int64_t j = i + 1; j < m; ++j) {
          if (!suppressed[j] && iou_xyxy(bi, gboxes.data() + 4 * j) > thr) suppressed[j] = 1;
        }
      }
    }
  });
  const int64_t kept = std::accumulate(keep_rank.begin(), keep_rank.end(), int64_t{0});
  at::Tensor out = at::empty({kept}, boxes.options().dtype(at::kLong));
  int64_t* po = out.data_ptr<int64_t>();
  for (int64_t r = 0, k = 0; r < n; ++r)
    if (keep_rank[r]) po[k++] = order[r];
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) { m.impl("batched_nms", &batched_nms_cpu); }

}  // namespace ssdfast
