#include "framework/core/profiler.h"

#include <algorithm>

#include "framework/core/error.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#endif

namespace longnet {
namespace {

thread_local Profiler* t_active = nullptr;

constexpr const char* kOutside = "(outside scopes)";

}  // namespace

#ifdef LONGNET_WITH_CUDA
// Events are created in chunks as marks need them and reused by nothing else: a profile of a
// training step holds a few thousand.
struct Profiler::Events {
  static constexpr size_t kChunk = 1024;
  int device = 0;
  std::vector<cudaEvent_t> events;

  ~Events() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
  }
  void record(size_t i) {
    if (i >= events.size()) {
      const cuda::DeviceGuard guard(device);
      for (size_t k = 0; k < kChunk; ++k) {
        cudaEvent_t e = nullptr;
        LN_CUDA_CHECK(cudaEventCreate(&e));
        events.push_back(e);
      }
    }
    LN_CUDA_CHECK(cudaEventRecord(events[i], cuda::stream(device)));
  }
  double ms_between(size_t a, size_t b) const {
    float ms = 0.0f;
    LN_CUDA_CHECK(cudaEventElapsedTime(&ms, events[a], events[b]));
    return ms;
  }
};
#else
struct Profiler::Events {};
#endif

Profiler::Profiler(Device device) : device_(device) {
  LN_CHECK(t_active == nullptr, "[profiler] a Profiler is already recording on this thread");
#ifdef LONGNET_WITH_CUDA
  if (device_.is_cuda()) {
    events_ = std::make_unique<Events>();
    events_->device = device_.index;
  }
#endif
  t_active = this;
  mark();
}

Profiler::~Profiler() {
  if (t_active == this) t_active = nullptr;
}

Profiler* Profiler::active() { return t_active; }

int Profiler::id_of(std::string_view name) {
  const auto it = ids_.find(name);
  if (it != ids_.end()) return it->second;
  const int id = static_cast<int>(names_.size());
  names_.emplace_back(name);
  calls_.push_back(0);
  ids_.emplace(std::string(name), id);
  return id;
}

void Profiler::mark() {
  Mark m;
  m.owner = stack_.empty() ? -1 : stack_.back();
#ifdef LONGNET_WITH_CUDA
  if (events_) {
    events_->record(marks_.size());
    marks_.push_back(m);
    return;
  }
#endif
  m.at = std::chrono::steady_clock::now();
  marks_.push_back(m);
}

void Profiler::open(std::string_view name) {
  int id = 0;
  if (stack_.empty()) {
    outermost_ = name;
    id = id_of(name);
  } else {
    std::string key(name);
    key += " in ";
    key += outermost_;
    id = id_of(key);
  }
  mark();
  stack_.push_back(id);
  ++calls_[static_cast<size_t>(id)];
}

void Profiler::close() {
  LN_CHECK(!stack_.empty(), "[profiler] a scope closed that was never opened");
  mark();
  stack_.pop_back();
}

std::vector<ProfileEntry> Profiler::finish() {
  LN_CHECK(!finished_, "[profiler] finish() was already called");
  mark();
  finished_ = true;
  if (t_active == this) t_active = nullptr;
#ifdef LONGNET_WITH_CUDA
  if (events_) LN_CUDA_CHECK(cudaEventSynchronize(events_->events[marks_.size() - 1]));
#endif
  std::vector<double> ms(names_.size() + 1, 0.0);  // the last slot: outside every scope
  for (size_t i = 1; i < marks_.size(); ++i) {
    double dt = 0.0;
#ifdef LONGNET_WITH_CUDA
    if (events_) dt = events_->ms_between(i - 1, i);
#endif
    if (!events_) dt = std::chrono::duration<double, std::milli>(marks_[i].at - marks_[i - 1].at).count();
    const int owner = marks_[i].owner;
    ms[owner < 0 ? names_.size() : static_cast<size_t>(owner)] += dt;
  }
  std::vector<ProfileEntry> out;
  for (size_t i = 0; i < names_.size(); ++i) out.push_back({names_[i], calls_[i], ms[i]});
  out.push_back({kOutside, 0, ms.back()});
  std::stable_sort(out.begin(), out.end(), [](const ProfileEntry& a, const ProfileEntry& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace longnet
