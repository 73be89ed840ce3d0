// What the CUDA part of the extension was built for, and whether it can run on a given device: read by
// ssdfast._C.build_info() / cuda_kernel_image() (ssdfast.cpp) and reported by `python -m ssdfast.check`.
#include "cuda/cuda_common.cuh"

namespace ssdfast {
namespace {
// Compiled for every architecture in the build like the real kernels; cudaFuncGetAttributes on it says
// which image (SASS or PTX) a device would run, or that none fits.
__global__ void probe_kernel() {}
}  // namespace
}  // namespace ssdfast

#if SSDFAST_HOST_PASS
#include <string>

#define SSDFAST_STR_(...) #__VA_ARGS__
#define SSDFAST_STR(...) SSDFAST_STR_(__VA_ARGS__)

namespace ssdfast {

// nvcc's __CUDA_ARCH_LIST__: the virtual architectures compiled for, e.g. "750,800,860,870,890,900".
const char* cuda_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return SSDFAST_STR(__CUDA_ARCH_LIST__);
#else
  return "";
#endif
}

// The CUDA toolkit version the extension was compiled with, as CUDART_VERSION (e.g. 13000).
int cuda_build_version() { return CUDART_VERSION; }

// Empty string and the binary (SASS) / PTX versions of the kernel image `device` runs (e.g. 90, 90), or
// the CUDA error that says why there is none (e.g. no kernel image for this architecture).
std::string cuda_kernel_image(int device, int* binary_version, int* ptx_version) {
  int previous = 0;
  cudaError_t err = cudaGetDevice(&previous);
  if (err == cudaSuccess) err = cudaSetDevice(device);
  cudaFuncAttributes attr{};
  if (err == cudaSuccess) {
    err = cudaFuncGetAttributes(&attr, probe_kernel);
    cudaSetDevice(previous);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  }
  *binary_version = attr.binaryVersion;
  *ptx_version = attr.ptxVersion;
  return "";
}

}  // namespace ssdfast
#endif  // SSDFAST_HOST_PASS
