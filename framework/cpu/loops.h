#pragma once
// Strided loops shared by the CPU kernels: iterate a shape with several operands, each given by
// its element strides (0 on broadcast dims), in parallel over rows.
#include <array>
#include <cstdint>

#include <omp.h>

#include "framework/core/error.h"
#include "framework/core/shape.h"

namespace longnet::cpu {

/// Elements below which a loop stays on one thread (thread start-up costs more).
inline constexpr int64_t kParallelGrain = 32768;

/// Calls f(i) for i in [0, n), split over OpenMP threads when n is large.
template <class F>
void parallel_for(int64_t n, F&& f, int64_t grain = kParallelGrain) {
#pragma omp parallel for schedule(static) if (n >= grain)
  for (int64_t i = 0; i < n; ++i) f(i);
}

/// Calls f(offsets) with the element offset of every operand, for every index of `shape`.
/// Dims that are contiguous for all operands are merged first so the inner loop is long.
template <size_t N, class F>
void for_each_strided(const Shape& shape, const std::array<const int64_t*, N>& strides, F&& f) {
  const int64_t total = numel_of(shape);
  if (total == 0) return;
  // Merge dims (drop size-1 dims, fuse neighbours whose strides chain for every operand).
  std::array<int64_t, 16> sz{};
  std::array<std::array<int64_t, 16>, N> st{};
  int nd = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool fuse = nd > 0;
    for (size_t k = 0; k < N && fuse; ++k) fuse = st[k][nd - 1] == strides[k][d] * shape[d];
    if (fuse) {
      sz[nd - 1] *= shape[d];
      for (size_t k = 0; k < N; ++k) st[k][nd - 1] = strides[k][d];
    } else {
      LN_CHECK(nd < static_cast<int>(sz.size()), "[cpu] at most ", sz.size(),
               " dims of size > 1 are supported, got shape ", shape_str(shape));
      sz[nd] = shape[d];
      for (size_t k = 0; k < N; ++k) st[k][nd] = strides[k][d];
      ++nd;
    }
  }
  if (nd == 0) {  // a single element
    std::array<int64_t, N> off{};
    f(off);
    return;
  }
  const int64_t inner = sz[nd - 1];
  const int64_t rows = total / inner;
  const int64_t grain_rows = std::max<int64_t>(1, kParallelGrain / inner);
#pragma omp parallel for schedule(static) if (rows >= grain_rows && total >= kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> off{};
    int64_t rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t idx = rem % sz[d];
      rem /= sz[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx * st[k][d];
    }
    for (int64_t j = 0; j < inner; ++j) {
      f(off);
      for (size_t k = 0; k < N; ++k) off[k] += st[k][nd - 1];
    }
  }
}

}  // namespace longnet::cpu
