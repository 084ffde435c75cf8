#include "framework/cuda/norm.h"

#include <algorithm>
#include <memory>

#include "framework/core/storage.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"
#include "framework/ops/elementwise_math.h"

namespace longnet::cuda {
namespace {

using rowwise::Group;
using rowwise::Row;

// Per-thread register budget for a held row: 32 values forward (8 for f64); backward holds x,
// dy, the rows loaded ahead, the weights and the two parameter-gradient sums: 16 values each of
// 16-bit floats, 8 of f32 and f64 (more spill).
template <class T>
inline constexpr int kBigForward = std::is_same_v<T, double> ? 8 : 32;
template <class T>
inline constexpr int kBigBackward = sizeof(T) == 2 ? 16 : 8;
constexpr int kForwardThreads = 1024;
constexpr int kBackwardThreads = 512;
// Most rows a backward block group loads ahead: four while a thread holds one 16-byte pack of
// each input, two for 16 bytes held as scalars (four spill), else one (two spill).
template <class T, int V, int K>
inline constexpr int kMostAhead = K * V * sizeof(T) > 16 ? 1 : (K == 1 ? 4 : 2);
// Rows of at least this many values load two rows ahead even where four fit: four took the
// 16-byte instance from 106 to 126 registers and (65536, 1024) from 77% to 75% of copy, while
// shorter rows (768: 58% to 67%) gained from the extra bytes in flight.
constexpr int64_t kLongRow = 1024;
template <class T, int V, int K>
constexpr int backward_ahead(int64_t len) {
  return kMostAhead<T, V, K> == 4 && len >= kLongRow ? 2 : kMostAhead<T, V, K>;
}

// Programmatic dependent launch (sm_90): a kernel launched as a dependent (launch_column_sum)
// may start before the kernel ahead of it in the stream ends, once every block of that one has
// called allow_dependent_launch or exited; it calls wait_for_previous_grid, which returns once
// that kernel has finished and its writes are visible, before it reads anything. Both are no-ops
// for kernels launched normally.
__device__ __forceinline__ void wait_for_previous_grid() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_launch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// gelu(h) = h * Phi(h) (erf form) and its slope Phi(h) + h * phi(h), sharing Phi: the erf is most
// of a fused norm's arithmetic, enough to make it compute-bound when taken more than once or twice.
template <class A>
struct GeluAt {
  A value, slope;
};
template <class A>
__device__ __forceinline__ GeluAt<A> gelu_at(A h) {
  using std::erf, std::exp;
  const A cdf = A(0.5) * (A(1) + erf(h * A(math::kInvSqrt2)));
  return {h * cdf, cdf + h * A(math::kInvSqrt2Pi) * exp(A(-0.5) * h * h)};
}

// The value a row normalises at x: x itself, or gelu(x) when the norm takes a pre-activation (a
// warp-uniform flag: one kernel serves both).
template <class A>
__device__ __forceinline__ A normed(A x, bool gelu) {
  return gelu ? gelu_at(x).value : x;
}

template <int V, int K, bool kWarp, int kMaxThreads>
inline constexpr int kBlockLimit = rowwise::max_block_threads(kWarp, K * V, kMaxThreads);
template <bool kWarp>
inline constexpr int kMinBlocks = rowwise::min_resident_blocks(kWarp);
// The backward's warp groups hold x, dy and the parameter-gradient sums: 16 blocks of 4 warps a
// multiprocessor at most (128 registers a thread), not the 32 warps of the other row kernels.
template <bool kWarp>
inline constexpr int kMinBackwardBlocks = kWarp ? 4 : 1;

template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kBlockLimit<V, K, kWarp, kForwardThreads>, kMinBlocks<kWarp>)
    norm_forward_kernel(const T* x, const T* weight, const T* bias, T* y, acc_t<T>* mean, acc_t<T>* rstd,
                        int64_t rows, int64_t len, int group_threads, acc_t<T> eps, bool rms, bool gelu) {
  using A = acc_t<T>;
  const Group<kWarp> g(group_threads);
  __shared__ typename rowwise::Reducer<A, 1, kWarp>::Scratch scratch;
  rowwise::Reducer<A, 1, kWarp> reduce(scratch);
  const A inv_len = A(1) / static_cast<A>(len);
  rowwise::for_each_row<T, V, K, 1>(g, {x}, rows, len, rowwise::FetchNothing{}, [&](int64_t r, auto& row, auto) {
    // A held row takes its activation once, in place; a streamed one on each of its three reads.
    bool act = gelu;
    if constexpr (K > 0) {
      if (gelu) {
        row.update([](int, int64_t, auto& v) {
#pragma unroll
          for (int e = 0; e < V; ++e) v[0][e] = gelu_at(v[0][e]).value;
        });
      }
      act = false;
    }
    A mu = 0;
    if (!rms) {
      row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
        for (int e = 0; e < V; ++e) mu += normed(v[0][e], act);
      });
      mu = reduce.sum(g, mu) * inv_len;
    }
    // Centred second pass over the registers: E[x^2] - E[x]^2 would cancel.
    A ss = 0;
    row.visit([&](int, int64_t, const auto& v) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A d = normed(v[0][e], act) - mu;
        ss += d * d;
      }
    });
    ss = reduce.sum(g, ss);
    const A s = A(1) / rowwise::sqrt_of(ss * inv_len + eps);
    row.emit(y + r * len, [&](int, int64_t p, const auto& v, A(&o)[V]) {
      A w[V], b[V];
      rowwise::load_param<T, V>(weight, p, w, A(1));
      rowwise::load_param<T, V>(bias, p, b, A(0));
#pragma unroll
      for (int e = 0; e < V; ++e) o[e] = (normed(v[0][e], act) - mu) * s * w[e] + b[e];
    });
    if (g.rank == 0) {
      if (mean) mean[r] = mu;
      rstd[r] = s;
    }
  });
}

// A row's saved statistics.
template <class A>
struct Stats {
  A mu, s;
};

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) with gw = dy * weight and
// xhat = (x - mean) * rstd (RMSNorm drops the mean(gw) term). With K > 0 every thread also sums
// dy * xhat and dy over its group's rows for the columns it owns (the same in every row); the
// block adds its groups' sums in group order in shared memory (2 * len values, dynamic) and
// writes them as row blockIdx.x of part (gridDim.x, 2 * len): dweight partials, then dbias.
template <class T, int V, int K, bool kWarp, int kAhead>
__global__ void __launch_bounds__(kBlockLimit<V, K, kWarp, kBackwardThreads>, kMinBackwardBlocks<kWarp>)
    norm_backward_kernel(const T* x, const T* weight, const acc_t<T>* mean, const acc_t<T>* rstd, const T* dy,
                         T* dx, const T* dx_add, acc_t<T>* part, int64_t rows, int64_t len, int group_threads,
                         bool rms, bool gelu) {
  using A = acc_t<T>;
  constexpr int kSlots = K > 0 ? K : 1;
  const Group<kWarp> g(group_threads);
  __shared__ typename rowwise::Reducer<A, 2, kWarp>::Scratch scratch;
  rowwise::Reducer<A, 2, kWarp> reduce(scratch);
  const A inv_len = A(1) / static_cast<A>(len);
  const int64_t packs = len / V;
  const bool partials = K > 0 && part != nullptr;
  // A held row's columns are the same in every row: their weights are loaded once.
  A held_w[kSlots][V];
  if constexpr (K > 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int p = g.rank + k * g.size;
      if (p < packs) rowwise::load_param<T, V>(weight, p, held_w[k], A(1));
    }
  }
  const auto weights = [&](int k, int64_t p, A(&w)[V]) {
    if constexpr (K > 0) {
#pragma unroll
      for (int e = 0; e < V; ++e) w[e] = held_w[k][e];
    } else {
      rowwise::load_param<T, V>(weight, p, w, A(1));
    }
  };
  A pw[kSlots][V] = {}, pb[kSlots][V] = {};
  const auto fetch = [&](int64_t r) { return Stats<A>{mean ? mean[r] : A(0), rstd[r]}; };
  rowwise::for_each_row<T, V, K, 2, kAhead>(g, {x, dy}, rows, len, fetch, [&](int64_t r, auto& row, Stats<A> st) {
    if (dx) {
      // Sums of gw and gw * (x - mean), in one reduction.
      A sums[2] = {A(0), A(0)};
      row.visit([&](int k, int64_t p, const auto& v) {
        A w[V];
        weights(k, p, w);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const A gw = v[1][e] * w[e];
          sums[0] += gw;
          sums[1] += gw * (normed(v[0][e], gelu) - st.mu);
        }
      });
      reduce(g, sums, rowwise::SumOp{}, A(0));
      const A a = rms ? A(0) : sums[0] * inv_len, b = sums[1] * st.s * inv_len;
      row.emit(dx + r * len, [&](int k, int64_t p, const auto& v, A(&o)[V]) {
        A w[V];
        weights(k, p, w);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          // The activation again, with its slope from the same erf (the row keeps x, not gelu(x)).
          const GeluAt<A> ga = gelu ? gelu_at(v[0][e]) : GeluAt<A>{v[0][e], A(1)};
          const A xhat = (ga.value - st.mu) * st.s;
          o[e] = st.s * (v[1][e] * w[e] - a - xhat * b) * ga.slope;
          if constexpr (K > 0) {
            if (partials) {
              pw[k][e] += v[1][e] * xhat;
              pb[k][e] += v[1][e];
            }
          }
        }
        if (dx_add) {
          // The input's gradient so far (a residual branch's): one rounding for the sum.
          A so_far[V];
          rowwise::load_param<T, V>(dx_add + r * len, p, so_far, A(0));
#pragma unroll
          for (int e = 0; e < V; ++e) o[e] += so_far[e];
        }
      });
    } else if (partials) {
      row.visit([&](int k, int64_t, const auto& v) {
        if constexpr (K > 0) {
#pragma unroll
          for (int e = 0; e < V; ++e) {
            pw[k][e] += v[1][e] * (normed(v[0][e], gelu) - st.mu) * st.s;
            pb[k][e] += v[1][e];
          }
        }
      });
    }
  });
  // The column sum that follows may be launched now (it waits for this grid's end to read).
  allow_dependent_launch();
  if constexpr (K > 0) {
    if (!partials) return;
    A* out = part + int64_t(blockIdx.x) * 2 * len;
    // f(c, w, b) for each column c the thread owns, with its sums.
    const auto owned = [&](auto&& f) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int64_t p = g.rank + k * g.size;
        if (p >= packs) continue;
#pragma unroll
        for (int e = 0; e < V; ++e) f(p * V + e, pw[k][e], pb[k][e]);
      }
    };
    if (g.per_block == 1) {
      owned([&](int64_t c, A w, A b) {
        out[c] = w;
        out[len + c] = b;
      });
      return;
    }
    // The block's groups own the same columns: add their sums in group order.
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    A* sum = reinterpret_cast<A*>(shared_bytes);
    for (int i = 0; i < g.per_block; ++i) {
      if (g.index == i) {
        owned([&](int64_t c, A w, A b) {
          sum[c] = i == 0 ? w : sum[c] + w;
          sum[len + c] = i == 0 ? b : sum[len + c] + b;
        });
      }
      __syncthreads();
    }
    for (int64_t c = threadIdx.x; c < 2 * len; c += blockDim.x) out[c] = sum[c];
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
// [blockIdx.y * chunk, ...) read from x and dy directly, into row blockIdx.y of part
// (chunks, 2 * len).
template <class T>
__global__ void norm_param_partials_kernel(const T* x, const acc_t<T>* mean, const acc_t<T>* rstd, const T* dy,
                                           acc_t<T>* part, int64_t rows, int64_t len, int64_t chunk, bool gelu) {
  using A = acc_t<T>;
  __shared__ A smem[kColLanes][kColTile + 1];
  const int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk, r1 = std::min(rows, r0 + chunk);
  A w = 0, b = 0;
  if (c < len) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColLanes) {
      const A g = load(dy[r * len + c]);
      const A mu = mean ? mean[r] : A(0);
      w += g * (normed(load(x[r * len + c]), gelu) - mu) * rstd[r];
      b += g;
    }
  }
  w = sum_lanes(w, smem);
  b = sum_lanes(b, smem);
  if (threadIdx.y == 0 && c < len) {
    part[blockIdx.y * 2 * len + c] = w;
    part[blockIdx.y * 2 * len + len + c] = b;
  }
}

// Sums of the rows [blockIdx.y * chunk, ...) of part (groups, cols), in row order per lane then
// lane order. Column c of the sums goes to lo[blockIdx.y * split + c] below `split`, else to
// hi[blockIdx.y * (cols - split) + c - split]; a null destination is skipped.
template <class O, class A>
__global__ void column_sum_kernel(const A* part, int64_t groups, int64_t cols, int64_t chunk, O* lo, O* hi,
                                  int64_t split) {
  wait_for_previous_grid();
  __shared__ A smem[kColLanes][kColTile + 1];
  const int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t g0 = blockIdx.y * chunk, g1 = std::min(groups, g0 + chunk);
  A acc = 0;
  if (c < cols) {
#pragma unroll 4
    for (int64_t g = g0 + threadIdx.y; g < g1; g += kColLanes) acc += part[g * cols + c];
  }
  acc = sum_lanes(acc, smem);
  if (threadIdx.y != 0 || c >= cols) return;
  if (c < split) {
    if (lo) lo[blockIdx.y * split + c] = store<O>(acc);
  } else if (hi) {
    hi[blockIdx.y * (cols - split) + c - split] = store<O>(acc);
  }
}

template <class O, class A>
void launch_column_sum(int device, const A* part, int64_t groups, int64_t cols, int64_t chunks, O* lo, O* hi,
                       int64_t split) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>((cols + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  config.blockDim = dim3(kColTile, kColLanes);
  config.stream = stream(device);
  // A dependent launch: the launch latency (several us next to a 40 us backward) overlaps the
  // end of the kernel that writes `part`.
  cudaLaunchAttribute dependent{};
  dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent.val.programmaticStreamSerializationAllowed = 1;
  if (properties(device).major >= 9) {
    config.attrs = &dependent;
    config.numAttrs = 1;
  }
  LN_CUDA_CHECK(cudaLaunchKernelEx(&config, column_sum_kernel<O, A>, part, groups, cols,
                                   (groups + chunks - 1) / chunks, lo, hi, split));
  LN_CUDA_CHECK_LAUNCH();
}

// Scratch on the device for the partial sums; freed in stream order once the kernels using it
// are queued.
std::unique_ptr<Storage> scratch_for(int device, size_t bytes) {
  return std::make_unique<Storage>(bytes, Device::cuda(device));
}

// dweight (len) and dbias (len) = column sums of part (groups, 2 * len). Up to kOneStage partial
// rows take one kernel (each lane adds at most kOneStage / kColLanes of them); more are first
// summed in chunks of kChunkRows by parallel blocks, so no thread walks thousands of rows alone.
template <class T>
void sum_partials(int device, const acc_t<T>* part, void* dweight, void* dbias, int64_t groups, int64_t len) {
  constexpr int64_t kOneStage = 512;
  constexpr int64_t kChunkRows = 64;
  auto* dw = static_cast<T*>(dweight);
  auto* db = static_cast<T*>(dbias);
  if (groups <= kOneStage) return launch_column_sum(device, part, groups, 2 * len, 1, dw, db, len);
  const int64_t chunks = (groups + kChunkRows - 1) / kChunkRows;
  const auto mid = scratch_for(device, static_cast<size_t>(chunks * 2 * len) * sizeof(acc_t<T>));
  auto* m = static_cast<acc_t<T>*>(mid->data());
  launch_column_sum(device, part, groups, 2 * len, chunks, m, static_cast<acc_t<T>*>(nullptr), 2 * len);
  launch_column_sum(device, static_cast<const acc_t<T>*>(m), chunks, 2 * len, 1, dw, db, len);
}

// Most shared memory a backward block may use to add its groups' parameter-gradient sums.
constexpr size_t kMaxSumBytes = 32 * 1024;

// Bytes of loads a multiprocessor should keep in flight for the memory to run near its peak
// (Little's law: about 4 TB/s of reads times the latency under load, over 132 multiprocessors;
// 32 KB gave 77% of copy, so the latency under load is nearer 1.3 us than 1 us).
constexpr int64_t kInFlightBytes = 48 * 1024;

// Block groups a backward block holds when it sums parameter gradients (one partial row per
// block): the most, within kBackwardThreads and kMaxSumBytes, that still keep kInFlightBytes of
// rows in flight per multiprocessor; else the most that keep the most groups resident.
// Registers decide: a block of many groups may fit fewer times than its groups would alone.
int groups_per_block(const void* kernel, int group, size_t sum_bytes, int64_t ahead_bytes) {
  int best = 1, most = 0, fast = 0;
  for (int per = 1; per * group <= kBackwardThreads && per <= rowwise::kMaxBlockGroups; ++per) {
    if (per > 1 && sum_bytes > kMaxSumBytes) break;
    const int resident = per * rowwise::blocks_per_multiprocessor(kernel, per * group, per > 1 ? sum_bytes : 0);
    if (resident >= most) most = resident, best = per;
    if (resident * ahead_bytes >= kInFlightBytes) fast = per;
  }
  return fast > 0 ? fast : best;
}

}  // namespace

void norm_forward(int device, const cpu::NormParams& p) {
  if (p.rows == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, p.rms ? "rms_norm" : "layer_norm", [&]<class T>() {
    using A = acc_t<T>;
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.y) &&
                     rowwise::aligned_or_null(p.weight) && rowwise::aligned_or_null(p.bias);
    const rowwise::RowConfig c = rowwise::plan_rows(p.len, vec, kBigForward<T>, kForwardThreads);
    rowwise::dispatch_rows<T, kBigForward<T>>(c, [&]<int V, int K, bool kWarp>() {
      const auto kernel = norm_forward_kernel<T, V, K, kWarp>;
      kernel<<<rowwise::grid_for_rows(device, kernel, c, p.rows), c.threads, 0, stream(device)>>>(
          static_cast<const T*>(p.x), static_cast<const T*>(p.weight), static_cast<const T*>(p.bias),
          static_cast<T*>(p.y), static_cast<A*>(p.mean), static_cast<A*>(p.rstd), p.rows, p.len, c.group,
          static_cast<A>(p.eps), p.rms, p.gelu);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void norm_backward(int device, const cpu::NormBackwardParams& p) {
  if (!p.dx && !p.dweight && !p.dbias) return;
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, p.rms ? "rms_norm_backward" : "layer_norm_backward", [&]<class T>() {
    using A = acc_t<T>;
    if (p.rows == 0) {  // no rows: the parameter gradients are sums of nothing
      for (void* out : {p.dweight, p.dbias}) {
        if (out) LN_CUDA_CHECK(cudaMemsetAsync(out, 0, p.len * sizeof(T), stream(device)));
      }
      return;
    }
    const bool vec = p.len % rowwise::kVecWidth<T> == 0 && aligned16(p.x) && aligned16(p.dy) &&
                     rowwise::aligned_or_null(p.dx) && rowwise::aligned_or_null(p.dx_add) &&
                     rowwise::aligned_or_null(p.weight);
    const rowwise::RowConfig plan = rowwise::plan_rows(p.len, vec, kBigBackward<T>, kBackwardThreads);
    const bool params = p.dweight || p.dbias;
    const bool held = plan.values > 0;
    const auto* x = static_cast<const T*>(p.x);
    const auto* dy = static_cast<const T*>(p.dy);
    const auto* mean = static_cast<const A*>(p.mean);
    const auto* rstd = static_cast<const A*>(p.rstd);
    // Streaming rows: the partials come from the column kernel in row chunks.
    const int64_t chunks = held ? 0 : std::clamp<int64_t>((p.rows + 255) / 256, 1, 128);
    const size_t sum_bytes = 2 * static_cast<size_t>(p.len) * sizeof(A);
    std::unique_ptr<Storage> part;
    int64_t groups = chunks;
    if (held || p.dx) {
      const auto launch = [&]<int V, int K, bool kWarp, int kAhead>() {
        const auto kernel = norm_backward_kernel<T, V, K, kWarp, kAhead>;
        // Held rows: one partial row per block, the block's grid no larger than what runs at
        // once (each block loops over many rows), so that the partials stay small next to x
        // and dy.
        rowwise::RowConfig c = plan;
        if (K > 0 && params && !kWarp) {
          const int64_t ahead_bytes = kAhead * 2 * p.len * static_cast<int64_t>(sizeof(T));
          c.threads =
              c.group * groups_per_block(reinterpret_cast<const void*>(kernel), c.group, sum_bytes, ahead_bytes);
        }
        const size_t smem = K > 0 && params && c.threads > c.group ? sum_bytes : 0;
        const unsigned blocks = rowwise::grid_for_rows(device, kernel, c, p.rows, smem);
        if (K > 0 && params) {
          groups = blocks;
          part = scratch_for(device, static_cast<size_t>(groups) * sum_bytes);
        }
        kernel<<<blocks, c.threads, smem, stream(device)>>>(
            x, static_cast<const T*>(p.weight), mean, rstd, dy, static_cast<T*>(p.dx),
            static_cast<const T*>(p.dx_add), part ? static_cast<A*>(part->data()) : nullptr, p.rows, p.len, c.group, p.rms, p.gelu);
      };
      rowwise::dispatch_rows<T, kBigBackward<T>>(plan, [&]<int V, int K, bool kWarp>() {
        // Warp groups load nothing ahead: one instance; block groups one for each count
        // backward_ahead may give.
        constexpr int kMost = kWarp ? 1 : kMostAhead<T, V, K>;
        if constexpr (kMost == 4) {
          if (backward_ahead<T, V, K>(p.len) == 2) return launch.template operator()<V, K, kWarp, 2>();
        }
        launch.template operator()<V, K, kWarp, kMost>();
      });
      LN_CUDA_CHECK_LAUNCH();
    }
    if (!params) return;
    if (!held) {
      part = scratch_for(device, static_cast<size_t>(chunks) * sum_bytes);
      const dim3 grid(static_cast<unsigned>((p.len + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      norm_param_partials_kernel<T><<<grid, dim3(kColTile, kColLanes), 0, stream(device)>>>(
          x, mean, rstd, dy, static_cast<A*>(part->data()), p.rows, p.len, (p.rows + chunks - 1) / chunks, p.gelu);
      LN_CUDA_CHECK_LAUNCH();
    }
    sum_partials<T>(device, static_cast<const A*>(part->data()), p.dweight, p.dbias, groups, p.len);
  });
}

}  // namespace longnet::cuda
