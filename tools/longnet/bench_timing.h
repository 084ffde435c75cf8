#pragma once
// Timing shared by the benchmarks: medians of CUDA-event intervals on the framework's stream for
// the GPU, of wall-clock intervals for the CPU.
#include <functional>
#include <vector>

#include "framework/core/device.h"

namespace longnet::tools {

/// How the runs of one case are timed.
struct EventTiming {
  int device = 0;
  int reps = 20;      // timed runs; their median is reported
  int warmup = 3;     // untimed runs before them
  int sets = 1;       // run r is given r % sets: buffer sets, so that no run finds its operands in L2
  bool gated = true;  // queue a batch of runs in full before the first starts (see timed_median_ms)
};

/// Waits for the work queued on `device` (nothing to wait for on the CPU).
void synchronize_device(Device device);

/// The median of `values` (the mean of the middle two for an even count); `values` non-empty.
double median(std::vector<double> values);

/// Median milliseconds of `reps` calls of fn after `warmup` untimed ones on `device`: CUDA-event
/// intervals (timed_median_ms with one buffer set, gated or not) on a GPU, wall-clock intervals of
/// each call on the CPU (where `gated` means nothing).
double median_ms(const std::function<void()>& fn, Device device, int reps, int warmup, bool gated = false);

#ifdef LONGNET_WITH_CUDA
/// Median milliseconds of fn(set), each run between two CUDA events on the framework's stream of
/// t.device. Gated, a batch of runs is queued behind a host gate that holds the stream until the
/// batch is in: host-side launch cost cannot appear as gaps inside the intervals (as in training,
/// where the host runs ahead of the GPU). Functions that wait for the GPU themselves (a read-back)
/// must run ungated: each run then starts as soon as fn issues it.
double timed_median_ms(const std::function<void(int)>& fn, const EventTiming& t);
#endif

}  // namespace longnet::tools
