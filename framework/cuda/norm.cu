#include "framework/cuda/norm.h"

#include <algorithm>
#include <memory>

#include "framework/core/storage.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"

namespace longnet::cuda {
namespace {

using rowwise::Group;
using rowwise::Row;

// Per-thread register budget for a cached row: 32 values forward; backward holds x, dy and the
// two parameter-gradient partials, 16 values each over at most 512 threads (8 for f64).
template <class T>
inline constexpr int kBigForward = std::is_same_v<T, double> ? 8 : 32;
template <class T>
inline constexpr int kBigBackward = std::is_same_v<T, double> ? 8 : 16;
constexpr int kForwardThreads = 1024;
constexpr int kBackwardThreads = 512;

template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kForwardThreads, 1)
    norm_forward_kernel(const T* x, const T* weight, const T* bias, T* y, acc_t<T>* mean, acc_t<T>* rstd,
                        int64_t rows, int64_t len, acc_t<T> eps, bool rms) {
  using A = acc_t<T>;
  using G = Group<kWarp>;
  __shared__ A scratch[32];
  const A inv_len = A(1) / static_cast<A>(len);
  for (int64_t r = G::first(); r < rows; r += G::count()) {
    const Row<T, V, K, 1, kWarp> row({x}, r * len, len);
    A mu = 0;
    if (!rms) {
      row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
        for (int e = 0; e < V; ++e) mu += v[0][e];
      });
      mu = G::sum(mu, scratch) * inv_len;
    }
    // Centred second pass over the registers: E[x^2] - E[x]^2 would cancel.
    A ss = 0;
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) ss += (v[0][e] - mu) * (v[0][e] - mu);
    });
    ss = G::sum(ss, scratch);
    const A s = A(1) / rowwise::sqrt_of(ss * inv_len + eps);
    row.emit(y + r * len, [&](int, int64_t p, const auto& v, A(&o)[V]) {
      A w[V], b[V];
      rowwise::load_param<T, V>(weight, p, w, A(1));
      rowwise::load_param<T, V>(bias, p, b, A(0));
#pragma unroll
      for (int e = 0; e < V; ++e) o[e] = (v[0][e] - mu) * s * w[e] + b[e];
    });
    if (G::rank() == 0) {
      if (mean) mean[r] = mu;
      rstd[r] = s;
    }
  }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) with gw = dy * weight (RMSNorm drops the
// mean(gw) term). With K > 0 each thread also sums dy * xhat and dy over its rows for the columns
// it owns (the same columns in every row), and the block writes them as row blockIdx.x of
// part_w / part_b (rows, len -> gridDim.x, len).
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kBackwardThreads, 1)
    norm_backward_kernel(const T* x, const T* weight, const acc_t<T>* mean, const acc_t<T>* rstd, const T* dy,
                         T* dx, acc_t<T>* part_w, acc_t<T>* part_b, int64_t rows, int64_t len, bool rms) {
  using A = acc_t<T>;
  using G = Group<kWarp>;
  constexpr int kSlots = K > 0 ? K : 1;
  __shared__ A scratch[32];
  const A inv_len = A(1) / static_cast<A>(len);
  const bool partials = K > 0 && (part_w || part_b);
  A pw[kSlots][V] = {}, pb[kSlots][V] = {};
  for (int64_t r = G::first(); r < rows; r += G::count()) {
    const Row<T, V, K, 2, kWarp> row({x, dy}, r * len, len);
    const A mu = mean ? mean[r] : A(0), s = rstd[r];
    if (dx) {
      A sum_gw = 0, sum_gwx = 0;
      row.visit([&](int, int64_t p, const auto& v) {
        A w[V];
        rowwise::load_param<T, V>(weight, p, w, A(1));
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const A gw = v[1][e] * w[e];
          sum_gw += gw;
          sum_gwx += gw * (v[0][e] - mu) * s;
        }
      });
      sum_gw = G::sum(sum_gw, scratch);
      sum_gwx = G::sum(sum_gwx, scratch);
      const A a = rms ? A(0) : sum_gw * inv_len, b = sum_gwx * inv_len;
      row.emit(dx + r * len, [&](int, int64_t p, const auto& v, A(&o)[V]) {
        A w[V];
        rowwise::load_param<T, V>(weight, p, w, A(1));
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = s * (v[1][e] * w[e] - a - (v[0][e] - mu) * s * b);
      });
    }
    if (partials) {
      row.visit([&](int k, int64_t, const auto& v) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          pw[k][e] += v[1][e] * (v[0][e] - mu) * s;
          pb[k][e] += v[1][e];
        }
      });
    }
  }
  if constexpr (K > 0) {
    if (!partials) return;
    const int64_t packs = len / V;
    if constexpr (kWarp) {
      // The block's warps own the same columns: add their partials in warp order in shared memory.
      constexpr int kCols = 32 * K * V;
      __shared__ A sum_w[rowwise::kWarpsPerBlock][kCols], sum_b[rowwise::kWarpsPerBlock][kCols];
      const int warp = threadIdx.x / 32;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int p = G::rank() + 32 * k;
        if (p >= packs) continue;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          sum_w[warp][p * V + e] = pw[k][e];
          sum_b[warp][p * V + e] = pb[k][e];
        }
      }
      __syncthreads();
      for (int64_t c = threadIdx.x; c < len; c += blockDim.x) {
        A w = 0, b = 0;
        for (int i = 0; i < rowwise::kWarpsPerBlock; ++i) {
          w += sum_w[i][c];
          b += sum_b[i][c];
        }
        if (part_w) part_w[blockIdx.x * len + c] = w;
        if (part_b) part_b[blockIdx.x * len + c] = b;
      }
    } else {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int64_t p = threadIdx.x + int64_t(k) * blockDim.x;
        if (p >= packs) continue;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if (part_w) part_w[blockIdx.x * len + p * V + e] = pw[k][e];
          if (part_b) part_b[blockIdx.x * len + p * V + e] = pb[k][e];
        }
      }
    }
  }
}

// Column kernels: a (kColTile, kColLanes) block sums a tile of columns over a range of rows,
// each lane a fixed subset, then the lanes in lane order.
constexpr int kColTile = 32;
constexpr int kColLanes = 16;

template <class A>
__device__ __forceinline__ A sum_lanes(A v, A (*smem)[kColTile + 1]) {
  smem[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0) {
    for (int i = 1; i < kColLanes; ++i) v += smem[i][threadIdx.x];
  }
  __syncthreads();
  return v;
}

// Streaming fallback for rows too long to hold: the parameter-gradient partials of rows
// [blockIdx.y * chunk, ...) read from x and dy directly, into row blockIdx.y of part_w / part_b.
template <class T>
__global__ void norm_param_partials_kernel(const T* x, const acc_t<T>* mean, const acc_t<T>* rstd, const T* dy,
                                           acc_t<T>* part_w, acc_t<T>* part_b, int64_t rows, int64_t len,
                                           int64_t chunk) {
  using A = acc_t<T>;
  __shared__ A smem[kColLanes][kColTile + 1];
  const int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk, r1 = std::min(rows, r0 + chunk);
  A w = 0, b = 0;
  if (c < len) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColLanes) {
      const A g = load(dy[r * len + c]);
      const A mu = mean ? mean[r] : A(0);
      w += g * (load(x[r * len + c]) - mu) * rstd[r];
      b += g;
    }
  }
  w = sum_lanes(w, smem);
  b = sum_lanes(b, smem);
  if (threadIdx.y == 0 && c < len) {
    if (part_w) part_w[blockIdx.y * len + c] = w;
    if (part_b) part_b[blockIdx.y * len + c] = b;
  }
}

// out[blockIdx.y, c] = sum of part[g, c] over the rows g of chunk blockIdx.y, in row order per
// lane then lane order.
template <class O, class A>
__global__ void column_sum_kernel(const A* part, O* out, int64_t groups, int64_t len, int64_t chunk) {
  __shared__ A smem[kColLanes][kColTile + 1];
  const int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t g0 = blockIdx.y * chunk, g1 = std::min(groups, g0 + chunk);
  A acc = 0;
  if (c < len) {
    for (int64_t g = g0 + threadIdx.y; g < g1; g += kColLanes) acc += part[g * len + c];
  }
  acc = sum_lanes(acc, smem);
  if (threadIdx.y == 0 && c < len) out[blockIdx.y * len + c] = store<O>(acc);
}

template <class O, class A>
void launch_column_sum(int device, const A* part, O* out, int64_t groups, int64_t len, int64_t chunks) {
  const dim3 grid(static_cast<unsigned>((len + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  column_sum_kernel<O, A><<<grid, dim3(kColTile, kColLanes), 0, stream(device)>>>(part, out, groups, len,
                                                                                 (groups + chunks - 1) / chunks);
  LN_CUDA_CHECK_LAUNCH();
}

// Scratch on the device for the partial sums; freed in stream order once the kernels using it
// are queued.
std::unique_ptr<Storage> scratch_for(int device, size_t bytes) {
  return std::make_unique<Storage>(bytes, Device::cuda(device));
}

// out (len) = column sums of part (groups, len). Many partial rows are first summed in chunks of
// kChunkRows by parallel blocks, so no thread walks thousands of rows alone.
template <class T>
void sum_partials(int device, const acc_t<T>* part, void* out, int64_t groups, int64_t len) {
  constexpr int64_t kChunkRows = 64;
  if (!out) return;
  if (groups <= 4 * kChunkRows) {
    launch_column_sum(device, part, static_cast<T*>(out), groups, len, 1);
    return;
  }
  const int64_t chunks = (groups + kChunkRows - 1) / kChunkRows;
  const auto mid = scratch_for(device, static_cast<size_t>(chunks * len) * sizeof(acc_t<T>));
  auto* m = static_cast<acc_t<T>*>(mid->data());
  launch_column_sum(device, part, m, groups, len, chunks);
  launch_column_sum(device, static_cast<const acc_t<T>*>(m), static_cast<T*>(out), chunks, len, 1);
}

}  // namespace

void norm_forward(int device, const cpu::NormParams& p) {
  if (p.rows == 0) return;
  DeviceGuard guard(device);
  rowwise::dispatch_types(p.dtype, p.rms ? "rms_norm" : "layer_norm", [&]<class T>() {
    using A = acc_t<T>;
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.y) &&
                     rowwise::aligned_or_null(p.weight) && rowwise::aligned_or_null(p.bias);
    const rowwise::RowConfig c = rowwise::plan_rows(p.rows, p.len, vec, kBigForward<T>, kForwardThreads);
    rowwise::dispatch_rows<T, kBigForward<T>>(c, [&]<int V, int K, bool kWarp>() {
      norm_forward_kernel<T, V, K, kWarp><<<c.blocks, c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.x), static_cast<const T*>(p.weight), static_cast<const T*>(p.bias),
          static_cast<T*>(p.y), static_cast<A*>(p.mean), static_cast<A*>(p.rstd), p.rows, p.len,
          static_cast<A>(p.eps), p.rms);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void norm_backward(int device, const cpu::NormBackwardParams& p) {
  if (!p.dx && !p.dweight && !p.dbias) return;
  DeviceGuard guard(device);
  rowwise::dispatch_types(p.dtype, p.rms ? "rms_norm_backward" : "layer_norm_backward", [&]<class T>() {
    using A = acc_t<T>;
    if (p.rows == 0) {  // no rows: the parameter gradients are sums of nothing
      for (void* out : {p.dweight, p.dbias}) {
        if (out) LN_CUDA_CHECK(cudaMemsetAsync(out, 0, p.len * sizeof(T), stream(device)));
      }
      return;
    }
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.dy) &&
                     rowwise::aligned_or_null(p.dx) && rowwise::aligned_or_null(p.weight);
    rowwise::RowConfig c = rowwise::plan_rows(p.rows, p.len, vec, kBigBackward<T>, kBackwardThreads);
    const bool params = p.dweight || p.dbias;
    // Cached rows: one partial row per block. Enough blocks to keep the memory system busy (at
    // most what the device holds at once), but about 16 rows or more per block, so that the
    // partials stay small next to x and dy.
    if (c.values > 0 && params) {
      const int64_t sms = properties(device).multiProcessorCount;
      const int64_t resident = sms * std::max(1, properties(device).maxThreadsPerMultiProcessor / c.threads);
      const int64_t wanted = std::max<int64_t>(2 * sms, (p.rows + 15) / 16);
      c.blocks = static_cast<unsigned>(std::min({int64_t(c.blocks), resident, wanted}));
    }
    // Streaming rows: the partials come from the column kernel in row chunks.
    const int64_t chunks = c.values > 0 ? 0 : std::clamp<int64_t>((p.rows + 255) / 256, 1, 128);
    const int64_t groups = c.values > 0 ? c.blocks : chunks;
    std::unique_ptr<Storage> part;
    A* part_w = nullptr;
    A* part_b = nullptr;
    if (params) {
      part = scratch_for(device, 2 * static_cast<size_t>(groups * p.len) * sizeof(A));
      part_w = p.dweight ? static_cast<A*>(part->data()) : nullptr;
      part_b = p.dbias ? static_cast<A*>(part->data()) + groups * p.len : nullptr;
    }
    const auto* x = static_cast<const T*>(p.x);
    const auto* dy = static_cast<const T*>(p.dy);
    const auto* mean = static_cast<const A*>(p.mean);
    const auto* rstd = static_cast<const A*>(p.rstd);
    if (c.values > 0 || p.dx) {
      rowwise::dispatch_rows<T, kBigBackward<T>>(c, [&]<int V, int K, bool kWarp>() {
        norm_backward_kernel<T, V, K, kWarp><<<c.blocks, c.threads, 0, stream(device)>>>(
            x, static_cast<const T*>(p.weight), mean, rstd, dy, static_cast<T*>(p.dx), part_w, part_b, p.rows,
            p.len, p.rms);
      });
      LN_CUDA_CHECK_LAUNCH();
    }
    if (!params) return;
    if (c.values == 0) {
      const dim3 grid(static_cast<unsigned>((p.len + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      norm_param_partials_kernel<T><<<grid, dim3(kColTile, kColLanes), 0, stream(device)>>>(
          x, mean, rstd, dy, part_w, part_b, p.rows, p.len, (p.rows + chunks - 1) / chunks);
      LN_CUDA_CHECK_LAUNCH();
    }
    sum_partials<T>(device, part_w, p.dweight, groups, p.len);
    sum_partials<T>(device, part_b, p.dbias, groups, p.len);
  });
}

}  // namespace longnet::cuda
