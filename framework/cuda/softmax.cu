#include "framework/cuda/softmax.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"

namespace longnet::cuda {
namespace {

using rowwise::Group;
using rowwise::Row;

// Per-thread register budget for a held row: 32 values of one input, 16 of each of two inputs
// (8 for f64, whose values take two registers).
template <class T>
inline constexpr int kBigForward = std::is_same_v<T, double> ? 8 : 32;
template <class T>
inline constexpr int kBigBackward = std::is_same_v<T, double> ? 8 : 16;
constexpr int kMaxThreads = 1024;

template <int V, int K, bool kWarp>
inline constexpr int kBlockLimit = rowwise::max_block_threads(kWarp, K * V, kMaxThreads);
template <bool kWarp>
inline constexpr int kMinBlocks = rowwise::min_resident_blocks(kWarp);

// Per row: the max (one reduction), then the sum of exp(x - max) (another), then the output. A
// held row keeps exp(x - max) in place of x for softmax, so each element costs one exponential;
// not in warp groups of 32-bit values, which then spill (64 registers a thread).
// An all -inf row sums to 0 here (ExpMinus takes its max as 0) and is filled at the end: its
// branch comes after the reductions, which every group of the block must reach.
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kBlockLimit<V, K, kWarp>, kMinBlocks<kWarp>)
    softmax_kernel(const T* x, T* y, int64_t rows, int64_t len, int group_threads, bool log_out) {
  using A = acc_t<T>;
  constexpr bool kKeepExp = K > 0 && (!kWarp || sizeof(T) == 2);
  const Group<kWarp> g(group_threads);
  __shared__ typename rowwise::Reducer<A, 1, kWarp>::Scratch scratch;
  rowwise::Reducer<A, 1, kWarp> reduce(scratch);
  rowwise::for_each_row<T, V, K, 1>(g, {x}, rows, len, rowwise::FetchNothing{}, [&](int64_t r, auto& row, auto) {
    A m = rowwise::minus_inf<A>();
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) m = rowwise::nan_max(m, v[0][e]);
    });
    m = reduce.max(g, m);
    const rowwise::ExpMinus<A> ex(m);
    const bool masked = m == rowwise::minus_inf<A>();
    T* out = y + r * len;
    A s = 0;
    // Two whole paths: a branch inside one pass would keep x and exp(x - max) both live.
    if (log_out) {
      row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
        for (int e = 0; e < V; ++e) s += ex(v[0][e]);
      });
      s = reduce.sum(g, s);
      const A lse = masked ? m : m + rowwise::log_of(s);  // masked: -inf everywhere
      row.emit(out, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = masked ? lse : v[0][e] - lse;
      });
    } else {
      if constexpr (kKeepExp) {
        row.update([&](int, int64_t, auto& v) {
#pragma unroll
          for (int e = 0; e < V; ++e) s += v[0][e] = ex(v[0][e]);
        });
      } else {
        row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
          for (int e = 0; e < V; ++e) s += ex(v[0][e]);
        });
      }
      s = reduce.sum(g, s);
      const A inv = masked ? A(0) : A(1) / s;  // masked: 0 everywhere
      row.emit(out, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = (kKeepExp ? v[0][e] : ex(v[0][e])) * inv;
      });
    }
  });
}

// dx = y * (dy - sum(dy * y)) for softmax, dy - exp(y) * sum(dy) for log-softmax.
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kBlockLimit<V, K, kWarp>, kMinBlocks<kWarp>)
    softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t len, int group_threads,
                            bool log_out) {
  using A = acc_t<T>;
  const Group<kWarp> g(group_threads);
  __shared__ typename rowwise::Reducer<A, 1, kWarp>::Scratch scratch;
  rowwise::Reducer<A, 1, kWarp> reduce(scratch);
  rowwise::for_each_row<T, V, K, 2>(g, {y, dy}, rows, len, rowwise::FetchNothing{}, [&](int64_t r, auto& row, auto) {
    A acc = 0;
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) acc += log_out ? v[1][e] : v[1][e] * v[0][e];
    });
    acc = reduce.sum(g, acc);
    row.emit(dx + r * len, [&](int, int64_t, const auto& v, A(&o)[V]) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        o[e] = log_out ? v[1][e] - rowwise::exp_of(v[0][e]) * acc : v[0][e] * (v[1][e] - acc);
      }
    });
  });
}

}  // namespace

void softmax_rows(int device, const cpu::SoftmaxParams& p) {
  if (p.rows == 0 || p.len == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, p.log ? "log_softmax" : "softmax", [&]<class T>() {
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.y);
    const rowwise::RowConfig c = rowwise::plan_rows(p.len, vec, kBigForward<T>, kMaxThreads);
    rowwise::dispatch_rows<T, kBigForward<T>>(c, [&]<int V, int K, bool kWarp>() {
      const auto kernel = softmax_kernel<T, V, K, kWarp>;
      kernel<<<rowwise::grid_for_rows(device, kernel, c, p.rows), c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.x), static_cast<T*>(p.y), p.rows, p.len, c.group, p.log);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void softmax_backward_rows(int device, const cpu::SoftmaxBackwardParams& p) {
  if (p.rows == 0 || p.len == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, p.log ? "log_softmax_backward" : "softmax_backward", [&]<class T>() {
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.y) && aligned16(p.dy) && aligned16(p.dx);
    const rowwise::RowConfig c = rowwise::plan_rows(p.len, vec, kBigBackward<T>, kMaxThreads);
    rowwise::dispatch_rows<T, kBigBackward<T>>(c, [&]<int V, int K, bool kWarp>() {
      const auto kernel = softmax_backward_kernel<T, V, K, kWarp>;
      kernel<<<rowwise::grid_for_rows(device, kernel, c, p.rows), c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.y), static_cast<const T*>(p.dy), static_cast<T*>(p.dx), p.rows, p.len, c.group,
          p.log);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
