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

#include <map>
#include <mutex>
#include <utility>
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

// Shared-memory limits of one kernel on one device, and the dynamic size it is currently allowed.
struct SmemLimits {
  size_t static_bytes = 0;  // the kernel's own __shared__ arrays
  size_t optin = 0;         // the device's opt-in limit per block (static + dynamic)
  size_t allowed = 0;       // cudaFuncAttributeMaxDynamicSharedMemorySize as set now (only ever raised)
};

// The registry of SmemLimits by (kernel, device), and the mutex that guards it and every
// cudaFuncSetAttribute call made through it. One instance per process (inline function statics).
inline std::mutex& smem_mutex() {
  static std::mutex m;
  return m;
}
inline std::map<std::pair<const void*, int>, SmemLimits>& smem_registry() {
  static std::map<std::pair<const void*, int>, SmemLimits> r;
  return r;
}

// The entry of `func` on the current device, read from the driver on first use. Caller holds smem_mutex().
inline SmemLimits& smem_limits_locked(const void* func) {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  auto it = smem_registry().find({func, device});
  if (it != smem_registry().end()) return it->second;
  cudaFuncAttributes attr{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, func));  // also: "no kernel image for this device"
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  SmemLimits limits;
  limits.static_bytes = attr.sharedSizeBytes;
  limits.optin = static_cast<size_t>(optin);
  limits.allowed = static_cast<size_t>(attr.maxDynamicSharedSizeBytes);
  return smem_registry().emplace(std::make_pair(func, device), limits).first->second;
}

// The most dynamic shared memory `kernel` can be given on the current device: the opt-in limit minus
// the kernel's static shared memory.
template <typename Kernel>
inline size_t max_dynamic_smem(Kernel kernel) {
  std::lock_guard<std::mutex> lock(smem_mutex());
  const SmemLimits& l = smem_limits_locked(reinterpret_cast<const void*>(kernel));
  return l.optin > l.static_bytes ? l.optin - l.static_bytes : 0;
}

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device; errors naming `what`
// when the kernel's static plus `bytes` exceed the device's opt-in limit. The attribute is only ever
// raised (under a mutex, once per kernel, device and new maximum), never lowered, so a launch that
// passed this check cannot fail because another host thread asked for a different size meanwhile.
template <typename Kernel>
inline void allow_dynamic_smem(Kernel kernel, size_t bytes, const char* what) {
  const void* func = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> lock(smem_mutex());
  SmemLimits& l = smem_limits_locked(func);
  TORCH_CHECK(l.static_bytes + bytes <= l.optin, what, " needs ", bytes, " bytes of dynamic shared memory per block",
              " (plus ", l.static_bytes, " static), more than this GPU allows (", l.optin, ")");
  if (bytes > l.allowed) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    l.allowed = bytes;
  }
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

// Key of every NaN in float_order_key: just above +inf's key (0xFF800000). Not 0xFFFFFFFF, so that no
// rank_key reaches ~0ull, the "no upper bound" of block_select_threshold / block_gather.
constexpr uint32_t kNanOrderKey = 0xff800001u;

// Order-preserving map of a float to uint32 (ascending floats -> ascending keys). -0 is mapped as +0
// and every NaN to one key above +inf's, as torch.sort orders them (NaN above +inf, -0 == +0). Never 0,
// never 0xFFFFFFFF.
__device__ __forceinline__ uint32_t float_order_key(float f) {
  if (f != f) return kNanOrderKey;
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
// such that exactly m candidates lie in [T, upper). Needs 1 <= m <= number of such candidates; pass
// upper = ~0ull for "no bound" (no key may equal ~0ull: see kNanOrderKey). T may be 0 when the m
// candidates are all there are, so callers test key != 0 as well as key >= T. Eight
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
