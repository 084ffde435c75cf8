#pragma once
// Per-device CUDA state: the stream every op of the framework is queued on, and library handles.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <vector>

namespace longnet::cuda {

/// Makes `device` current for its scope and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

/// CUDA events created together and destroyed with the set.
class Events {
 public:
  explicit Events(size_t n);
  ~Events();
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  cudaEvent_t operator[](size_t i) const { return events_[i]; }

 private:
  std::vector<cudaEvent_t> events_;
};

/// The stream the framework queues work on for `device` (created on first use, non-blocking).
cudaStream_t stream(int device);
/// The cuBLASLt handle of `device`.
cublasLtHandle_t cublaslt(int device);
/// The cuDNN handle of `device`, bound to its stream (created on first use).
cudnnHandle_t cudnn(int device);
/// Scratch memory for cuBLASLt on `device` (fixed size, allocated once).
void* cublaslt_workspace(int device, size_t* bytes);
/// Properties of `device` (cached).
const cudaDeviceProp& properties(int device);

}  // namespace longnet::cuda
