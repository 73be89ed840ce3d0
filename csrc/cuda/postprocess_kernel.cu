// ssd_postprocess on CUDA, fused per image in the style of TensorRT's EfficientNMS. Fixed-size outputs,
// no host synchronisation, no data-dependent host sizes: capturable in a CUDA graph. Scratch memory: a
// candidate bitmask, B x (C - 1) x P / 8 bytes (5.6 MB at B=64, P=8732, C=81), and the kept entries,
// B x (C - 1) x min(top_k, max_detections, P) x 8 bytes.
//
//   1. mask kernel (a tiled transpose): reads scores[B, P, C] once, coalesced, and writes one bit per
//      (image, foreground class, prior): score > score_threshold (false for NaN, never a candidate, as
//      in the reference). Bit p of the row (b, c) is bit p % 32 of word p / 32.
//   2. class kernel, one block per (image, class): the class's top_k candidates and greedy NMS. The
//      block walks its bitmask row once, reads the scores of the candidates only (a gather of ~12% of
//      the column with trained-like scores) and appends them to shared memory as unique keys (score
//      bits << 32 | ~prior), which rank by (score desc, prior asc); scores that pass are positive, so
//      their bits order like the floats. Every later pass reads only those keys. When the buffer (`cap`
//      keys, a few thousand) could overflow -- a flat or untrained model puts thousands of candidates in
//      every class -- it is shrunk to its top_k keys (radix select, in-place compaction), and from then
//      on only keys at or above the top_k-th are appended: the buffer always holds the class's best
//      top_k candidates seen so far, so the column is read once whatever the count (bit-identical to
//      keeping them all: a key left out has top_k better ones). Only a top_k too large for that
//      (> cap - 1024, 2560 at most, with more candidates than cap) reads the candidates' scores again
//      on every pass, with the same selection code. The reference takes the top_k of all P scores and then
//      drops those <= threshold, so the candidates are the best min(top_k, #valid) valid scores. They
//      are taken kChunk at a time (one chunk in the default top_k=200): radix-select the chunk's lowest
//      key, gather, bitonic sort, decode the boxes, drop those overlapping a box kept by an earlier
//      chunk, build the chunk's IoU bitmask (one ballot per 32 pairs), and walk it greedily with one
//      warp. A class keeps at most Kc = min(top_k, max_detections) boxes: more could never reach the
//      merged output.
//   3. merge kernel, one block per image: the max_detections best of all kept (class, rank) entries by
//      (score desc, class asc, rank asc) -- again unique keys, radix select + bitonic sort in chunks --
//      decoded and written with zero padding.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

// ----------------------------------------------------------------------------- 1. candidate bitmask

constexpr int kTile = 32;  // priors (one mask word) x classes per block
constexpr int kTileRows = 8;

// Block (prior tile blockIdx.x = mask word, class tile blockIdx.y, image blockIdx.z): 32 priors x 32
// foreground classes read along the classes (coalesced), written as one 32-bit word per class.
template <typename scalar_t>
__global__ void __launch_bounds__(kTile* kTileRows)
    pp_mask_kernel(const scalar_t* __restrict__ scores, int P, int C, float threshold, uint32_t* __restrict__ mask) {
  __shared__ unsigned char tile[kTile][kTile + 1];  // [prior][class]
  const int b = blockIdx.z;
  const int p0 = blockIdx.x * kTile;
  const int c0 = blockIdx.y * kTile;  // foreground class index (class - 1)
  const int Cm1 = C - 1;
  const int words = gridDim.x;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int p = p0 + r, c = c0 + threadIdx.x;
    bool candidate = false;
    if (p < P && c < Cm1) {
      candidate = static_cast<float>(scores[(static_cast<int64_t>(b) * P + p) * C + c + 1]) > threshold;
    }
    tile[r][threadIdx.x] = candidate;
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {  // warp threadIdx.y: class c0 + r, lane = prior
    const unsigned word = __ballot_sync(cuda::kFullMask, tile[threadIdx.x][r] != 0);
    const int c = c0 + r;
    if (threadIdx.x == 0 && c < Cm1) mask[(static_cast<int64_t>(b) * Cm1 + c) * words + blockIdx.x] = word;
  }
}

// ----------------------------------------------------------------------------- 2. per-class top-k + NMS

constexpr int kClassThreads = 256;
constexpr int kChunk = 256;  // candidates sorted and suppressed at a time (must equal kClassThreads)
constexpr int kChunkWords = kChunk / 32;
static_assert(kChunk == kClassThreads, "one candidate per thread in the class kernel");

// Candidate keys of one (image, class) in shared memory (28 KiB: with the kernel's 20 KiB of static
// shared memory, two blocks fit in an SM of 100 KiB). A class with more is cut to its top_k as it is
// read (top_k <= cap - 1024, the keys one batch of the read appends), else rescans its score column
// on every pass.
constexpr int kMaxCandidates = 3584;

// Candidate key of a score at prior p: (score bits << 32 | ~p) when score > threshold, else 0.
__device__ __forceinline__ uint64_t candidate_key(float s, float threshold, int p) {
  return s > threshold ? cuda::rank_key(__float_as_uint(s), static_cast<uint32_t>(p)) : 0ull;  // false for NaN
}

// The compacted candidates: keys[0..n_valid), none 0.
struct CompactKeys {
  const uint64_t* keys;
  __device__ __forceinline__ uint64_t operator()(int i) const { return keys[i]; }
};

// The candidates read from the scores (scores[b, p, c] at col[p * C]) where the bitmask row says so:
// the single pass that fills the shared-memory keys, and every pass of the rescan path.
template <typename scalar_t>
struct MaskedColumnKeys {
  const uint32_t* mask_row;
  const scalar_t* col;
  int C;
  float threshold;
  __device__ __forceinline__ bool is_candidate(int p) const { return (mask_row[p >> 5] >> (p & 31)) & 1u; }
  __device__ __forceinline__ uint64_t operator()(int p) const {
    return is_candidate(p) ? candidate_key(static_cast<float>(col[static_cast<int64_t>(p) * C]), threshold, p) : 0ull;
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

// Shared memory of the class kernel's top-k + NMS stage.
struct ClassShared {
  cuda::SelectShared sel;
  uint64_t key[kChunk];
  float4 box[kChunk];
  float4 prev[kChunk];
  uint32_t mask[kChunk * kChunkWords];
  unsigned char removed[kChunk];
  int kept;
  unsigned fill;  // candidates found in the column
};

// Top-k + greedy NMS of one (image, class) over the candidate keys src(0..n) (0 = not a candidate),
// n_valid of them. Appends the kept entries, (score bits << 32) | prior in rank order, to kept_list and
// returns how many (kc at most). All threads of the block must call it.
template <class Src>
__device__ int class_top_k_nms(const Src& src, int n, int n_valid, const float* __restrict__ loc_b,
                               const float* __restrict__ priors, int top_k, int kc, float v0, float v1,
                               float iou_threshold, unsigned long long* __restrict__ kept_list, ClassShared& sh) {
  const int tid = threadIdx.x, warp = cuda::warp_id(), lane = cuda::lane_id();
  const int total = min(top_k, n_valid);
  int kept = 0, taken = 0;
  uint64_t upper = ~0ull;
  while (taken < total && kept < kc) {  // uniform: every thread holds the same values
    const int m = min(kChunk, total - taken);
    const uint64_t lo = (n_valid - taken == m)
                            ? 1ull
                            : cuda::block_select_threshold<kClassThreads>(src, n, upper, static_cast<unsigned>(m), sh.sel);
    cuda::block_gather<kClassThreads>(src, n, lo, upper, sh.key, kChunk, sh.sel);
    cuda::block_sort_desc<kClassThreads>(sh.key, m);
    upper = sh.key[m - 1];
    taken += m;

    if (tid < m) {
      sh.box[tid] = decode_prior(loc_b, priors, cuda::rank_key_position(sh.key[tid]), v0, v1);
      sh.removed[tid] = 0;
    }
    __syncthreads();
    // Boxes kept by earlier chunks suppress this chunk's candidates.
    for (int base = 0; base < kept; base += kChunk) {
      const int nt = min(kChunk, kept - base);
      if (tid < nt) {
        sh.prev[tid] = decode_prior(loc_b, priors, static_cast<uint32_t>(kept_list[base + tid]), v0, v1);
      }
      __syncthreads();
      if (tid < m && !sh.removed[tid]) {
        const float4 box = sh.box[tid];
        for (int t = 0; t < nt; ++t) {
          if (iou4(sh.prev[t], box) > iou_threshold) {
            sh.removed[tid] = 1;
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
      const bool over = j > i && j < m && iou4(sh.box[i], sh.box[j]) > iou_threshold;
      const unsigned bits = __ballot_sync(cuda::kFullMask, over);
      if (lane == 0) sh.mask[i * kChunkWords + w] = bits;
    }
    __syncthreads();
    // Greedy walk by warp 0; lane w < words holds the removed bits of word w.
    if (warp == 0) {
      unsigned removed = 0u;
      for (int w = 0; w < words; ++w) {
        const int j = 32 * w + lane;
        const unsigned bits = __ballot_sync(cuda::kFullMask, j < m && sh.removed[j]);
        if (lane == w) removed = bits;
      }
      int count = kept;
      for (int w = 0; w < words && count < kc; ++w) {
        unsigned rv = __shfl_sync(cuda::kFullMask, removed, w);
        const int row = 32 * w + lane;
        const unsigned diag = row < m ? sh.mask[row * kChunkWords + w] : 0u;
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
          const uint64_t key = sh.key[row];
          kept_list[count + __popc(kept_bits & cuda::lanemask_lt())] =
              (key & 0xffffffff00000000ull) | cuda::rank_key_position(key);
        }
        count += __popc(kept_bits);
        if (lane > w && lane < words) {
          unsigned acc = 0u;
          for (int jj = 0; jj < jn; ++jj) {
            if ((kept_bits >> jj) & 1u) acc |= sh.mask[(32 * w + jj) * kChunkWords + lane];
          }
          removed |= acc;
        }
      }
      if (lane == 0) sh.kept = count;
    }
    __syncthreads();
    kept = sh.kept;
  }
  return kept;
}

// Keeps the keys >= lo of s[0..n) (nonzero) at the front of s, in no particular order, and returns how
// many; `fill` is shared scratch. In place, one kClassThreads-wide round at a time: a round reads its
// keys, waits for the whole block, then writes them to slots below the keys kept so far plus this
// round's, all of them at indices this round or an earlier one has read. All threads of the block must
// call it.
__device__ int keep_keys_from(uint64_t* s, int n, uint64_t lo, unsigned& fill) {
  if (threadIdx.x == 0) fill = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kClassThreads) {  // uniform
    const int i = base + threadIdx.x;
    const uint64_t key = i < n ? s[i] : 0ull;
    const bool keep = key != 0ull && key >= lo;
    __syncthreads();  // s[base, base + kClassThreads) read by every thread before any slot is written
    const unsigned ballot = __ballot_sync(cuda::kFullMask, keep);
    unsigned slot = 0;
    if (cuda::lane_id() == 0 && ballot) slot = atomicAdd(&fill, static_cast<unsigned>(__popc(ballot)));
    slot = __shfl_sync(cuda::kFullMask, slot, 0) + __popc(ballot & cuda::lanemask_lt());
    if (keep) s[slot] = key;  // slot < (keys kept before this round) + kClassThreads <= base + kClassThreads
  }
  __syncthreads();
  const int kept = static_cast<int>(fill);
  __syncthreads();  // every thread has read fill before the caller changes it
  return kept;
}

// One block per (image b = blockIdx.y, foreground class blockIdx.x + 1). Dynamic shared memory: `cap`
// candidate keys. kept_entries[b, class - 1, 0..kc), kept_count[b, class - 1].
template <typename scalar_t>
__global__ void __launch_bounds__(kClassThreads)
    pp_class_kernel(const scalar_t* __restrict__ scores, const uint32_t* __restrict__ mask,
                    const float* __restrict__ loc, const float* __restrict__ priors, int P, int C,
                    float score_threshold, int cap, int top_k, int kc, float v0, float v1, float iou_threshold,
                    unsigned long long* __restrict__ kept_entries, int* __restrict__ kept_count) {
  extern __shared__ uint64_t s_cand[];  // [cap]
  __shared__ ClassShared sh;
  constexpr int kUnroll = 4;  // score loads in flight per thread while gathering the candidates
  const int tid = threadIdx.x;
  const int b = blockIdx.y;
  const int Cm1 = C - 1;
  const int64_t seg = static_cast<int64_t>(b) * Cm1 + blockIdx.x;
  const MaskedColumnKeys<scalar_t> column{mask + seg * ((P + 31) / 32),
                                          scores + static_cast<int64_t>(b) * P * C + blockIdx.x + 1, C,
                                          score_threshold};
  const float* loc_b = loc + static_cast<int64_t>(b) * P * 4;
  unsigned long long* kept_list = kept_entries + seg * kc;

  // One pass over the column: append the candidates to s_cand (in no particular order), kBatch priors
  // at a time. With can_shrink, when fewer than kBatch slots are left after a batch (the most the next
  // one appends), s_cand is cut to its top_k keys and `lo` raised to the top_k-th of them: a key below
  // it has top_k better ones and can never be taken. So fill <= cap - kBatch before every batch, no
  // append is lost, and s_cand ends holding (at least) the class's top min(top_k, #candidates) keys.
  // Without can_shrink (top_k > cap - kBatch: too little room to gain), appends past cap are counted.
  constexpr int kBatch = kUnroll * kClassThreads;
  const bool can_shrink = top_k <= cap - kBatch;  // uniform
  uint64_t lo = 1ull;  // keys appended: >= lo (0: not a candidate)
  if (tid == 0) sh.fill = 0;
  __syncthreads();
  int fill = 0;  // keys appended so far (sh.fill read between batches), uniform
  for (int base = 0; base < P; base += kBatch) {  // uniform
    uint64_t key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int p = base + u * kClassThreads + tid;
      key[u] = p < P ? column(p) : 0ull;  // a score load only where the bit is set
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool take = key[u] >= lo;
      const unsigned ballot = __ballot_sync(cuda::kFullMask, take);
      unsigned slot = 0;
      if (cuda::lane_id() == 0 && ballot) slot = atomicAdd(&sh.fill, static_cast<unsigned>(__popc(ballot)));
      slot = __shfl_sync(cuda::kFullMask, slot, 0) + __popc(ballot & cuda::lanemask_lt());
      if (take && slot < static_cast<unsigned>(cap)) s_cand[slot] = key[u];
    }
    __syncthreads();  // the batch's appends done, its keys visible to every thread
    fill = static_cast<int>(sh.fill);
    __syncthreads();  // every thread has read sh.fill before the next batch appends
    if (can_shrink && fill > cap - kBatch) {  // uniform; fill > top_k keys, so lo >= 1 below
      lo = cuda::block_select_threshold<kClassThreads>(CompactKeys{s_cand}, fill, ~0ull,
                                                       static_cast<unsigned>(top_k), sh.sel);
      fill = keep_keys_from(s_cand, fill, lo, sh.fill);  // == top_k (keys are unique); sh.fill too
    }
  }
  const int n_valid = fill;  // uniform: keys in s_cand, or (past cap, without can_shrink) all candidates
  int kept;
  if (n_valid <= cap) {
    kept = class_top_k_nms(CompactKeys{s_cand}, n_valid, n_valid, loc_b, priors, top_k, kc, v0, v1, iou_threshold,
                           kept_list, sh);
  } else {  // a top_k too large to shrink to, and more candidates than fit: every pass reads the scores again
    kept = class_top_k_nms(column, P, n_valid, loc_b, priors, top_k, kc, v0, v1, iou_threshold, kept_list, sh);
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

#define SSDFAST_PP_CLASS_KERNEL(T)                                                                             \
  template __global__ void pp_mask_kernel<T>(const T*, int, int, float, uint32_t*);                                  \
  template __global__ void pp_class_kernel<T>(const T*, const uint32_t*, const float*, const float*, int, int, float, \
                                              int, int, int, float, float, float, unsigned long long*, int*);
SSDFAST_PP_CLASS_KERNEL(float)
SSDFAST_PP_CLASS_KERNEL(double)
SSDFAST_PP_CLASS_KERNEL(c10::Half)
SSDFAST_PP_CLASS_KERNEL(c10::BFloat16)
#undef SSDFAST_PP_CLASS_KERNEL

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
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

  const int64_t words = cuda::ceil_div(P, kTile);
  at::Tensor mask = at::empty({B, C - 1, words}, opts.dtype(at::kInt));
  at::Tensor kept_entries = at::empty({B, C - 1, kc}, opts.dtype(at::kLong));
  at::Tensor kept_count = at::empty({B, C - 1}, opts.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sc.scalar_type(), "ssd_postprocess", [&] {
    const dim3 mask_grid(static_cast<unsigned>(words), static_cast<unsigned>(cuda::ceil_div(C - 1, kTile)),
                         static_cast<unsigned>(B));
    pp_mask_kernel<scalar_t><<<mask_grid, dim3(kTile, kTileRows), 0, stream>>>(
        sc.data_ptr<scalar_t>(), static_cast<int>(P), static_cast<int>(C), static_cast<float>(score_threshold),
        cuda::ptr<uint32_t>(mask));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto kernel = pp_class_kernel<scalar_t>;
    // Candidates kept in shared memory: up to kMaxCandidates (fewer only where the device allows less).
    const int64_t cap = std::min<int64_t>(
        {P, kMaxCandidates, static_cast<int64_t>(cuda::max_dynamic_smem(kernel) / sizeof(uint64_t))});
    const size_t smem = sizeof(uint64_t) * static_cast<size_t>(cap);
    cuda::allow_dynamic_smem(kernel, smem, "ssd_postprocess");
    kernel<<<dim3(static_cast<unsigned>(C - 1), static_cast<unsigned>(B)), kClassThreads, smem, stream>>>(
        sc.data_ptr<scalar_t>(), cuda::ptr<uint32_t>(mask), lf.data_ptr<float>(), pf.data_ptr<float>(),
        static_cast<int>(P), static_cast<int>(C), static_cast<float>(score_threshold), static_cast<int>(cap),
        static_cast<int>(k), static_cast<int>(kc), static_cast<float>(variances[0]), static_cast<float>(variances[1]),
        static_cast<float>(iou_threshold), cuda::ptr<unsigned long long>(kept_entries), kept_count.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

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
