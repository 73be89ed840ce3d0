// match_priors and ssd_targets (match_priors fused with encode_boxes) on CUDA.
//
// The IoUs are computed on the fly and never stored (no B x G x P tensor). Two kernels:
//   1. match kernel, one block per (image, tile of kThreads * kItems priors), so that a batch of 64
//      SSD300 images fills 256 blocks rather than 64:
//      a. the image's gts (boxes, labels) go to shared memory with one 64-bit "best prior" key per gt;
//      b. each thread keeps kItems priors and their best gt in registers; for every valid gt in index
//         order a thread updates its priors' best gt (strictly greater IoU wins, so the lowest gt index
//         wins ties; NaN as torch.max) and the gt's best prior in the tile is reduced over the block:
//         key = (IoU bits << 32) | (0xFFFFFFFF - prior), warp max by shuffles, then one shared
//         atomicMax per warp, so the lowest prior wins ties;
//      c. the tile's outputs are written as if nothing were forced, and each gt's key is merged into
//         gt_keys[b, g] (global atomicMax: the best over all tiles, same tie rule);
//   2. force kernel, one block per image, after every tile: each gt whose best IoU is > 0 forces its
//      best prior unless a later gt forces the same prior (later gt wins); the winners overwrite that
//      prior's outputs.
#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 9;  // 2304 priors per block: SSD300's 8732 in four
constexpr int kForceThreads = 128;

struct GtShared {
  float4* box;              // [G] xyxy (first: 16-byte aligned whatever G is)
  unsigned long long* key;  // [G] best-prior key, 0 = no prior with IoU > 0
  int64_t* label;           // [G]
};

__device__ __forceinline__ GtShared gt_shared(unsigned char* smem, int G) {
  GtShared s;
  s.box = reinterpret_cast<float4*>(smem);
  s.key = reinterpret_cast<unsigned long long*>(smem + sizeof(float4) * G);
  s.label = reinterpret_cast<int64_t*>(smem + (sizeof(float4) + sizeof(unsigned long long)) * G);
  return s;
}

// Writes prior p's outputs: the label and either the box (match_priors) or its encoding (ssd_targets).
template <bool kEncode>
__device__ __forceinline__ void write_prior(int64_t row, const float* __restrict__ priors, int p, int64_t label,
                                            const float* box, float v0, float v1, int64_t* __restrict__ out_labels,
                                            float* __restrict__ out_boxes) {
  out_labels[row] = label;
  float y[4];
  if (kEncode) {
    float pr[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) pr[c] = priors[static_cast<int64_t>(p) * 4 + c];
    encode_one(box, pr, v0, v1, y);
  } else {
#pragma unroll
    for (int c = 0; c < 4; ++c) y[c] = box[c];
  }
#pragma unroll
  for (int c = 0; c < 4; ++c) out_boxes[row * 4 + c] = y[c];
}

// Block (image blockIdx.x, tile blockIdx.y): the tile's unforced outputs, and gt_keys[b, g] = max over
// tiles of gt g's best-prior key (gt_keys zeroed before).
template <bool kEncode>
__global__ void __launch_bounds__(kThreads)
    match_kernel(const float* __restrict__ priors, const float* __restrict__ gt_boxes,
                 const int64_t* __restrict__ gt_labels, int P, int G, float threshold, float v0, float v1,
                 unsigned long long* __restrict__ gt_keys, int64_t* __restrict__ out_labels,
                 float* __restrict__ out_boxes) {
  extern __shared__ __align__(16) unsigned char smem[];
  const GtShared gs = gt_shared(smem, G);
  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t out_row0 = static_cast<int64_t>(b) * P;
  const int tile = blockIdx.y * kThreads * kItems;
  const int tile_end = min(P, tile + kThreads * kItems);

  bool any_valid = false;
  for (int g = tid; g < G; g += kThreads) {
    const float* src = gt_boxes + (static_cast<int64_t>(b) * G + g) * 4;
    gs.box[g] = make_float4(src[0], src[1], src[2], src[3]);
    const int64_t label = gt_labels[static_cast<int64_t>(b) * G + g];
    gs.label[g] = label;
    gs.key[g] = 0ull;
    any_valid |= label >= 0;
  }
  if (!__syncthreads_or(any_valid)) {
    // No gt in this image: all background, zero boxes (ssd_targets: the encoding of a zero box).
    const float zero[4] = {0.f, 0.f, 0.f, 0.f};
    for (int p = tile + tid; p < tile_end; p += kThreads) {
      write_prior<kEncode>(out_row0 + p, priors, p, 0, zero, v0, v1, out_labels, out_boxes);
    }
    return;
  }

  {
    float pb[kItems][4];
    float best[kItems];
    int best_gt[kItems];
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const int p = tile + it * kThreads + tid;
      if (p < P) {
        float pc[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) pc[c] = priors[static_cast<int64_t>(p) * 4 + c];
        cxcywh_to_xyxy(pc, pb[it]);
      } else {
#pragma unroll
        for (int c = 0; c < 4; ++c) pb[it][c] = 0.f;
      }
      best[it] = -1.f;
      best_gt[it] = 0;
    }
    for (int g = 0; g < G; ++g) {
      if (gs.label[g] < 0) continue;  // padding (uniform branch)
      const float4 gv = gs.box[g];
      const float gb[4] = {gv.x, gv.y, gv.z, gv.w};
      unsigned long long key = 0ull;
#pragma unroll
      for (int it = 0; it < kItems; ++it) {
        const int p = tile + it * kThreads + tid;
        const float iou = iou_xyxy(gb, pb[it]);
        // torch.max semantics: first maximum wins, NaN is the maximum.
        if (iou > best[it] || (iou != iou && best[it] == best[it])) {
          best[it] = iou;
          best_gt[it] = g;
        }
        if (p < P && !(iou <= 0.f)) {  // IoU > 0, or NaN (which then forces nothing, as in torch)
          const uint32_t bits = iou != iou ? 0xffffffffu : __float_as_uint(iou);
          const unsigned long long k = cuda::rank_key(bits, static_cast<uint32_t>(p));
          key = k > key ? k : key;
        }
      }
      if (__any_sync(cuda::kFullMask, key != 0ull)) {
        key = cuda::warp_max_u64(key);
        if (cuda::lane_id() == 0) atomicMax(gs.key + g, key);
      }
    }
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const int p = tile + it * kThreads + tid;
      if (p < P) {
        const int g = best_gt[it];
        const int64_t label = best[it] >= threshold ? gs.label[g] : 0;
        const float4 gv = gs.box[g];
        const float gb[4] = {gv.x, gv.y, gv.z, gv.w};
        write_prior<kEncode>(out_row0 + p, priors, p, label, gb, v0, v1, out_labels, out_boxes);
      }
    }
  }
  __syncthreads();  // the tile's keys are final
  for (int g = tid; g < G; g += kThreads) {
    const unsigned long long key = gs.key[g];
    if (key != 0ull) atomicMax(gt_keys + static_cast<int64_t>(b) * G + g, key);
  }
}

// gt g's key if it forces a prior: valid and best IoU > 0 (not 0 = no overlap, not NaN); else 0.
__device__ __forceinline__ unsigned long long forcing_key(const int64_t* __restrict__ labels,
                                                          const unsigned long long* __restrict__ keys, int g) {
  if (labels[g] < 0) return 0ull;
  const unsigned long long key = keys[g];
  return __uint_as_float(static_cast<uint32_t>(key >> 32)) > 0.f ? key : 0ull;
}

// Block b, after match_kernel: gt g forces its best prior unless a later gt forces the same prior.
template <bool kEncode>
__global__ void __launch_bounds__(kForceThreads)
    match_force_kernel(const float* __restrict__ priors, const float* __restrict__ gt_boxes,
                       const int64_t* __restrict__ gt_labels, const unsigned long long* __restrict__ gt_keys, int P,
                       int G, float v0, float v1, int64_t* __restrict__ out_labels, float* __restrict__ out_boxes) {
  const int b = blockIdx.x;
  const int64_t row0 = static_cast<int64_t>(b) * G;
  const int64_t* labels = gt_labels + row0;
  const unsigned long long* keys = gt_keys + row0;
  for (int g = threadIdx.x; g < G; g += kForceThreads) {
    const unsigned long long key = forcing_key(labels, keys, g);
    if (key == 0ull) continue;
    const uint32_t p = cuda::rank_key_position(key);
    bool wins = true;
    for (int h = g + 1; h < G && wins; ++h) {
      const unsigned long long kh = forcing_key(labels, keys, h);
      wins = !(kh != 0ull && cuda::rank_key_position(kh) == p);
    }
    if (wins) {
      const float* gb = gt_boxes + (row0 + g) * 4;
      const float box[4] = {gb[0], gb[1], gb[2], gb[3]};
      write_prior<kEncode>(static_cast<int64_t>(b) * P + p, priors, static_cast<int>(p), labels[g], box, v0, v1,
                           out_labels, out_boxes);
    }
  }
}

template __global__ void match_kernel<true>(const float*, const float*, const int64_t*, int, int, float, float, float,
                                            unsigned long long*, int64_t*, float*);
template __global__ void match_kernel<false>(const float*, const float*, const int64_t*, int, int, float, float, float,
                                             unsigned long long*, int64_t*, float*);
template __global__ void match_force_kernel<true>(const float*, const float*, const int64_t*,
                                                  const unsigned long long*, int, int, float, float, int64_t*, float*);
template __global__ void match_force_kernel<false>(const float*, const float*, const int64_t*,
                                                   const unsigned long long*, int, int, float, float, int64_t*, float*);

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

namespace ssdfast {
namespace {
void check_match_args(const at::Tensor& priors, const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                      double iou_threshold) {
  check_boxes(priors, "priors", 2);
  check_boxes(gt_boxes, "gt_boxes", 3);
  TORCH_CHECK(gt_labels.dim() == 2, "gt_labels should be a 2-D tensor [B, G], got ", gt_labels.dim(), "-D");
  TORCH_CHECK(!gt_labels.is_floating_point() && !gt_labels.is_complex() && gt_labels.scalar_type() != at::kBool,
              "gt_labels should be an integer tensor, got ", gt_labels.scalar_type());
  TORCH_CHECK(gt_labels.size(0) == gt_boxes.size(0) && gt_labels.size(1) == gt_boxes.size(1),
              "gt_labels should have shape [B, G] = [", gt_boxes.size(0), ", ", gt_boxes.size(1), "], got ",
              gt_labels.sizes());
  check_same_device(priors, "priors", gt_boxes, "gt_boxes");
  check_same_device(priors, "priors", gt_labels, "gt_labels");
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1], got ",
              iou_threshold);
}

template <bool kEncode>
std::tuple<at::Tensor, at::Tensor> match_cuda(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                              const at::Tensor& gt_labels, double iou_threshold, float v0, float v1) {
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), P = priors.size(0);
  const auto out_dtype = gt_boxes.scalar_type();
  c10::cuda::CUDAGuard guard(priors.device());
  at::Tensor labels = at::empty({B, P}, gt_labels.options().dtype(at::kLong));
  at::Tensor boxes = at::empty({B, P, 4}, gt_boxes.options().dtype(at::kFloat));
  if (B == 0 || P == 0) return {labels, boxes.to(out_dtype)};
  TORCH_CHECK(P < (int64_t{1} << 31) && G < (int64_t{1} << 31), "too many priors or gts");

  const at::Tensor pf = priors.to(at::kFloat).contiguous();
  const at::Tensor gf = gt_boxes.to(at::kFloat).contiguous();
  const at::Tensor gl = gt_labels.to(at::kLong).contiguous();
  const size_t smem = static_cast<size_t>(G) * (sizeof(unsigned long long) + sizeof(float4) + sizeof(int64_t));
  auto kernel = match_kernel<kEncode>;
  cuda::allow_dynamic_smem(kernel, smem, "match_priors with this many gts per image");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tiles = cuda::ceil_div(P, kThreads * kItems);
  TORCH_CHECK(B <= 0x7fffffff && tiles <= 65535, "match_priors: too many images or priors (B=", B, ", P=", P, ")");
  at::Tensor gt_keys = at::zeros({B, G}, gl.options());  // best-prior key per gt, merged over tiles
  kernel<<<dim3(static_cast<unsigned>(B), static_cast<unsigned>(tiles)), kThreads, smem, stream>>>(
      pf.data_ptr<float>(), gf.data_ptr<float>(), gl.data_ptr<int64_t>(), static_cast<int>(P), static_cast<int>(G),
      static_cast<float>(iou_threshold), v0, v1, cuda::ptr<unsigned long long>(gt_keys), labels.data_ptr<int64_t>(),
      boxes.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (G > 0) {
    match_force_kernel<kEncode><<<static_cast<unsigned>(B), kForceThreads, 0, stream>>>(
        pf.data_ptr<float>(), gf.data_ptr<float>(), gl.data_ptr<int64_t>(), cuda::ptr<unsigned long long>(gt_keys),
        static_cast<int>(P), static_cast<int>(G), v0, v1, labels.data_ptr<int64_t>(), boxes.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {labels, out_dtype == at::kFloat ? boxes : boxes.to(out_dtype)};
}

std::tuple<at::Tensor, at::Tensor> match_priors_cuda(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                                     const at::Tensor& gt_labels, double iou_threshold) {
  check_match_args(priors, gt_boxes, gt_labels, iou_threshold);
  return match_cuda<false>(priors, gt_boxes, gt_labels, iou_threshold, 0.f, 0.f);
}

std::tuple<at::Tensor, at::Tensor> ssd_targets_cuda(const at::Tensor& priors, const at::Tensor& gt_boxes,
                                                    const at::Tensor& gt_labels, double iou_threshold,
                                                    c10::ArrayRef<double> variances) {
  check_match_args(priors, gt_boxes, gt_labels, iou_threshold);
  check_variances(variances);
  return match_cuda<true>(priors, gt_boxes, gt_labels, iou_threshold, static_cast<float>(variances[0]),
                          static_cast<float>(variances[1]));
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) {
  m.impl("match_priors", &match_priors_cuda);
  m.impl("ssd_targets", &ssd_targets_cuda);
}

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
