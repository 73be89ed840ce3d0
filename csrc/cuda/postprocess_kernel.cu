// ssd_postprocess on CUDA, fused per image in the style of TensorRT's EfficientNMS. Fixed-size outputs,
// no host synchronisation, no data-dependent host sizes: capturable in a CUDA graph.
//
//   1. filter kernel (a tiled transpose): scores[B, P, C] -> keys[B, C-1, P], one contiguous row per
//      (image, foreground class): the score's float bits when score > score_threshold (scores that
//      pass are positive, so their bits order like the floats), else 0 (NaN included: never a
//      candidate, as in the reference).
//   2. class kernel, one block per (image, class): the class's top_k candidates and greedy NMS.
//      Candidates rank by (score desc, prior asc) through the unique key (bits << 32 | ~prior). The
//      reference takes the top_k of all P scores and then drops those <= threshold, so the
//      candidates are the best min(top_k, #valid) valid scores. They are taken kChunk at a
//      time (one chunk in the default top_k=200): radix-select the chunk's lowest key, gather, bitonic
//      sort, decode the boxes, drop those overlapping a box kept by an earlier chunk, build the
//      chunk's IoU bitmask (one ballot per 32 pairs), and walk it greedily with one warp. A class keeps
//      at most Kc = min(top_k, max_detections) boxes: more could never reach the merged output.
//   3. merge kernel, one block per image: the max_detections best of all kept (class, rank) entries by
//      (score desc, class asc, rank asc) -- again unique keys, radix select + bitonic sort in chunks --
//      decoded and written with zero padding.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

// ----------------------------------------------------------------------------- 1. filter / transpose

constexpr int kTile = 32;
constexpr int kTileRows = 8;

template <typename scalar_t>
__global__ void __launch_bounds__(kTile* kTileRows)
    pp_filter_kernel(const scalar_t* __restrict__ scores, int P, int C, float threshold, uint32_t* __restrict__ keys) {
  __shared__ uint32_t tile[kTile][kTile + 1];
  const int b = blockIdx.z;
  const int p0 = blockIdx.x * kTile;
  const int c0 = blockIdx.y * kTile;  // foreground class index (class - 1)
  const int Cm1 = C - 1;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int p = p0 + r, c = c0 + threadIdx.x;
    uint32_t key = 0u;
    if (p < P && c < Cm1) {
      const float s = static_cast<float>(scores[(static_cast<int64_t>(b) * P + p) * C + c + 1]);
      key = s > threshold ? __float_as_uint(s) : 0u;  // false for NaN
    }
    tile[r][threadIdx.x] = key;
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int c = c0 + r, p = p0 + threadIdx.x;
    if (p < P && c < Cm1) keys[(static_cast<int64_t>(b) * Cm1 + c) * P + p] = tile[threadIdx.x][r];
  }
}

// ----------------------------------------------------------------------------- 2. per-class top-k + NMS

constexpr int kClassThreads = 256;
constexpr int kChunk = 256;  // candidates sorted and suppressed at a time (must equal kClassThreads)
constexpr int kChunkWords = kChunk / 32;
static_assert(kChunk == kClassThreads, "one candidate per thread in the class kernel");

// Candidate keys of one (image, class) row: (score bits << 32 | ~prior), 0 when not a candidate.
struct ClassKeys {
  const uint32_t* row;
  __device__ __forceinline__ uint64_t operator()(int p) const {
    const uint32_t k = row[p];
    return k == 0u ? 0ull : cuda::rank_key(k, static_cast<uint32_t>(p));
  }
};

__device__ __forceinline__ float4 decode_prior(const float* __restrict__ loc_b, const float* __restrict__ priors,
                                               uint32_t p, float v0, float v1) {
  float l[4], pr[4], out[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    l[c] = loc_b[static_cast<int64_t>(p) * 4 + c];
    pr[c] = priors[static_cast<int64_t>(p) * 4 + c];
  }
  decode_one(l, pr, v0, v1, out);
  return make_float4(out[0], out[1], out[2], out[3]);
}

__device__ __forceinline__ float iou4(const float4& a, const float4& b) {
  const float x[4] = {a.x, a.y, a.z, a.w};
  const float y[4] = {b.x, b.y, b.z, b.w};
  return iou_xyxy(x, y);
}

// Kept entries: (score bits << 32) | prior, in rank order, kc of them at most.
__global__ void __launch_bounds__(kClassThreads)
    pp_class_kernel(const uint32_t* __restrict__ keys, const float* __restrict__ loc, const float* __restrict__ priors,
                    int P, int Cm1, int top_k, int kc, float v0, float v1, float iou_threshold,
                    unsigned long long* __restrict__ kept_entries, int* __restrict__ kept_count) {
  __shared__ cuda::SelectShared sh;
  __shared__ uint64_t s_key[kChunk];
  __shared__ float4 s_box[kChunk];
  __shared__ float4 s_prev[kChunk];
  __shared__ uint32_t s_mask[kChunk * kChunkWords];
  __shared__ unsigned char s_removed[kChunk];
  __shared__ int s_tmp[kClassThreads / 32];
  __shared__ int s_kept;

  const int tid = threadIdx.x, warp = cuda::warp_id(), lane = cuda::lane_id();
  const int b = blockIdx.y;
  const int64_t seg = static_cast<int64_t>(b) * Cm1 + blockIdx.x;
  const ClassKeys src{keys + seg * P};
  const float* loc_b = loc + static_cast<int64_t>(b) * P * 4;
  unsigned long long* kept_list = kept_entries + seg * kc;

  int n_valid = 0;
  for (int p = tid; p < P; p += kClassThreads) n_valid += src.row[p] != 0u;
  n_valid = cuda::block_sum<kClassThreads>(n_valid, s_tmp);
  const int total = min(top_k, n_valid);

  int kept = 0, taken = 0;
  uint64_t upper = ~0ull;
  while (taken < total && kept < kc) {  // uniform: every thread holds the same values
    const int m = min(kChunk, total - taken);
    const uint64_t lo = (n_valid - taken == m)
                            ? 1ull
                            : cuda::block_select_threshold<kClassThreads>(src, P, upper, static_cast<unsigned>(m), sh);
    cuda::block_gather<kClassThreads>(src, P, lo, upper, s_key, kChunk, sh);
    cuda::block_sort_desc<kClassThreads>(s_key, m);
    upper = s_key[m - 1];
    taken += m;

    if (tid < m) {
      s_box[tid] = decode_prior(loc_b, priors, cuda::rank_key_position(s_key[tid]), v0, v1);
      s_removed[tid] = 0;
    }
    __syncthreads();
    // Boxes kept by earlier chunks suppress this chunk's candidates.
    for (int base = 0; base < kept; base += kChunk) {
      const int nt = min(kChunk, kept - base);
      if (tid < nt) {
        s_prev[tid] = decode_prior(loc_b, priors, static_cast<uint32_t>(kept_list[base + tid]), v0, v1);
      }
      __syncthreads();
      if (tid < m && !s_removed[tid]) {
        const float4 box = s_box[tid];
        for (int t = 0; t < nt; ++t) {
          if (iou4(s_prev[t], box) > iou_threshold) {
            s_removed[tid] = 1;
            break;
          }
        }
      }
      __syncthreads();
    }
    // Bitmask: bit l of word w of row i <=> j = 32 w + l > i and IoU(i, j) > threshold.
    const int words = (m + 31) / 32;
    for (int task = warp; task < m * words; task += kClassThreads / 32) {
      const int i = task / words, w = task - (task / words) * words;
      if (32 * w + 31 < i) continue;  // words left of i's own word are never read (uniform per warp)
      const int j = 32 * w + lane;
      const bool over = j > i && j < m && iou4(s_box[i], s_box[j]) > iou_threshold;
      const unsigned bits = __ballot_sync(cuda::kFullMask, over);
      if (lane == 0) s_mask[i * kChunkWords + w] = bits;
    }
    __syncthreads();
    // Greedy walk by warp 0; lane w < words holds the removed bits of word w.
    if (warp == 0) {
      unsigned removed = 0u;
      for (int w = 0; w < words; ++w) {
        const int j = 32 * w + lane;
        const unsigned bits = __ballot_sync(cuda::kFullMask, j < m && s_removed[j]);
        if (lane == w) removed = bits;
      }
      int count = kept;
      for (int w = 0; w < words && count < kc; ++w) {
        unsigned rv = __shfl_sync(cuda::kFullMask, removed, w);
        const int row = 32 * w + lane;
        const unsigned diag = row < m ? s_mask[row * kChunkWords + w] : 0u;
        const int jn = min(32, m - 32 * w);
        unsigned kept_bits = 0u;
        for (int jj = 0; jj < jn; ++jj) {  // uniform: rv and kept_bits are the same in every lane
          if (!((rv >> jj) & 1u)) {
            if (count + __popc(kept_bits) == kc) break;
            kept_bits |= 1u << jj;
            rv |= __shfl_sync(cuda::kFullMask, diag, jj);
          }
        }
        if ((kept_bits >> lane) & 1u) {
          const uint64_t key = s_key[row];
          kept_list[count + __popc(kept_bits & cuda::lanemask_lt())] =
              (key & 0xffffffff00000000ull) | cuda::rank_key_position(key);
        }
        count += __popc(kept_bits);
        if (lane > w && lane < words) {
          unsigned acc = 0u;
          for (int jj = 0; jj < jn; ++jj) {
            if ((kept_bits >> jj) & 1u) acc |= s_mask[(32 * w + jj) * kChunkWords + lane];
          }
          removed |= acc;
        }
      }
      if (lane == 0) s_kept = count;
    }
    __syncthreads();
    kept = s_kept;
  }
  if (tid == 0) kept_count[seg] = kept;
}

// ----------------------------------------------------------------------------- 3. merge per image

constexpr int kMergeThreads = 512;
constexpr int kMergeChunk = 1024;

// Keys over the flattened (class, rank) positions q = class_index * kc + rank.
struct MergeKeys {
  const unsigned long long* entries;  // [Cm1, kc]
  const int* counts;                  // [Cm1]
  int kc;
  __device__ __forceinline__ uint64_t operator()(int q) const {
    const int c = q / kc;
    if (q - c * kc >= counts[c]) return 0ull;
    return cuda::rank_key(static_cast<uint32_t>(entries[q] >> 32), static_cast<uint32_t>(q));
  }
};

__global__ void __launch_bounds__(kMergeThreads)
    pp_merge_kernel(const unsigned long long* __restrict__ kept_entries, const int* __restrict__ kept_count,
                    const float* __restrict__ loc, const float* __restrict__ priors, int P, int Cm1, int kc, int K,
                    float v0, float v1, float* __restrict__ out_boxes, float* __restrict__ out_scores,
                    int64_t* __restrict__ out_labels, int64_t* __restrict__ out_num) {
  __shared__ cuda::SelectShared sh;
  __shared__ uint64_t s_key[kMergeChunk];
  __shared__ int s_tmp[kMergeThreads / 32];
  const int tid = threadIdx.x;
  const int b = blockIdx.x;
  const MergeKeys src{kept_entries + static_cast<int64_t>(b) * Cm1 * kc, kept_count + static_cast<int64_t>(b) * Cm1,
                      kc};
  const float* loc_b = loc + static_cast<int64_t>(b) * P * 4;
  float* boxes_b = out_boxes + static_cast<int64_t>(b) * K * 4;
  float* scores_b = out_scores + static_cast<int64_t>(b) * K;
  int64_t* labels_b = out_labels + static_cast<int64_t>(b) * K;

  int n_avail = 0;
  for (int c = tid; c < Cm1; c += kMergeThreads) n_avail += src.counts[c];
  n_avail = cuda::block_sum<kMergeThreads>(n_avail, s_tmp);
  const int n_out = min(K, n_avail);
  const int n = Cm1 * kc;

  uint64_t upper = ~0ull;
  for (int out0 = 0; out0 < n_out;) {  // uniform
    const int m = min(kMergeChunk, n_out - out0);
    const uint64_t lo = (n_avail - out0 == m)
                            ? 1ull
                            : cuda::block_select_threshold<kMergeThreads>(src, n, upper, static_cast<unsigned>(m), sh);
    cuda::block_gather<kMergeThreads>(src, n, lo, upper, s_key, kMergeChunk, sh);
    cuda::block_sort_desc<kMergeThreads>(s_key, m);
    for (int j = tid; j < m; j += kMergeThreads) {
      const uint64_t key = s_key[j];
      const uint32_t q = cuda::rank_key_position(key);
      const int c = static_cast<int>(q / static_cast<uint32_t>(kc));
      const uint32_t prior = static_cast<uint32_t>(src.entries[q]);
      const float4 box = decode_prior(loc_b, priors, prior, v0, v1);
      const int64_t o = out0 + j;
      boxes_b[o * 4 + 0] = box.x;
      boxes_b[o * 4 + 1] = box.y;
      boxes_b[o * 4 + 2] = box.z;
      boxes_b[o * 4 + 3] = box.w;
      scores_b[o] = __uint_as_float(static_cast<uint32_t>(key >> 32));
      labels_b[o] = c + 1;
    }
    upper = s_key[m - 1];
    out0 += m;
    __syncthreads();  // s_key is refilled by the next chunk
  }
  for (int o = n_out + tid; o < K; o += kMergeThreads) {
    boxes_b[static_cast<int64_t>(o) * 4 + 0] = 0.f;
    boxes_b[static_cast<int64_t>(o) * 4 + 1] = 0.f;
    boxes_b[static_cast<int64_t>(o) * 4 + 2] = 0.f;
    boxes_b[static_cast<int64_t>(o) * 4 + 3] = 0.f;
    scores_b[o] = 0.f;
    labels_b[o] = 0;
  }
  if (tid == 0) out_num[b] = n_out;
}

template __global__ void pp_filter_kernel<float>(const float*, int, int, float, uint32_t*);
template __global__ void pp_filter_kernel<double>(const double*, int, int, float, uint32_t*);
template __global__ void pp_filter_kernel<c10::Half>(const c10::Half*, int, int, float, uint32_t*);
template __global__ void pp_filter_kernel<c10::BFloat16>(const c10::BFloat16*, int, int, float, uint32_t*);

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

namespace ssdfast {
namespace {
// ----------------------------------------------------------------------------- host

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cuda(
    const at::Tensor& loc, const at::Tensor& scores, const at::Tensor& priors, c10::ArrayRef<double> variances,
    double score_threshold, double iou_threshold, int64_t top_k, int64_t max_detections) {
  check_boxes(loc, "loc", 3);
  check_boxes(priors, "priors", 2);
  TORCH_CHECK(scores.dim() == 3, "scores should be a 3-D tensor [B, P, C], got ", scores.dim(), "-D");
  TORCH_CHECK(scores.is_floating_point(), "scores should be a floating-point tensor, got ", scores.scalar_type());
  TORCH_CHECK(scores.size(0) == loc.size(0) && scores.size(1) == loc.size(1), "scores should have [B, P] = [",
              loc.size(0), ", ", loc.size(1), "] to match loc, got ", scores.sizes());
  TORCH_CHECK(loc.size(1) == priors.size(0), "loc should have P=", priors.size(0), " rows (one per prior), got ",
              loc.size(1));
  check_same_device(loc, "loc", scores, "scores");
  check_same_device(loc, "loc", priors, "priors");
  check_variances(variances);
  TORCH_CHECK(score_threshold >= 0.0 && score_threshold <= 1.0, "score_threshold should be in [0, 1], got ",
              score_threshold);
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1], got ",
              iou_threshold);
  TORCH_CHECK(top_k >= 1, "top_k should be a positive integer, got ", top_k);
  TORCH_CHECK(max_detections >= 1, "max_detections should be a positive integer, got ", max_detections);

  const int64_t B = scores.size(0), P = scores.size(1), C = scores.size(2), K = max_detections;
  c10::cuda::CUDAGuard guard(loc.device());
  if (B == 0 || P == 0 || C <= 1) {
    return {at::zeros({B, K, 4}, loc.options()), at::zeros({B, K}, scores.options()),
            at::zeros({B, K}, loc.options().dtype(at::kLong)), at::zeros({B}, loc.options().dtype(at::kLong))};
  }
  const int64_t k = std::min(top_k, P);
  const int64_t kc = std::min(k, K);
  TORCH_CHECK(K < (int64_t{1} << 31) && B <= 65535 && C - 1 <= 65535, "ssd_postprocess: sizes too large (B=", B,
              ", C=", C, ", max_detections=", K, ")");
  TORCH_CHECK((C - 1) * kc < (int64_t{1} << 31) - 1 && P < (int64_t{1} << 31) - 1,
              "ssd_postprocess: (C - 1) * min(top_k, max_detections, P) must be below 2^31");

  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor lf = loc.to(at::kFloat).contiguous();
  const at::Tensor pf = priors.to(at::kFloat).contiguous();
  const at::Tensor sc = scores.contiguous();
  const auto opts = lf.options();

  at::Tensor keys = at::empty({B, C - 1, P}, opts.dtype(at::kInt));
  {
    const dim3 grid(static_cast<unsigned>(cuda::ceil_div(P, kTile)), static_cast<unsigned>(cuda::ceil_div(C - 1, kTile)),
                    static_cast<unsigned>(B));
    const dim3 block(kTile, kTileRows);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sc.scalar_type(), "ssd_postprocess_filter", [&] {
      pp_filter_kernel<scalar_t><<<grid, block, 0, stream>>>(sc.data_ptr<scalar_t>(), static_cast<int>(P),
                                                             static_cast<int>(C), static_cast<float>(score_threshold),
                                                             cuda::ptr<uint32_t>(keys));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  at::Tensor kept_entries = at::empty({B, C - 1, kc}, opts.dtype(at::kLong));
  at::Tensor kept_count = at::empty({B, C - 1}, opts.dtype(at::kInt));
  pp_class_kernel<<<dim3(static_cast<unsigned>(C - 1), static_cast<unsigned>(B)), kClassThreads, 0, stream>>>(
      cuda::ptr<uint32_t>(keys), lf.data_ptr<float>(), pf.data_ptr<float>(), static_cast<int>(P),
      static_cast<int>(C - 1), static_cast<int>(k), static_cast<int>(kc), static_cast<float>(variances[0]),
      static_cast<float>(variances[1]), static_cast<float>(iou_threshold), cuda::ptr<unsigned long long>(kept_entries),
      kept_count.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor boxes = at::empty({B, K, 4}, opts);
  at::Tensor out_scores = at::empty({B, K}, opts);
  at::Tensor labels = at::empty({B, K}, opts.dtype(at::kLong));
  at::Tensor num = at::empty({B}, opts.dtype(at::kLong));
  pp_merge_kernel<<<static_cast<unsigned>(B), kMergeThreads, 0, stream>>>(
      cuda::ptr<unsigned long long>(kept_entries), kept_count.data_ptr<int>(), lf.data_ptr<float>(),
      pf.data_ptr<float>(), static_cast<int>(P), static_cast<int>(C - 1), static_cast<int>(kc), static_cast<int>(K),
      static_cast<float>(variances[0]), static_cast<float>(variances[1]), boxes.data_ptr<float>(),
      out_scores.data_ptr<float>(), labels.data_ptr<int64_t>(), num.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  return {loc.scalar_type() == at::kFloat ? boxes : boxes.to(loc.scalar_type()),
          scores.scalar_type() == at::kFloat ? out_scores : out_scores.to(scores.scalar_type()), labels, num};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) { m.impl("ssd_postprocess", &ssd_postprocess_cuda); }

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
