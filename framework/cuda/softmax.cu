#include "framework/cuda/softmax.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"

namespace longnet::cuda {
namespace {

using rowwise::Group;
using rowwise::Row;

// Per-thread register budget for a cached row: 32 values of one input, 16 of each of two inputs
// (8 for f64, whose values take two registers).
template <class T>
inline constexpr int kBigForward = std::is_same_v<T, double> ? 8 : 32;
template <class T>
inline constexpr int kBigBackward = std::is_same_v<T, double> ? 8 : 16;
constexpr int kMaxThreads = 1024;

template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kMaxThreads, 1)
    softmax_kernel(const T* x, T* y, int64_t rows, int64_t len, bool log_out) {
  using A = acc_t<T>;
  using G = Group<kWarp>;
  __shared__ A scratch[32];
  for (int64_t r = G::first(); r < rows; r += G::count()) {
    const Row<T, V, K, 1, kWarp> row({x}, r * len, len);
    T* out = y + r * len;
    A m = rowwise::minus_inf<A>();
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) m = rowwise::nan_max(m, v[0][e]);
    });
    m = G::max(m, scratch);
    if (m == rowwise::minus_inf<A>()) {
      // Every entry masked: the distribution is empty, not undefined.
      const A fill = log_out ? m : A(0);
      row.emit(out, [&](int, int64_t, const auto&, A(&o)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = fill;
      });
      continue;
    }
    A s = 0;
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) s += rowwise::exp_of(v[0][e] - m);
    });
    s = G::sum(s, scratch);
    if (log_out) {
      const A lse = m + rowwise::log_of(s);
      row.emit(out, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = v[0][e] - lse;
      });
    } else {
      const A inv = A(1) / s;
      row.emit(out, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = rowwise::exp_of(v[0][e] - m) * inv;
      });
    }
  }
}

// dx = y * (dy - sum(dy * y)) for softmax, dy - exp(y) * sum(dy) for log-softmax.
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kMaxThreads, 1)
    softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t len, bool log_out) {
  using A = acc_t<T>;
  using G = Group<kWarp>;
  __shared__ A scratch[32];
  for (int64_t r = G::first(); r < rows; r += G::count()) {
    const Row<T, V, K, 2, kWarp> row({y, dy}, r * len, len);
    A acc = 0;
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) acc += log_out ? v[1][e] : v[1][e] * v[0][e];
    });
    acc = G::sum(acc, scratch);
    row.emit(dx + r * len, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        o[e] = log_out ? v[1][e] - rowwise::exp_of(v[0][e]) * acc : v[0][e] * (v[1][e] - acc);
      }
    });
  }
}

}  // namespace

void softmax_rows(int device, const cpu::SoftmaxParams& p) {
  if (p.rows == 0 || p.len == 0) return;
  DeviceGuard guard(device);
  rowwise::dispatch_types(p.dtype, p.log ? "log_softmax" : "softmax", [&]<class T>() {
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.y);
    const rowwise::RowConfig c = rowwise::plan_rows(p.rows, p.len, vec, kBigForward<T>, kMaxThreads);
    rowwise::dispatch_rows<T, kBigForward<T>>(c, [&]<int V, int K, bool kWarp>() {
      softmax_kernel<T, V, K, kWarp><<<c.blocks, c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.x), static_cast<T*>(p.y), p.rows, p.len, p.log);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void softmax_backward_rows(int device, const cpu::SoftmaxBackwardParams& p) {
  if (p.rows == 0 || p.len == 0) return;
  DeviceGuard guard(device);
  rowwise::dispatch_types(p.dtype, p.log ? "log_softmax_backward" : "softmax_backward", [&]<class T>() {
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.y) && aligned16(p.dy) && aligned16(p.dx);
    const rowwise::RowConfig c = rowwise::plan_rows(p.rows, p.len, vec, kBigBackward<T>, kMaxThreads);
    rowwise::dispatch_rows<T, kBigBackward<T>>(c, [&]<int V, int K, bool kWarp>() {
      softmax_backward_kernel<T, V, K, kWarp><<<c.blocks, c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.y), static_cast<const T*>(p.dy), static_cast<T*>(p.dx), p.rows, p.len, p.log);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
