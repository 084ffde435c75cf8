#pragma once
// Helpers shared by the files of `bench dist` (not part of its interface).
#include <cstdint>
#include <string>
#include <vector>

#include "framework/core/device.h"
#include "framework/dist/communicator.h"

namespace longnet::tools::dist_bench {

inline constexpr double kMiB = 1024.0 * 1024.0;

/// Elementwise maximum of `values` over the ranks of `comm`, through an f64 tensor on `device`.
std::vector<double> max_over_ranks(dist::Communicator& comm, Device device, const std::vector<double>& values);

/// The device's name ("NVIDIA H200", or "CPU").
std::string device_name(Device device);


/// Waits for the device, then returns the memory freed so far to it (CUDA: trims the pool, which
/// otherwise keeps every freed block), so that memory other libraries allocate directly is there.
void release_cached_memory(Device device);

/// printf into a std::string.
std::string printf_string(const char* format, ...) __attribute__((format(printf, 1, 2)));

/// "1 MiB", "256 KiB", "1 GiB", or bytes.
std::string size_label(int64_t bytes);

}  // namespace longnet::tools::dist_bench
