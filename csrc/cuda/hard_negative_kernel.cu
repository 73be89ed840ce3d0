// hard_negative_mask on CUDA: per-row k-th value selection instead of sorting.
//
// One block per image (row). Pass 1 writes the mask of positives, counts positives and negatives, and
// stores each negative's order-preserving loss key (NaN highest, -0 == +0, as torch.sort; never
// 0xFFFFFFFF, so every key lies below the select's `upper` = ~0ull) in a scratch
// row (0 for non-negatives). With k = min(ratio * num_pos, num_neg), the k hardest negatives are the k
// largest 64-bit keys (loss key << 32 | 0xFFFFFFFF - index): ties on the loss go to the lower index,
// as the reference's stable descending sort. A block radix select finds the k-th key (4 passes over
// the row when the losses are distinct, 8 at most), and a last pass marks the keys at or above it.
#include "box_utils.h"
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {

constexpr int kThreads = 512;

struct NegativeKeys {
  const uint32_t* row;
  __device__ __forceinline__ uint64_t operator()(int i) const {
    const uint32_t k = row[i];
    return k == 0u ? 0ull : cuda::rank_key(k, static_cast<uint32_t>(i));
  }
};

__global__ void __launch_bounds__(kThreads)
    hard_negative_kernel(const float* __restrict__ loss, const int64_t* __restrict__ labels, int P, int64_t ratio,
                         uint32_t* __restrict__ keys, bool* __restrict__ mask) {
  __shared__ cuda::SelectShared sh;
  __shared__ int tmp[kThreads / 32];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * P;
  uint32_t* key_row = keys + row0;

  int num_pos = 0, num_neg = 0;
  for (int i = threadIdx.x; i < P; i += kThreads) {
    const int64_t label = labels[row0 + i];
    const bool pos = label > 0, neg = label == 0;
    key_row[i] = neg ? cuda::float_order_key(loss[row0 + i]) : 0u;
    mask[row0 + i] = pos;
    num_pos += pos;
    num_neg += neg;
  }
  num_pos = cuda::block_sum<kThreads>(num_pos, tmp);  // its barriers also publish key_row to the block
  num_neg = cuda::block_sum<kThreads>(num_neg, tmp);
  // k = min(ratio * num_pos, num_neg) without overflowing ratio * num_pos.
  const int k = (num_pos > 0 && ratio > num_neg / num_pos) ? num_neg : static_cast<int>(ratio * num_pos);
  if (k == 0) return;

  const NegativeKeys src{key_row};
  const uint64_t lo =
      k == num_neg ? 1ull : cuda::block_select_threshold<kThreads>(src, P, ~0ull, static_cast<unsigned>(k), sh);
  for (int i = threadIdx.x; i < P; i += kThreads) {
    const uint64_t key = src(i);
    if (key != 0ull && key >= lo) mask[row0 + i] = true;  // 0: not a negative (lo may be 0, see the select)
  }
}

}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS  // host glue: torch headers are parsed by the host pass only (see cuda_common.cuh)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace ssdfast {
namespace {
at::Tensor hard_negative_mask_cuda(const at::Tensor& neg_loss, const at::Tensor& labels, int64_t neg_pos_ratio) {
  TORCH_CHECK(neg_loss.dim() == 2, "neg_loss should be a 2-D tensor [B, P], got ", neg_loss.dim(), "-D");
  TORCH_CHECK(neg_loss.is_floating_point(), "neg_loss should be a floating-point tensor, got ",
              neg_loss.scalar_type());
  TORCH_CHECK(labels.sizes() == neg_loss.sizes(), "labels should have the shape of neg_loss ", neg_loss.sizes(),
              ", got ", labels.sizes());
  TORCH_CHECK(!labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != at::kBool,
              "labels should be an integer tensor, got ", labels.scalar_type());
  TORCH_CHECK(neg_pos_ratio >= 0, "neg_pos_ratio should be a non-negative integer, got ", neg_pos_ratio);
  check_same_device(neg_loss, "neg_loss", labels, "labels");
  const int64_t B = neg_loss.size(0), P = neg_loss.size(1);
  c10::cuda::CUDAGuard guard(neg_loss.device());
  at::Tensor mask = at::empty({B, P}, labels.options().dtype(at::kBool));
  if (B == 0 || P == 0) return mask;
  TORCH_CHECK(P < (int64_t{1} << 31) - 1, "neg_loss has too many columns: ", P);

  const at::Tensor lf = neg_loss.to(at::kFloat).contiguous();
  const at::Tensor ll = labels.to(at::kLong).contiguous();
  at::Tensor keys = at::empty({B, P}, lf.options().dtype(at::kInt));
  TORCH_CHECK(B <= 0x7fffffff, "neg_loss has too many rows: ", B);
  hard_negative_kernel<<<static_cast<unsigned>(B), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      lf.data_ptr<float>(), ll.data_ptr<int64_t>(), static_cast<int>(P), neg_pos_ratio, cuda::ptr<uint32_t>(keys),
      mask.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssdfast, CUDA, m) { m.impl("hard_negative_mask", &hard_negative_mask_cuda); }

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
