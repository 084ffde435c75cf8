#include "framework/cpu/index.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <vector>

#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

// Lines (all coordinates off `dim`) are handled in blocks of consecutive lines; inside a block
// the loop runs along `dim` outermost so that neighbouring lines (usually neighbouring memory)
// are touched together. Blocks are independent, so they run in parallel; blocks shrink when there
// are few lines so that every thread gets some. No two lines write the same element, so the
// block size never changes a result.
constexpr int64_t kMaxLineBlock = 64;

// Calls f(offsets, j) for every line of the loop and every j along `dim`, where offsets are the
// line's starting element offsets of dst, src and index.
template <class F>
void for_each_line(const IndexParams& p, F&& f) {
  const int64_t nd = static_cast<int64_t>(p.shape.size());
  const int64_t len = p.shape[static_cast<size_t>(p.dim)];
  Shape line_shape;
  std::array<Strides, 3> st;
  const std::array<const int64_t*, 3> all = {p.dst.strides, p.src.strides, p.index.strides};
  for (int64_t d = 0; d < nd; ++d) {
    if (d == p.dim) continue;
    line_shape.push_back(p.shape[static_cast<size_t>(d)]);
    for (size_t k = 0; k < 3; ++k) st[k].push_back(all[k][d]);
  }
  const int64_t lines = numel_of(line_shape);
  if (lines == 0 || len == 0) return;
  const int64_t block = std::clamp<int64_t>(lines / (4 * omp_get_max_threads()), 1, kMaxLineBlock);
  const int64_t blocks = (lines + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / (block * len));
  const int64_t ld = static_cast<int64_t>(line_shape.size());
  parallel_for(
      blocks,
      [&](int64_t b) {
        const int64_t first = b * block, count = std::min(block, lines - first);
        // Offsets of the first line from its coordinates, then an odometer for the rest.
        std::vector<int64_t> coord(static_cast<size_t>(ld));
        std::array<int64_t, 3> off{};
        int64_t rem = first;
        for (int64_t d = ld - 1; d >= 0; --d) {
          const size_t u = static_cast<size_t>(d);
          coord[u] = rem % line_shape[u];
          rem /= line_shape[u];
          for (size_t k = 0; k < 3; ++k) off[k] += coord[u] * st[k][u];
        }
        std::array<std::array<int64_t, 3>, kMaxLineBlock> offs;
        for (int64_t l = 0; l < count; ++l) {
          offs[static_cast<size_t>(l)] = off;
          for (int64_t d = ld - 1; d >= 0; --d) {
            const size_t u = static_cast<size_t>(d);
            for (size_t k = 0; k < 3; ++k) off[k] += st[k][u];
            if (++coord[u] < line_shape[u]) break;
            for (size_t k = 0; k < 3; ++k) off[k] -= coord[u] * st[k][u];
            coord[u] = 0;
          }
        }
        for (int64_t j = 0; j < len; ++j) {
          for (int64_t l = 0; l < count; ++l) f(offs[static_cast<size_t>(l)], j);
        }
      },
      grain);
}

}  // namespace

void gather(const IndexParams& p) {
  const int64_t ds = p.dst.strides[p.dim], ss = p.src.strides[p.dim], is = p.index.strides[p.dim];
  dispatch_index(p.index.dtype, "gather", [&]<class I>() {
    dispatch_all(p.dst.dtype, "gather", [&]<class T>() {
      T* dst = static_cast<T*>(p.dst.data);
      const T* src = static_cast<const T*>(p.src.data);
      const I* idx = static_cast<const I*>(p.index.data);
      for_each_line(p, [&](const std::array<int64_t, 3>& o, int64_t j) {
        dst[o[0] + j * ds] = src[o[1] + static_cast<int64_t>(idx[o[2] + j * is]) * ss];
      });
    });
  });
}

void scatter_add(const IndexParams& p) {
  const int64_t ds = p.dst.strides[p.dim], ss = p.src.strides[p.dim], is = p.index.strides[p.dim];
  dispatch_index(p.index.dtype, "scatter_add", [&]<class I>() {
    dispatch_float(p.dst.dtype, "scatter_add", [&]<class T>() {
      T* dst = static_cast<T*>(p.dst.data);
      const T* src = static_cast<const T*>(p.src.data);
      const I* idx = static_cast<const I*>(p.index.data);
      for_each_line(p, [&](const std::array<int64_t, 3>& o, int64_t j) {
        dst[o[0] + static_cast<int64_t>(idx[o[2] + j * is]) * ds] += src[o[1] + j * ss];
      });
    });
  });
}

std::optional<int64_t> first_out_of_range(const void* ids, DType dtype, int64_t n, int64_t limit) {
  return dispatch_index(dtype, "index", [&]<class I>() -> std::optional<int64_t> {
    const I* v = static_cast<const I*>(ids);
    for (int64_t i = 0; i < n; ++i) {
      if (v[i] < 0 || static_cast<int64_t>(v[i]) >= limit) return static_cast<int64_t>(v[i]);
    }
    return std::nullopt;
  });
}

}  // namespace longnet::cpu
