#include "framework/cpu/softmax.h"

#include <cmath>
#include <limits>

#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

int64_t row_grain(int64_t len) { return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, len)); }

// Row maximum that keeps a NaN (std::max would skip it and let a NaN row pass for a masked one).
template <class T>
T row_max(const T* x, int64_t len) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < len; ++j) m = (x[j] > m || x[j] != x[j]) && m == m ? x[j] : m;
  return m;
}

}  // namespace

void softmax_rows(const SoftmaxParams& p) {
  dispatch_float(p.dtype, "softmax", [&]<class T>() {
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    const int64_t len = p.len;
    parallel_for(
        p.rows,
        [&](int64_t r) {
          const T* xr = x + r * len;
          T* yr = y + r * len;
          const T m = row_max(xr, len);
          if (m == -std::numeric_limits<T>::infinity()) {
            // Every entry masked: the distribution is empty, not undefined.
            const T fill = p.log ? m : T(0);
            for (int64_t j = 0; j < len; ++j) yr[j] = fill;
            return;
          }
          double sum = 0.0;
          if (p.log) {
            for (int64_t j = 0; j < len; ++j) sum += static_cast<double>(std::exp(xr[j] - m));
            const T lse = m + static_cast<T>(std::log(sum));
            for (int64_t j = 0; j < len; ++j) yr[j] = xr[j] - lse;
          } else {
            for (int64_t j = 0; j < len; ++j) {
              yr[j] = std::exp(xr[j] - m);
              sum += static_cast<double>(yr[j]);
            }
            const T inv = static_cast<T>(1.0 / sum);
            for (int64_t j = 0; j < len; ++j) yr[j] *= inv;
          }
        },
        row_grain(len));
  });
}

void softmax_backward_rows(const SoftmaxBackwardParams& p) {
  dispatch_float(p.dtype, "softmax_backward", [&]<class T>() {
    const T* y = static_cast<const T*>(p.y);
    const T* dy = static_cast<const T*>(p.dy);
    T* dx = static_cast<T*>(p.dx);
    const int64_t len = p.len;
    parallel_for(
        p.rows,
        [&](int64_t r) {
          const T* yr = y + r * len;
          const T* gr = dy + r * len;
          T* dr = dx + r * len;
          double acc = 0.0;
          if (p.log) {
            for (int64_t j = 0; j < len; ++j) acc += static_cast<double>(gr[j]);
            const T s = static_cast<T>(acc);
            for (int64_t j = 0; j < len; ++j) dr[j] = gr[j] - std::exp(yr[j]) * s;
          } else {
            for (int64_t j = 0; j < len; ++j) acc += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
            const T dot = static_cast<T>(acc);
            for (int64_t j = 0; j < len; ++j) dr[j] = yr[j] * (gr[j] - dot);
          }
        },
        row_grain(len));
  });
}

}  // namespace longnet::cpu
