// ssd_postprocess on CPU: the SSD inference tail fused, with fixed-size outputs.
//
//   1. decode every prior of every image                       (parallel over rows)
//   2. per (image, class): score filter, top_k by (score desc, prior asc), greedy NMS
//                                                              (parallel over image x class)
//   3. per image: merge the classes by (score desc, class asc, prior asc), cut to max_detections
//                                                              (parallel over images)
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "box_utils.h"

namespace ssdfast {
namespace {

struct Candidate {
  float score;
  int32_t prior;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cpu(
    const at::Tensor& loc, const at::Tensor& scores, const at::Tensor& priors, c10::ArrayRef<double> variances,
    double score_threshold, double iou_threshold, int64_t top_k, int64_t max_detections) {
  check_boxes(loc, "loc", 3);
  check_boxes(priors, "priors", 2);
  TORCH_CHECK(scores.dim() == 3, "scores should be a 3-D tensor [B, P, C], got ", scores.dim(), "-D");
  TORCH_CHECK(scores.is_floating_point(), "scores should be a floating-point tensor");
  TORCH_CHECK(scores.size(0) == loc.size(0) && scores.size(1) == loc.size(1), "scores should match loc in [B, P]");
  TORCH_CHECK(loc.size(1) == priors.size(0), "loc should have P=", priors.size(0), " rows, got ", loc.size(1));
  check_same_device(loc, "loc", scores, "scores");
  check_same_device(loc, "loc", priors, "priors");
  check_variances(variances);
  TORCH_CHECK(score_threshold >= 0.0 && score_threshold <= 1.0, "score_threshold should be in [0, 1]");
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1]");
  TORCH_CHECK(top_k >= 1, "top_k should be a positive integer, got ", top_k);
  TORCH_CHECK(max_detections >= 1, "max_detections should be a positive integer, got ", max_detections);

  const int64_t B = scores.size(0), P = scores.size(1), C = scores.size(2), K = max_detections;
  at::Tensor out_boxes = at::zeros({B, K, 4}, loc.options().dtype(at::kFloat));
  at::Tensor out_scores = at::zeros({B, K}, scores.options().dtype(at::kFloat));
  at::Tensor out_labels = at::zeros({B, K}, scores.options().dtype(at::kLong));
  at::Tensor out_num = at::zeros({B}, scores.options().dtype(at::kLong));
  if (B > 0 && P > 0 && C > 1) {
    TORCH_CHECK(P < (int64_t{1} << 31), "too many priors: ", P);
    const at::Tensor lf = loc.to(at::kFloat).contiguous();
    const at::Tensor sf = scores.to(at::kFloat).contiguous();
    const at::Tensor pf = priors.to(at::kFloat).contiguous();
    const float* pl = lf.data_ptr<float>();
    const float* ps = sf.data_ptr<float>();
    const float* pp = pf.data_ptr<float>();
    const float v0 = static_cast<float>(variances[0]), v1 = static_cast<float>(variances[1]);
    const float sthr = static_cast<float>(score_threshold), ithr = static_cast<float>(iou_threshold);
    const int64_t k = std::min(top_k, P);
    const int64_t NC = C - 1;

    std::vector<float> decoded(static_cast<size_t>(B * P * 4));
    at::parallel_for(0, B * P, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) decode_one(pl + 4 * r, pp + 4 * (r % P), v0, v1, decoded.data() + 4 * r);
    });

    std::vector<std::vector<Candidate>> kept(static_cast<size_t>(B * NC));
    at::parallel_for(0, B * NC, 1, [&](int64_t begin, int64_t end) {
      std::vector<Candidate> cand;
      std::vector<uint8_t> suppressed;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / NC, c = t % NC + 1;
        const float* col = ps + b * P * C + c;
        cand.clear();
        for (int64_t p = 0; p < P; ++p) {
          const float s = col[p * C];
          if (s > sthr) cand.push_back({s, static_cast<int32_t>(p)});
        }
        auto better = [](const Candidate& x, const Candidate& y) {
          return score_before(x.score, x.prior, y.score, y.prior);
        };
        if (static_cast<int64_t>(cand.size()) > k) {
          std::nth_element(cand.begin(), cand.begin() + k, cand.end(), better);
          cand.resize(k);
        }
        std::sort(cand.begin(), cand.end(), better);
        const float* boxes = decoded.data() + b * P * 4;
        const int64_t m = static_cast<int64_t>(cand.size());
        suppressed.assign(m, 0);
        std::vector<Candidate>& out = kept[t];
        for (int64_t i = 0; i < m; ++i) {
          if (suppressed[i]) continue;
          out.push_back(cand[i]);
          const float* bi = boxes + 4 * cand[i].prior;
          for (int64_t j = i + 1; j < m; ++j)
            if (!suppressed[j] && iou_xyxy(bi, boxes + 4 * cand[j].prior) > ithr) suppressed[j] = 1;
        }
      }
    });

    float* pob = out_boxes.data_ptr<float>();
    float* pos = out_scores.data_ptr<float>();
    int64_t* pol = out_labels.data_ptr<int64_t>();
    int64_t* pon = out_num.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      struct Det {
        float score;
        int64_t cls;
        int32_t prior;
      };
      std::vector<Det> dets;
      for (int64_t b = begin; b < end; ++b) {
        dets.clear();
        for (int64_t c = 1; c <= NC; ++c)
          for (const Candidate& x : kept[b * NC + c - 1]) dets.push_back({x.score, c, x.prior});
        auto better = [](const Det& x, const Det& y) {
          if (x.score != y.score) return x.score > y.score;  // no NaN survives the score filter
          if (x.cls != y.cls) return x.cls < y.cls;
          return x.prior < y.prior;
        };
        const int64_t n = std::min<int64_t>(K, static_cast<int64_t>(dets.size()));
        std::partial_sort(dets.begin(), dets.begin() + n, dets.end(), better);
        const float* boxes = decoded.data() + b * P * 4;
        for (int64_t i = 0; i < n; ++i) {
          for (int q = 0; q < 4; ++q) pob[(b * K + i) * 4 + q] = boxes[4 * dets[i].prior + q];
          pos[b * K + i] = dets[i].score;
          pol[b * K + i] = dets[i].cls;
        }
        pon[b] = n;
      }
    });
  }
  if (loc.scalar_type() != at::kFloat) out_boxes = out_boxes.to(loc.scalar_type());
  if (scores.scalar_type() != at::kFloat) out_scores = out_scores.to(scores.scalar_type());
  return {out_boxes, out_scores, out_labels, out_num};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) { m.impl("ssd_postprocess", &ssd_postprocess_cpu); }

}  // namespace ssdfast
