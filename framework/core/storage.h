#pragma once
// Raw memory behind tensors, and the allocators that provide it.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "framework/core/device.h"

namespace longnet {

/// Provides memory for one device. Allocators outlive every storage (they are process-wide).
class Allocator {
 public:
  virtual ~Allocator() = default;
  /// Returns `bytes` bytes of memory (non-null for bytes > 0); throws longnet::Error when out of memory.
  virtual void* allocate(size_t bytes) = 0;
  /// Frees memory returned by allocate with the same size.
  virtual void deallocate(void* ptr, size_t bytes) = 0;
};

/// Bytes held now and the high-water mark since the last reset, for one device.
struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
};

/// The allocator for a device. CUDA devices need a build with the CUDA backend.
Allocator* allocator_for(Device device);
/// Memory statistics of a device as seen by the framework's allocations.
MemoryStats memory_stats(Device device);
/// Resets the peak to the current value.
void reset_peak_memory(Device device);

/// A contiguous block of bytes on one device, shared by every tensor that views it.
class Storage {
 public:
  /// Allocates `nbytes` bytes on `device` (contents uninitialised).
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace longnet
