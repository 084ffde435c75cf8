#include "framework/core/storage.h"

#include <atomic>
#include <cstdlib>
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

// 64-byte alignment keeps vector loads and cache lines aligned for every dtype.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    LN_CHECK(p != nullptr, "[alloc] out of host memory allocating ", bytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
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
