// ssd_postprocess on CPU: the SSD inference tail fused, with fixed-size outputs.
//
// Per image: one row-major pass over scores[P, C] drops every (prior, class) at or below the
// score threshold into per-class buckets; per class the top_k by (score desc, prior asc) are
// selected (nth_element), their boxes decoded (each prior at most once per image) and reduced by
// greedy NMS, whose inner loop is branch-free over structure-of-arrays boxes so it vectorizes;
// then the classes are merged by (score desc, class asc, prior asc) and cut to max_detections.
// Images run in parallel; with fewer images than threads, the classes of an image do.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "box_utils.h"

namespace ssdfast {
namespace {

// A candidate as one sortable key: the score's bits (scores that pass the threshold are > 0, and
// positive floats order like their bit patterns) above the complement of the prior index, so a
// descending key order is (score desc, prior asc) and selection runs on plain integers.
using Key = uint64_t;

inline Key make_key(float score, int64_t prior) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof(bits));
  return (static_cast<Key>(bits) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(prior));
}
inline float key_score(Key k) {
  const uint32_t bits = static_cast<uint32_t>(k >> 32);
  float score;
  std::memcpy(&score, &bits, sizeof(score));
  return score;
}
inline int32_t key_prior(Key k) { return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(k)); }

struct Det {
  float score;
  int32_t cls;
  int32_t prior;
};

struct Params {
  int64_t P, C, K, top_k;
  float v0, v1, score_threshold, iou_threshold;
};

// Boxes of a class's candidates as structure-of-arrays, for the vectorized NMS loop.
struct SoABoxes {
  std::vector<float> x1, y1, x2, y2, area, valid;
  void resize(size_t n) {
    x1.resize(n), y1.resize(n), x2.resize(n), y2.resize(n), area.resize(n), valid.resize(n);
  }
};

// Greedy NMS of one class's candidates (sorted best first); appends the kept ones to `out`.
void nms_class(const std::vector<Key>& cand, const float* decoded, float iou_threshold, int32_t cls,
               SoABoxes& soa, std::vector<float>& suppressed, std::vector<Det>& out) {
  const int64_t m = static_cast<int64_t>(cand.size());
  soa.resize(m);
  suppressed.assign(m, 0.f);
  for (int64_t i = 0; i < m; ++i) {
    const float* b = decoded + 4 * key_prior(cand[i]);
    soa.x1[i] = b[0], soa.y1[i] = b[1], soa.x2[i] = b[2], soa.y2[i] = b[3];
    soa.area[i] = (b[2] - b[0]) * (b[3] - b[1]);
    soa.valid[i] = (b[2] > b[0]) && (b[3] > b[1]) ? 1.f : 0.f;
  }
  const float* x1 = soa.x1.data();
  const float* y1 = soa.y1.data();
  const float* x2 = soa.x2.data();
  const float* y2 = soa.y2.data();
  const float* area = soa.area.data();
  const float* valid = soa.valid.data();
  float* sup = suppressed.data();
  for (int64_t i = 0; i < m; ++i) {
    if (sup[i] != 0.f) continue;
    out.push_back({key_score(cand[i]), cls, key_prior(cand[i])});
    const float ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i], iv = valid[i];
    // Same arithmetic as iou_xyxy(box i, box j); no branch, so this loop vectorizes.
    for (int64_t j = i + 1; j < m; ++j) {
      const float iw = std::max(std::min(ix2, x2[j]) - std::max(ix1, x1[j]), 0.f);
      const float ih = std::max(std::min(iy2, y2[j]) - std::max(iy1, y1[j]), 0.f);
      const float inter = iw * ih;
      const float uni = (ia + area[j]) - inter;
      const float iou = inter / uni;
      const bool hit = (iv * valid[j] > 0.f) && (iou > iou_threshold);
      sup[j] = hit ? 1.f : sup[j];
    }
  }
}

// Per-thread buffers, reused from image to image.
struct Workspace {
  std::vector<std::vector<Key>> buckets;
  std::vector<std::vector<Det>> kept;
  std::vector<float> decoded;
  std::vector<uint8_t> done;
  std::vector<Det> dets;
};

// Everything for image b; classes in parallel when `parallel_classes`.
void process_image(int64_t b, const float* loc, const float* scores, const float* priors, const Params& prm,
                   bool parallel_classes, Workspace& ws, float* out_boxes, float* out_scores, int64_t* out_labels,
                   int64_t* out_num) {
  const int64_t P = prm.P, C = prm.C, NC = C - 1, K = prm.K;
  const float* s = scores + b * P * C;
  const float* l = loc + b * P * 4;
  ws.buckets.resize(NC);
  for (auto& bucket : ws.buckets) bucket.clear();
  for (int64_t p = 0; p < P; ++p) {
    const float* row = s + p * C;
    for (int64_t c = 1; c < C; ++c)
      if (row[c] > prm.score_threshold) ws.buckets[c - 1].push_back(make_key(row[c], p));
  }
  // Decode each prior that is still a candidate after the per-class top_k, once.
  ws.decoded.resize(static_cast<size_t>(P) * 4);
  ws.done.assign(P, 0);
  for (auto& cand : ws.buckets) {  // top_k per class, best first
    if (static_cast<int64_t>(cand.size()) > prm.top_k) {
      std::nth_element(cand.begin(), cand.begin() + prm.top_k, cand.end(), std::greater<Key>());
      cand.resize(prm.top_k);
    }
    std::sort(cand.begin(), cand.end(), std::greater<Key>());
    for (Key k : cand) {
      const int32_t p = key_prior(k);
      if (!ws.done[p]) {
        decode_one(l + 4 * p, priors + 4 * p, prm.v0, prm.v1, ws.decoded.data() + 4 * p);
        ws.done[p] = 1;
      }
    }
  }
  ws.kept.resize(NC);
  auto run_classes = [&](int64_t begin, int64_t end) {
    SoABoxes soa;
    std::vector<float> suppressed;
    for (int64_t c = begin; c < end; ++c) {
      ws.kept[c].clear();
      nms_class(ws.buckets[c], ws.decoded.data(), prm.iou_threshold, static_cast<int32_t>(c + 1), soa, suppressed,
                ws.kept[c]);
    }
  };
  if (parallel_classes)
    at::parallel_for(0, NC, 1, run_classes);
  else
    run_classes(0, NC);
  std::vector<Det>& dets = ws.dets;
  dets.clear();
  for (const auto& k : ws.kept) dets.insert(dets.end(), k.begin(), k.end());
  const int64_t n = std::min<int64_t>(K, static_cast<int64_t>(dets.size()));
  std::partial_sort(dets.begin(), dets.begin() + n, dets.end(), [](const Det& x, const Det& y) {
    if (x.score != y.score) return x.score > y.score;  // no NaN passes the score filter
    if (x.cls != y.cls) return x.cls < y.cls;
    return x.prior < y.prior;
  });
  for (int64_t i = 0; i < n; ++i) {
    for (int q = 0; q < 4; ++q) out_boxes[(b * K + i) * 4 + q] = ws.decoded[4 * dets[i].prior + q];
    out_scores[b * K + i] = dets[i].score;
    out_labels[b * K + i] = dets[i].cls;
  }
  out_num[b] = n;
}

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
    TORCH_CHECK(P < (int64_t{1} << 31) && C < (int64_t{1} << 31), "too many priors or classes: ", P, ", ", C);
    const at::Tensor lf = loc.to(at::kFloat).contiguous();
    const at::Tensor sf = scores.to(at::kFloat).contiguous();
    const at::Tensor pf = priors.to(at::kFloat).contiguous();
    const float* pl = lf.data_ptr<float>();
    const float* ps = sf.data_ptr<float>();
    const float* pp = pf.data_ptr<float>();
    const Params prm{P, C, K, top_k, static_cast<float>(variances[0]), static_cast<float>(variances[1]),
                     static_cast<float>(score_threshold), static_cast<float>(iou_threshold)};
    float* pob = out_boxes.data_ptr<float>();
    float* pos = out_scores.data_ptr<float>();
    int64_t* pol = out_labels.data_ptr<int64_t>();
    int64_t* pon = out_num.data_ptr<int64_t>();
    if (B >= at::get_num_threads()) {
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        Workspace ws;
        for (int64_t b = begin; b < end; ++b) process_image(b, pl, ps, pp, prm, false, ws, pob, pos, pol, pon);
      });
    } else {
      Workspace ws;
      for (int64_t b = 0; b < B; ++b) process_image(b, pl, ps, pp, prm, true, ws, pob, pos, pol, pon);
    }
  }
  if (loc.scalar_type() != at::kFloat) out_boxes = out_boxes.to(loc.scalar_type());
  if (scores.scalar_type() != at::kFloat) out_scores = out_scores.to(scores.scalar_type());
  return {out_boxes, out_scores, out_labels, out_num};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) { m.impl("ssd_postprocess", &ssd_postprocess_cpu); }

}  // namespace ssdfast
