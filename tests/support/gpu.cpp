#include "tests/support/gpu.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace longnet::testing {

std::string gpu_unavailable_reason() {
#ifdef LONGNET_WITH_CUDA
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
  if (n == 0) return "no CUDA device present";
  return "";
#else
  return "built without the CUDA backend";
#endif
}

bool gpu_available() {
  static const bool available = gpu_unavailable_reason().empty();
  return available;
}

}  // namespace longnet::testing
