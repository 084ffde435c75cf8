#include "tools/longnet/bench_timing.h"

#include <algorithm>
#include <chrono>

#include "framework/core/error.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include <atomic>
#include <thread>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {

void synchronize_device(Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) cuda::synchronize(device.index);
#else
  (void)device;
#endif
}

double median(std::vector<double> values) {
  LN_CHECK(!values.empty(), "[bench] median of no values");
  std::sort(values.begin(), values.end());
  const size_t h = values.size() / 2;
  return values.size() % 2 ? values[h] : 0.5 * (values[h - 1] + values[h]);
}

double median_ms(const std::function<void()>& fn, Device device, int reps, int warmup, bool gated) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return timed_median_ms([&](int) { fn(); }, {device.index, reps, warmup, 1, gated});
#endif
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(std::move(ms));
}

#ifdef LONGNET_WITH_CUDA
namespace {

constexpr int kRunsPerGate = 64;  // runs queued behind one gate, well under the launch queue depth

// Holds the stream in a host callback until open(), so that a batch of timed runs is queued in
// full before the first starts. The callback gives up after a few seconds, so a stalled host
// cannot hang the stream.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t s) : stream_(s) {
    LN_CUDA_CHECK(cudaLaunchHostFunc(s, &StreamGate::wait, &open_));
  }
  ~StreamGate() {
    open_.store(true);
    cudaStreamSynchronize(stream_);  // the callback reads open_ until it returns
  }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;
  void open() { open_.store(true); }

 private:
  static void CUDART_CB wait(void* flag) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!static_cast<std::atomic<bool>*>(flag)->load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  }
  cudaStream_t stream_;
  std::atomic<bool> open_{false};
};

}  // namespace

double timed_median_ms(const std::function<void(int)>& fn, const EventTiming& t) {
  // Events belong to the device current when they are made; a rank's device need not be current.
  cuda::DeviceGuard guard(t.device);
  const cudaStream_t s = cuda::stream(t.device);
  const int sets = std::max(1, t.sets);
  for (int i = 0; i < t.warmup; ++i) fn(i % sets);
  const cuda::Events ev(2 * static_cast<size_t>(t.reps));
  auto timed_run = [&](int r) {
    LN_CUDA_CHECK(cudaEventRecord(ev[2 * static_cast<size_t>(r)], s));
    fn(r % sets);
    LN_CUDA_CHECK(cudaEventRecord(ev[2 * static_cast<size_t>(r) + 1], s));
  };
  if (t.gated) {
    for (int first = 0; first < t.reps; first += kRunsPerGate) {
      StreamGate gate(s);
      for (int r = first; r < std::min(t.reps, first + kRunsPerGate); ++r) timed_run(r);
      gate.open();
      LN_CUDA_CHECK(cudaStreamSynchronize(s));
    }
  } else {
    for (int r = 0; r < t.reps; ++r) timed_run(r);
    LN_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  std::vector<double> ms;
  for (int r = 0; r < t.reps; ++r) {
    float e = 0.0f;
    LN_CUDA_CHECK(cudaEventElapsedTime(&e, ev[2 * static_cast<size_t>(r)], ev[2 * static_cast<size_t>(r) + 1]));
    ms.push_back(e);
  }
  return median(ms);
}
#endif

}  // namespace longnet::tools
