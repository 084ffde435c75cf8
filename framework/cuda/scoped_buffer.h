#pragma once
// Device scratch memory for the length of one call, allocated and freed in stream order.
#include <cuda_runtime.h>

#include <cstddef>

#include "framework/cuda/check.h"

namespace longnet::cuda {

/// `bytes` of device memory on `stream` (none when 0), freed in stream order when destroyed.
class ScopedBuffer {
 public:
  ScopedBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes) LN_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~ScopedBuffer() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  ScopedBuffer(const ScopedBuffer&) = delete;
  ScopedBuffer& operator=(const ScopedBuffer&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace longnet::cuda
