#pragma once
// The CUDA backend as seen from code that does not include CUDA headers.
#include <cstdint>

#include "framework/core/storage.h"

namespace longnet::cuda {

/// Number of CUDA devices usable by this process (0 when none or no driver).
int device_count();
/// Waits for all work queued on the device's stream.
void synchronize(int device);
/// The stream-ordered pool allocator of a device (cudaMallocAsync on its default memory pool,
/// with a release threshold high enough that freed memory stays cached).
Allocator* pool_allocator(int device);

/// Page-locked host memory for fast asynchronous transfers.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace longnet::cuda
