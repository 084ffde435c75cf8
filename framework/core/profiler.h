#pragma once
// Where a step's time goes, by named region: a benchmark opens a Profiler, the framework's ops and
// the autograd engine mark their work with ProfileScopes, and the Profiler reports the exclusive
// device time of each name. Without an open Profiler a scope costs one thread-local read.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "framework/core/device.h"

namespace longnet {

/// One name's share of a profile.
struct ProfileEntry {
  std::string name;
  int64_t calls = 0;  // scopes of this name opened
  double ms = 0.0;    // exclusive: inside a scope of this name and not inside a scope nested in it
};

/// Times the ProfileScopes opened on the constructing thread while it lives, on one device: on a
/// GPU with CUDA events queued on the framework's stream (so the time is that of the kernels the
/// scope queued, whenever the GPU runs them), on the CPU with the wall clock. Each interval
/// between two scope boundaries goes to the innermost open scope; time outside every scope is
/// reported as "(outside scopes)". A scope opened inside another is reported as "inner in outer",
/// named after the outermost open scope: the same op in a forward and in a backward node (or in
/// a checkpoint's recomputation) are two entries. One Profiler per thread at a time.
class Profiler {
 public:
  explicit Profiler(Device device);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  /// Waits for the device and returns every name's entry, largest time first. Ends the profile:
  /// scopes opened afterwards are not recorded.
  std::vector<ProfileEntry> finish();

  /// (Used by ProfileScope.) Marks the start of a scope named `name`.
  void open(std::string_view name);
  /// (Used by ProfileScope.) Marks the end of the innermost open scope.
  void close();
  /// The Profiler recording on this thread, or null.
  static Profiler* active();

 private:
  // A boundary: when it happened, and which name owned the interval that it ends (-1: none).
  struct Mark {
    int owner = -1;
    std::chrono::steady_clock::time_point at{};  // CPU
  };
  void mark();
  int id_of(std::string_view name);

  struct Events;  // the CUDA events of the marks, on GPU profiles
  Device device_;
  bool finished_ = false;
  std::vector<Mark> marks_;
  std::unique_ptr<Events> events_;
  std::vector<int> stack_;  // ids of the open scopes, innermost last
  std::string outermost_;   // the base name of stack_.front()
  std::vector<std::string> names_;
  std::vector<int64_t> calls_;
  std::map<std::string, int, std::less<>> ids_;
};

/// Marks the work done during its lifetime as `name` in this thread's Profiler, if one is open.
class ProfileScope {
 public:
  explicit ProfileScope(std::string_view name) : profiler_(Profiler::active()) {
    if (profiler_ != nullptr) profiler_->open(name);
  }
  ~ProfileScope() {
    if (profiler_ != nullptr && profiler_ == Profiler::active()) profiler_->close();
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  Profiler* profiler_;
};

}  // namespace longnet
