// Shared pieces of the ssdfast CUDA kernels: launch helpers, warp/block reductions, and a block-wide
// top-m selection (radix select + bitonic sort) over unique 64-bit keys.
//
// Ordering keys. Selections in this package always rank by (value desc, position asc). Packing a
// value's order-preserving 32 bits above (0xFFFFFFFF - position) gives one unique 64-bit key per
// element whose descending order is exactly that ranking, so "the m largest keys" is the top m with
// the tie rule built in, and no separate tie pass is needed. Key 0 marks "not a candidate".
//
// Build time. nvcc parses a .cu file once for the host and once per target architecture (seven times
// with the default TORCH_CUDA_ARCH_LIST). The kernel files therefore keep the torch headers and the
// host glue (argument checks, allocation, launches, registration) inside `#if SSDFAST_HOST_PASS`, which
// only the host pass sees, and instantiate every kernel template explicitly outside it, so that both
// passes see the same set of kernels (nvcc's rule for __CUDA_ARCH__-dependent code).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#if !defined(__CUDA_ARCH__)
#define SSDFAST_HOST_PASS 1
#else
#define SSDFAST_HOST_PASS 0
// The device passes do not see the launches, so they would call every kernel "never referenced".
#pragma nv_diag_suppress 177
#endif

#if SSDFAST_HOST_PASS
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#endif

namespace ssdfast {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

#if SSDFAST_HOST_PASS
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Raw pointer of a tensor's storage as T* (scratch buffers are allocated as int32/int64 and used as
// uint32/uint64).
template <typename T>
inline T* ptr(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// Allows `bytes` of dynamic shared memory for `kernel` on the current device (above the default 48 KiB
// only where the device's opt-in limit allows); errors naming `what` when it cannot.
template <typename Kernel>
inline void allow_dynamic_smem(Kernel kernel, size_t bytes, const char* what) {
  constexpr size_t kDefault = 48 * 1024;
  if (bytes <= kDefault) return;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(bytes <= static_cast<size_t>(optin), what, " needs ", bytes,
              " bytes of shared memory per block, more than this GPU allows (", optin, ")");
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}
#endif  // SSDFAST_HOST_PASS

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }
__device__ __forceinline__ unsigned lanemask_lt() { return (1u << lane_id()) - 1u; }

__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long w = __shfl_xor_sync(kFullMask, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sum of `v` over the block; every thread gets the total. `tmp` is shared, kThreads / 32 ints.
template <int kThreads>
__device__ __forceinline__ int block_sum(int v, int* tmp) {
  v = warp_sum(v);
  if (lane_id() == 0) tmp[warp_id()] = v;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += tmp[w];
  __syncthreads();  // tmp may be reused right after
  return total;
}

// Order-preserving map of a float to uint32 (ascending floats -> ascending keys). -0 is mapped as +0
// and every NaN to the largest key, as torch.sort orders them (NaN above +inf, -0 == +0). Never 0.
__device__ __forceinline__ uint32_t float_order_key(float f) {
  if (f != f) return 0xffffffffu;
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) == 0u) u = 0u;  // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Unique ranking key: value bits above the complemented position (lower position ranks first).
__device__ __forceinline__ uint64_t rank_key(uint32_t value_key, uint32_t position) {
  return (static_cast<uint64_t>(value_key) << 32) | static_cast<uint32_t>(0xffffffffu - position);
}
__device__ __forceinline__ uint32_t rank_key_position(uint64_t key) {
  return 0xffffffffu - static_cast<uint32_t>(key);
}

// ----------------------------------------------------------------------------- block top-m selection

// Shared state of block_select_threshold / block_gather.
struct SelectShared {
  unsigned hist[256];
  unsigned digit;
  unsigned need;
  unsigned count;
  unsigned fill;
};

// hist[bin] += 1 for every active lane, one shared atomic per distinct bin in the warp. All 32 lanes
// of the warp must call it.
__device__ __forceinline__ void warp_hist_add(unsigned* hist, unsigned bin, bool active) {
  const unsigned act = __ballot_sync(kFullMask, active);
  if (active) {
    const unsigned peers = __match_any_sync(act, bin);
    if (lane_id() == __ffs(peers) - 1) atomicAdd(hist + bin, static_cast<unsigned>(__popc(peers)));
  }
}

// Warp 0: the digit whose bin holds the need-th largest key (bins scanned from 255 down); writes the
// digit, the rank still needed inside that bin and the bin's count.
__device__ __forceinline__ void find_digit(SelectShared& sh, unsigned need) {
  const int lane = lane_id();
  unsigned local = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) local += sh.hist[255 - 8 * lane - j];
  unsigned incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned v = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += v;
  }
  const unsigned excl = incl - local;
  if (excl < need && need <= incl) {
    unsigned cum = excl;
    for (int j = 0; j < 8; ++j) {
      const unsigned bin = 255 - 8 * lane - j;
      const unsigned h = sh.hist[bin];
      if (cum + h >= need) {
        sh.digit = bin;
        sh.need = need - cum;
        sh.count = h;
        break;
      }
      cum += h;
    }
  }
}

// Radix select over the keys src(0..n) (unique; 0 = not a candidate) that are below `upper`: returns T
// such that exactly m candidates lie in [T, upper). Needs 1 <= m <= number of such candidates. Eight
// passes of 8 bits at most; stops as soon as the bin of the m-th key is taken whole (usually after
// the 32 value bits). All threads of the block must call it.
template <int kThreads, class Src>
__device__ uint64_t block_select_threshold(const Src& src, int n, uint64_t upper, unsigned m, SelectShared& sh) {
  uint64_t prefix = 0, prefix_mask = 0;
  unsigned need = m;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) sh.hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < n; base += kThreads) {
      const int i = base + threadIdx.x;
      const uint64_t key = i < n ? src(i) : 0ull;
      const bool active = key != 0ull && key < upper && (key & prefix_mask) == prefix;
      warp_hist_add(sh.hist, static_cast<unsigned>(key >> shift) & 0xffu, active);
    }
    __syncthreads();
    if (threadIdx.x < 32) find_digit(sh, need);
    __syncthreads();
    const unsigned digit = sh.digit;
    need = sh.need;
    const bool whole_bin = sh.count == need;
    prefix |= static_cast<uint64_t>(digit) << shift;
    prefix_mask |= 0xffull << shift;
    if (whole_bin) break;
  }
  __syncthreads();  // sh is reused by the caller
  return prefix;
}

// Writes the candidates with lo <= key < upper to out[0..count) in no particular order (at most cap of
// them) and returns count. All threads of the block must call it.
template <int kThreads, class Src>
__device__ int block_gather(const Src& src, int n, uint64_t lo, uint64_t upper, uint64_t* out, int cap,
                            SelectShared& sh) {
  if (threadIdx.x == 0) sh.fill = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + threadIdx.x;
    const uint64_t key = i < n ? src(i) : 0ull;
    const bool take = key != 0ull && key >= lo && key < upper;
    const unsigned ballot = __ballot_sync(kFullMask, take);
    unsigned slot = 0;
    if (lane_id() == 0 && ballot) slot = atomicAdd(&sh.fill, static_cast<unsigned>(__popc(ballot)));
    slot = __shfl_sync(kFullMask, slot, 0) + __popc(ballot & lanemask_lt());
    if (take && slot < static_cast<unsigned>(cap)) out[slot] = key;
  }
  __syncthreads();
  const int count = static_cast<int>(min(sh.fill, static_cast<unsigned>(cap)));
  __syncthreads();
  return count;
}

// Sorts s[0..m) descending in shared memory (bitonic; s must hold the next power of two >= m, the tail is
// padded with 0). All threads of the block must call it.
template <int kThreads>
__device__ void block_sort_desc(uint64_t* s, int m) {
  int n2 = 1;
  while (n2 < m) n2 <<= 1;
  for (int i = m + threadIdx.x; i < n2; i += kThreads) s[i] = 0ull;
  __syncthreads();
  for (int size = 2; size <= n2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < n2 / 2; t += kThreads) {
        const int lo = 2 * t - (t & (stride - 1));
        const int hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const uint64_t a = s[lo], b = s[hi];
        if ((a < b) == desc) {
          s[lo] = b;
          s[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace cuda
}  // namespace ssdfast
