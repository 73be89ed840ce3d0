// batched_nms on CUDA: a 64-bit suppression bitmask per box and an on-device greedy reduction.
//
//   1. order = stable sort of the scores, descending (torch.sort: NaN first, ties by lower index);
//      a second stable sort of the categories in that order groups each category's boxes together,
//      still in score order ("grouped" order). seg_end[g] = end of g's category run.
//   2. mask kernel (torchvision-style, 64 x 64 tiles): bit j of mask[i][j / 64] is set when j > i is in
//      the same category as i and IoU(i, j) > threshold. Only the words inside i's category run are
//      computed, so boxes of different categories never meet and the work is sum(n_c^2), not N^2.
//   3. walk kernel: each category run is reduced greedily by one block, 64 boxes (one mask word) at a
//      time: warp 0 resolves the word in box order against the bits removed so far, then the block
//      ORs the kept rows' words into the words after it. Runs start in different 64-box row blocks
//      are walked by different blocks in parallel. keep is written in score order.
//   4. keep = order[keep mask]: the only host synchronisation (the output size).
#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

constexpr int kBlockBoxes = 64;  // boxes per mask word / tile side
constexpr int kPrepThreads = 256;
constexpr int kWalkThreads = 256;
constexpr int kMaxColumnSplit = 32;

// Gathers the boxes in grouped order and finds the end of each box's category run (gallop + bisect).
__global__ void nms_prep_kernel(const float* __restrict__ boxes, const int64_t* __restrict__ grouped,
                                const int64_t* __restrict__ cls, int n, float4* __restrict__ sorted_boxes,
                                int* __restrict__ seg_end) {
  for (int g = blockIdx.x * kPrepThreads + threadIdx.x; g < n; g += gridDim.x * kPrepThreads) {
    const int64_t src = grouped[g];
    sorted_boxes[g] = make_float4(boxes[src * 4 + 0], boxes[src * 4 + 1], boxes[src * 4 + 2], boxes[src * 4 + 3]);
    const int64_t c = cls[g];
    // cls is sorted ascending: find the first position > g whose category differs.
    int lo = g + 1, step = 1;
    while (lo < n && cls[lo] == c) {  // gallop: [g, lo) is all c
      const int next = lo + step;
      if (next >= n || cls[next] != c) break;
      lo = next + 1;
      step <<= 1;
    }
    int hi = min(n, lo + step);  // first differing position lies in [lo, hi]
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (cls[mid] == c) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    seg_end[g] = lo;
  }
}

// Block (row block rb, column offset y) fills mask words [rb*64 .. rb*64+63] x {rb + y + k * gridDim.y}
// for the column blocks up to the last one any of its rows' category runs reaches.
__global__ void __launch_bounds__(kBlockBoxes)
    nms_mask_kernel(const float4* __restrict__ boxes, const int* __restrict__ seg_end, int n, int col_blocks,
                    float threshold, unsigned long long* __restrict__ mask) {
  __shared__ float4 col_box[kBlockBoxes];
  const int rb = blockIdx.x;
  const int row0 = rb * kBlockBoxes;
  const int rows = min(kBlockBoxes, n - row0);
  const int last_word = (seg_end[row0 + rows - 1] - 1) / kBlockBoxes;  // runs are sorted: the last row's ends last
  const int r = row0 + threadIdx.x;
  float rbox[4] = {0.f, 0.f, 0.f, 0.f};
  int end = 0;
  if (threadIdx.x < rows) {
    const float4 v = boxes[r];
    rbox[0] = v.x;
    rbox[1] = v.y;
    rbox[2] = v.z;
    rbox[3] = v.w;
    end = seg_end[r];
  }
  for (int cb = rb + blockIdx.y; cb <= last_word; cb += gridDim.y) {
    const int col0 = cb * kBlockBoxes;
    const int cols = min(kBlockBoxes, n - col0);
    if (threadIdx.x < cols) col_box[threadIdx.x] = boxes[col0 + threadIdx.x];
    __syncthreads();
    if (threadIdx.x < rows) {
      unsigned long long bits = 0ull;
      const int j0 = max(0, r + 1 - col0);
      const int j1 = min(cols, end - col0);
      for (int j = j0; j < j1; ++j) {
        const float4 v = col_box[j];
        const float cbox[4] = {v.x, v.y, v.z, v.w};
        if (iou_xyxy(rbox, cbox) > threshold) bits |= 1ull << j;
      }
      mask[static_cast<int64_t>(r) * col_blocks + cb] = bits;
    }
    __syncthreads();
  }
}

// Greedy reduction of the category runs that start in row block blockIdx.x; keep_by_score[rank[g]].
__global__ void __launch_bounds__(kWalkThreads)
    nms_walk_kernel(const unsigned long long* __restrict__ mask, const int* __restrict__ seg_end,
                    const int64_t* __restrict__ rank, int n, int col_blocks, bool* __restrict__ keep_by_score) {
  extern __shared__ unsigned long long removed[];  // words of the current run, relative to its first word
  __shared__ unsigned long long s_starts, s_kept;
  const int row0 = blockIdx.x * kBlockBoxes;
  const int lane = cuda::lane_id();
  if (threadIdx.x < 32) {
    // g starts a run when g == 0 or the run of g - 1 ends at g.
    const int g0 = row0 + lane, g1 = row0 + lane + 32;
    const bool s0 = g0 < n && (g0 == 0 || seg_end[g0 - 1] == g0);
    const bool s1 = g1 < n && seg_end[g1 - 1] == g1;
    const unsigned b0 = __ballot_sync(cuda::kFullMask, s0), b1 = __ballot_sync(cuda::kFullMask, s1);
    if (lane == 0) s_starts = static_cast<unsigned long long>(b0) | (static_cast<unsigned long long>(b1) << 32);
  }
  __syncthreads();
  unsigned long long starts = s_starts;
  while (starts) {
    const int s = row0 + __ffsll(static_cast<long long>(starts)) - 1;
    starts &= starts - 1;
    const int e = seg_end[s];
    const int w_first = s / kBlockBoxes, w_last = (e - 1) / kBlockBoxes;
    for (int t = threadIdx.x; t <= w_last - w_first; t += kWalkThreads) removed[t] = 0ull;
    __syncthreads();
    for (int w = w_first; w <= w_last; ++w) {
      const int base = w * kBlockBoxes;
      const int lo = max(s, base) - base, hi = min(e, base + kBlockBoxes) - base;  // run's bits in this word
      if (threadIdx.x < 32) {
        unsigned long long rv = removed[w - w_first];
        // Diagonal words: row base + lane and base + lane + 32 against this word.
        const int i0 = base + lane, i1 = base + lane + 32;
        const unsigned long long d0 =
            (lane >= lo && lane < hi) ? mask[static_cast<int64_t>(i0) * col_blocks + w] : 0ull;
        const unsigned long long d1 =
            (lane + 32 >= lo && lane + 32 < hi) ? mask[static_cast<int64_t>(i1) * col_blocks + w] : 0ull;
        unsigned long long kept = 0ull;
        for (int j = lo; j < hi; ++j) {  // uniform over the warp: rv is the same in every lane
          if (!((rv >> j) & 1ull)) {
            kept |= 1ull << j;
            rv |= __shfl_sync(cuda::kFullMask, j < 32 ? d0 : d1, j & 31);
          }
        }
        if (lane >= lo && lane < hi) keep_by_score[rank[i0]] = (kept >> lane) & 1ull;
        if (lane + 32 >= lo && lane + 32 < hi) keep_by_score[rank[i1]] = (kept >> (lane + 32)) & 1ull;
        if (lane == 0) s_kept = kept;
      }
      __syncthreads();
      const unsigned long long kept = s_kept;
      if (kept) {
        for (int w2 = w + 1 + threadIdx.x; w2 <= w_last; w2 += kWalkThreads) {
          unsigned long long acc = 0ull;
#pragma unroll 8
          for (int j = 0; j < kBlockBoxes; ++j) {
            if ((kept >> j) & 1ull) acc |= mask[static_cast<int64_t>(base + j) * col_blocks + w2];
          }
          removed[w2 - w_first] |= acc;  // one thread per word: no race
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace ssdfast {
namespace {
at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  check_boxes(boxes, "boxes", 2);
  const int64_t n = boxes.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n, "scores should be a 1-D tensor of N=", n,
              " elements, got shape ", scores.sizes());
  TORCH_CHECK(scores.is_floating_point(), "scores should be a floating-point tensor, got ", scores.scalar_type());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == n, "idxs should be a 1-D tensor of N=", n, " elements, got shape ",
              idxs.sizes());
  TORCH_CHECK(!idxs.is_floating_point() && !idxs.is_complex(), "idxs should be an integer tensor, got ",
              idxs.scalar_type());
  check_same_device(boxes, "boxes", scores, "scores");
  check_same_device(boxes, "boxes", idxs, "idxs");
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, "iou_threshold should be in [0, 1], got ",
              iou_threshold);
  c10::cuda::CUDAGuard guard(boxes.device());
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  TORCH_CHECK(n < (int64_t{1} << 31) - kBlockBoxes, "batched_nms supports fewer than 2^31 boxes, got ", n);

  const at::Tensor bf = boxes.to(at::kFloat).contiguous();
  // Score order (stable: ties keep the lower index first; NaN first as in torch.sort).
  const at::Tensor order = std::get<1>(at::sort(scores.to(at::kFloat), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  // Categories grouped, score order kept inside each (stable).
  const at::Tensor cls_by_score = idxs.to(at::kLong).index_select(0, order);
  auto grouped_sort = at::sort(cls_by_score, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor cls = std::get<0>(grouped_sort).contiguous();
  const at::Tensor rank = std::get<1>(grouped_sort).contiguous();  // grouped position -> score rank
  const at::Tensor grouped = order.index_select(0, rank).contiguous();

  const int ni = static_cast<int>(n);
  const int col_blocks = static_cast<int>(cuda::ceil_div(n, kBlockBoxes));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor sorted_boxes = at::empty({n, 4}, bf.options());
  at::Tensor seg_end = at::empty({n}, bf.options().dtype(at::kInt));
  nms_prep_kernel<<<static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(n, kPrepThreads), 4096)), kPrepThreads, 0,
                    stream>>>(bf.data_ptr<float>(), grouped.data_ptr<int64_t>(), cls.data_ptr<int64_t>(), ni,
                              cuda::ptr<float4>(sorted_boxes), seg_end.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor mask = at::empty({n * col_blocks}, bf.options().dtype(at::kLong));
  const dim3 mask_grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(std::min(col_blocks, kMaxColumnSplit)));
  nms_mask_kernel<<<mask_grid, kBlockBoxes, 0, stream>>>(cuda::ptr<float4>(sorted_boxes), seg_end.data_ptr<int>(), ni,
                                                         col_blocks, static_cast<float>(iou_threshold),
                                                         cuda::ptr<unsigned long long>(mask));
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor keep_by_score = at::empty({n}, bf.options().dtype(at::kBool));
  const size_t smem = sizeof(unsigned long long) * static_cast<size_t>(col_blocks);
  cuda::allow_dynamic_smem(nms_walk_kernel, smem, "batched_nms with this many boxes");
  nms_walk_kernel<<<static_cast<unsigned>(col_blocks), kWalkThreads, smem, stream>>>(
      cuda::ptr<unsigned long long>(mask), seg_end.data_ptr<int>(), rank.data_ptr<int64_t>(), ni, col_blocks,
      keep_by_score.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // The one host synchronisation: the number of kept boxes.
  return order.masked_select(keep_by_score);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) { m.impl("batched_nms", &batched_nms_cuda); }

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
