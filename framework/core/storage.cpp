#include "framework/core/storage.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "framework/core/error.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/runtime.h"
#endif

namespace longnet {
namespace {

constexpr int kMaxDevices = 16;

struct Counters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
};

Counters& counters(Device d) {
  static Counters cpu;
  static Counters cuda[kMaxDevices];
  return d.is_cpu() ? cpu : cuda[d.index % kMaxDevices];
}

void track(Device d, int64_t delta) {
  Counters& c = counters(d);
  const int64_t now = c.current.fetch_add(delta) + delta;
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}

// 64-byte alignment keeps vector loads and cache lines aligned for every dtype. Blocks of 1 MiB and
// more are kept for reuse after they are freed: glibc serves them from fresh mappings, so every
// allocation would otherwise fault its pages in again (a 64 MiB clone ran at a third of copy speed).
// Sizes are rounded to a quarter of their power of two so freed blocks fit later requests.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t size = rounded(bytes);
    if (size >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= size;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, size);
    if (p == nullptr && size >= kCacheMin) {  // give the cache back and try once more
      release_cache();
      p = std::aligned_alloc(64, size);
    }
    LN_CHECK(p != nullptr, "[alloc] out of host memory allocating ", bytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    const size_t size = rounded(bytes);
    if (size >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + size <= kCacheMax) {
        free_.emplace(size, ptr);
        cached_ += size;
        return;
      }
    }
    std::free(ptr);
  }

 private:
  static constexpr size_t kCacheMin = size_t{1} << 20;
  static constexpr size_t kCacheMax = size_t{4} << 30;

  static size_t rounded(size_t bytes) {
    size_t size = (bytes + 63) / 64 * 64;
    if (size < kCacheMin) return size;
    size_t top = size_t{1} << (63 - __builtin_clzll(size));
    const size_t step = top / 4;
    return (size + step - 1) / step * step;
  }
  void release_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

}  // namespace

Allocator* allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return &cpu;
#ifdef LONGNET_WITH_CUDA
  return cuda::pool_allocator(device.index);
#else
  LN_FAIL("[alloc] ", device.str(),
          " requested but this build has no CUDA backend (configure with -DLONGNET_CUDA=ON)");
#endif
}

MemoryStats memory_stats(Device device) {
  Counters& c = counters(device);
  return {c.current.load(), c.peak.load()};
}

void reset_peak_memory(Device device) {
  Counters& c = counters(device);
  c.peak.store(c.current.load());
}

Storage::Storage(size_t nbytes, Device device)
    : nbytes_(nbytes), device_(device), allocator_(allocator_for(device)) {
  data_ = allocator_->allocate(nbytes);
  track(device_, static_cast<int64_t>(nbytes_));
}

Storage::~Storage() {
  allocator_->deallocate(data_, nbytes_);
  track(device_, -static_cast<int64_t>(nbytes_));
}

}  // namespace longnet
