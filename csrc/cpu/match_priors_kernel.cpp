// match_priors / ssd_targets on CPU: one image per task; IoUs computed on the fly, never stored.
//
// Per image: a single pass over priors x valid gts gives each prior its best gt (first maximum)
// and each gt its best prior (first maximum); then gts force their best prior in gt order (a later
// gt wins), a gt with IoU 0 everywhere forcing nothing; the rest is thresholded.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "box_utils.h"

namespace ssdfast {
namespace {

void check_match_args(const at::Tensor& priors, const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                      double iou_threshold) {
  check_boxes(priors, "priors", 2);
  check_boxes(gt_boxes, "gt_boxes", 3);
  TORCH_CHECK(gt_labels.dim() == 2, "gt_labels should be a 2-D tensor [B, G], got ", gt_labels.dim(), "-D");
  TORCH_CHECK(!gt_labels.is_floating_point() && gt_labels.scalar_type() != at::kBool,
              "gt_labels should be an integer tensor, got ", gt_labels.scalar_type());
  TORCH_CHECK(gt_labels.size(0) == gt_boxes.size(0) && gt_labels.size(1) == gt_boxes.size(1),
              "gt_labels should have shape [B, G] matching gt_boxes");
  check_same_device(priors, "priors", gt_boxes, "gt_boxes");
  check_same_device(priors, "priors", gt_labels, "gt_labels");
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1], got ",
              iou_threshold);
}

// Writes labels[B, P] and either the matched boxes (encode == false) or their encoding (encode == true).
void match_impl(const at::Tensor& priors, const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                double iou_threshold, bool encode, float v0, float v1, at::Tensor& labels, at::Tensor& out) {
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), P = priors.size(0);
  const at::Tensor pf = priors.to(at::kFloat).contiguous();
  const at::Tensor gf = gt_boxes.to(at::kFloat).contiguous();
  const at::Tensor lf = gt_labels.to(at::kLong).contiguous();
  const float* pp = pf.data_ptr<float>();
  const float* pg = gf.data_ptr<float>();
  const int64_t* pl = lf.data_ptr<int64_t>();
  int64_t* plab = labels.data_ptr<int64_t>();
  float* pout = out.data_ptr<float>();
  const float thr = static_cast<float>(iou_threshold);

  // Priors as structure-of-arrays, so the per-gt loop over priors vectorizes.
  std::vector<float> px1(P), py1(P), px2(P), py2(P), parea(P);
  std::vector<float> pvalid(P);  // 1 or 0, a float so the select below vectorizes
  for (int64_t p = 0; p < P; ++p) {
    float box[4];
    cxcywh_to_xyxy(pp + 4 * p, box);
    px1[p] = box[0], py1[p] = box[1], px2[p] = box[2], py2[p] = box[3];
    parea[p] = (box[2] - box[0]) * (box[3] - box[1]);
    pvalid[p] = (box[2] > box[0]) && (box[3] > box[1]) ? 1.f : 0.f;
  }
  static const float kZeroBox[4] = {0.f, 0.f, 0.f, 0.f};

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> valid;
    std::vector<float> best(P), row(P);
    std::vector<int32_t> best_v(P), forced_v(P);
    for (int64_t b = begin; b < end; ++b) {
      const float* gts = pg + b * G * 4;
      const int64_t* glab = pl + b * G;
      int64_t* lab = plab + b * P;
      float* o = pout + b * P * 4;
      valid.clear();
      for (int64_t g = 0; g < G; ++g)
        if (glab[g] >= 0) valid.push_back(g);
      const int64_t V = static_cast<int64_t>(valid.size());
      if (V == 0) {  // no ground truth: all background, boxes zero
        for (int64_t p = 0; p < P; ++p) {
          lab[p] = 0;
          if (encode)
            encode_one(kZeroBox, pp + 4 * p, v0, v1, o + 4 * p);
          else
            for (int k = 0; k < 4; ++k) o[4 * p + k] = 0.f;
        }
        continue;
      }
      std::fill(best.begin(), best.end(), -1.f);
      std::fill(best_v.begin(), best_v.end(), 0);
      std::fill(forced_v.begin(), forced_v.end(), -1);
      for (int32_t v = 0; v < V; ++v) {
        const float* gb = gts + 4 * valid[v];
        const float gx1 = gb[0], gy1 = gb[1], gx2 = gb[2], gy2 = gb[3];
        const float garea = (gx2 - gx1) * (gy2 - gy1);
        const float gvalid = (gx2 > gx1) && (gy2 > gy1) ? 1.f : 0.f;
        // Same arithmetic as iou_xyxy(gt, prior), one gt against all priors.
        for (int64_t p = 0; p < P; ++p) {
          const float iw = std::max(std::min(gx2, px2[p]) - std::max(gx1, px1[p]), 0.f);
          const float ih = std::max(std::min(gy2, py2[p]) - std::max(gy1, py1[p]), 0.f);
          const float inter = iw * ih;
          const float uni = (garea + parea[p]) - inter;
          const float iou = inter / uni;  // unconditional, so the loop can vectorize
          row[p] = (gvalid * pvalid[p] > 0.f) ? iou : 0.f;
        }
        // Each prior's best gt: strictly greater, so the lowest gt index wins a tie.
        for (int64_t p = 0; p < P; ++p) {
          const bool better = row[p] > best[p];
          best[p] = better ? row[p] : best[p];
          best_v[p] = better ? v : best_v[p];
        }
        // This gt's best prior: the first maximum; a gt overlapping nothing forces nothing.
        float gmax = -1.f;
        for (int64_t p = 0; p < P; ++p) gmax = std::max(gmax, row[p]);
        if (gmax > 0.f) {
          int64_t p = 0;
          while (row[p] != gmax) ++p;
          forced_v[p] = v;  // in gt order: a later gt wins a shared prior
        }
      }
      for (int64_t p = 0; p < P; ++p) {
        const bool forced = forced_v[p] >= 0;
        const int64_t g = valid[forced ? forced_v[p] : best_v[p]];
        lab[p] = (forced || best[p] >= thr) ? glab[g] : 0;
        if (encode)
          encode_one(gts + 4 * g, pp + 4 * p, v0, v1, o + 4 * p);
        else
          for (int k = 0; k < 4; ++k) o[4 * p + k] = gts[4 * g + k];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> run_match(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                             const at::Tensor& gt_labels, double iou_threshold, bool encode,
                                             float v0, float v1) {
  const int64_t B = gt_boxes.size(0), P = priors.size(0);
  at::Tensor labels = at::zeros({B, P}, gt_labels.options().dtype(at::kLong));
  at::Tensor out = at::zeros({B, P, 4}, gt_boxes.options().dtype(at::kFloat));
  // G == 0 is handled inside (every image has no gt); keeps the same zero-box encoding as the reference.
  if (B > 0 && P > 0) match_impl(priors, gt_boxes, gt_labels, iou_threshold, encode, v0, v1, labels, out);
  if (gt_boxes.scalar_type() != at::kFloat) out = out.to(gt_boxes.scalar_type());
  return {labels, out};
}

std::tuple<at::Tensor, at::Tensor> match_priors_cpu(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                                    const at::Tensor& gt_labels, double iou_threshold) {
  check_match_args(priors, gt_boxes, gt_labels, iou_threshold);
  return run_match(priors, gt_boxes, gt_labels, iou_threshold, false, 0.f, 0.f);
}

std::tuple<at::Tensor, at::Tensor> ssd_targets_cpu(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                                   const at::Tensor& gt_labels, double iou_threshold,
                                                   c10::ArrayRef<double> variances) {
  check_match_args(priors, gt_boxes, gt_labels, iou_threshold);
  check_variances(variances);
  return run_match(priors, gt_boxes, gt_labels, iou_threshold, true, static_cast<float>(variances[0]),
                   static_cast<float>(variances[1]));
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CPU, m) {
  m.impl("match_priors", &match_priors_cpu);
  m.impl("ssd_targets", &ssd_targets_cpu);
}

}  // namespace ssdfast
