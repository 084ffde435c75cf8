#pragma once
// Row kernels over a contiguous (rows, len) block. Each row belongs to a group of threads: one
// warp (short rows) or a run of warps of a block; a block holds one group or several. A row that
// fits in registers is read once and every later pass (reductions, the output) works on the
// registers, and each group loads its next row before it works on the current one, so that the
// loads stay in flight through the reductions and the stores; the grid then holds only as many
// blocks as the device runs at once, each looping over rows. Rows too long for registers are
// streamed from memory on every pass instead. Elements move in 16-byte packs when the row length
// and all pointers allow it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "framework/core/error.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda::rowwise {

/// V elements of T moved as one access.
template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

/// Elements of T in one 16-byte access.
template <class T>
inline constexpr int kVecWidth = 16 / static_cast<int>(sizeof(T));

/// Groups (warps) a block holds in warp-per-row mode.
inline constexpr int kWarpsPerBlock = 4;

template <class A>
__device__ __forceinline__ A minus_inf() {
  return static_cast<A>(-INFINITY);
}

/// Maximum that lets a NaN win (fmax would drop it and let a NaN row pass for a masked one); one
/// instruction in f32.
template <class A>
__device__ __forceinline__ A nan_max(A a, A b) {
  if constexpr (std::is_same_v<A, float>) {
    float d;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
    return d;
  } else {
    return a > b || a != a ? a : b;
  }
}

template <class A>
__device__ __forceinline__ A exp_of(A v) {
  if constexpr (std::is_same_v<A, float>) {
    return expf(v);
  } else {
    return exp(v);
  }
}

template <class A>
__device__ __forceinline__ A log_of(A v) {
  if constexpr (std::is_same_v<A, float>) {
    return logf(v);
  } else {
    return log(v);
  }
}

template <class A>
__device__ __forceinline__ A sqrt_of(A v) {
  if constexpr (std::is_same_v<A, float>) {
    return sqrtf(v);
  } else {
    return sqrt(v);
  }
}

/// log2(e), for exp(v) = 2^(v * log2(e)).
inline constexpr double kLog2e = 1.4426950408889634;

/// exp(v - c) for one c and many v. In f32 one FFMA and one MUFU.EX2 (relative error about
/// 2^-22, results under 2^-126 flushed to 0; a rounding error in c * log2(e) scales every result
/// alike, which normalisation cancels); exp in f64. c = -inf (the max of an all -inf row) counts
/// as 0, so that the row's -inf entries give 0, not NaN.
template <class A>
struct ExpMinus {
  A c, cl;
  __device__ __forceinline__ explicit ExpMinus(A shift)
      : c(shift == minus_inf<A>() ? A(0) : shift), cl(c * static_cast<A>(kLog2e)) {}
  __device__ __forceinline__ A operator()(A v) const {
    if constexpr (std::is_same_v<A, float>) {
      float r;
      asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(fmaf(v, static_cast<float>(kLog2e), -cl)));
      return r;
    } else {
      return exp(v - c);
    }
  }
};

struct SumOp {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return a + b;
  }
};
struct MaxOp {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return nan_max(a, b);
  }
};
struct MinOp {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return b < a ? b : a;
  }
};

/// Reduction over a warp; every lane gets the same result (a fixed butterfly, so deterministic).
template <class A, class Op>
__device__ __forceinline__ A warp_reduce(A v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Reduction over the block; `scratch` holds 32 values in shared memory. Every thread gets the
/// result. All threads of the block must call it.
template <class A, class Op>
__device__ __forceinline__ A block_reduce(A v, A* scratch, Op op, A identity) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, op);
  __syncthreads();  // scratch may still be read by the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>((blockDim.x + 31) / 32) ? scratch[lane] : identity;
  return warp_reduce(v, op);
}

/// The threads that share a row: one warp (kWarp) or `size` consecutive threads of a block (a
/// multiple of 32); a block holds per_block groups (at most kMaxBlockGroups of block groups).
/// Group `index` of block b takes row b * per_block + index, then every count() rows after it.
template <bool kWarp>
struct Group {
  int size, index, rank, per_block;
  __device__ __forceinline__ explicit Group(int threads)
      : size(kWarp ? 32 : threads),
        index(static_cast<int>(threadIdx.x) / size),
        rank(static_cast<int>(threadIdx.x) % size),
        per_block(static_cast<int>(blockDim.x) / size) {}
  __device__ __forceinline__ int64_t first() const { return int64_t(blockIdx.x) * per_block + index; }
  __device__ __forceinline__ int64_t count() const { return int64_t(gridDim.x) * per_block; }
};

/// Named barriers a block has besides barrier 0 (__syncthreads): block groups of one block.
inline constexpr int kMaxBlockGroups = 15;

/// Barrier of the `size` threads (whole warps) of block group `index` alone: named barrier
/// index + 1, so that a group waits for its own warps, never for a slower group of its block.
__device__ __forceinline__ void group_sync(int index, int size) {
  asm volatile("bar.sync %0, %1;" ::"r"(index + 1), "r"(size) : "memory");
}

/// Reductions of N values at once over the threads of a group; every thread of the group gets
/// the results, in a fixed order (deterministic). Warp groups only shuffle. Block groups meet at
/// one barrier of their own per call: each warp leaves its results in shared memory, then reads
/// its group's. Two slots alternate between calls: a slot is written again two calls later, after
/// the barrier of the call in between, which every reader of the slot (all in the group) has
/// passed. Every thread of a group makes the same sequence of calls.
template <class A, int N, bool kWarp>
class Reducer {
 public:
  struct Scratch {
    A v[2][32][N];
  };
  __device__ __forceinline__ explicit Reducer(Scratch& s) : s_(s) {}

  template <class Op>
  __device__ __forceinline__ void operator()(const Group<kWarp>& g, A (&v)[N], Op op, A identity) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = warp_reduce(v[i], op);
    if constexpr (!kWarp) {
      const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = g.size / 32;
      if (lane == 0) {
#pragma unroll
        for (int i = 0; i < N; ++i) s_.v[slot_][warp][i] = v[i];
      }
      group_sync(g.index, g.size);
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] = warp_reduce(lane < warps ? s_.v[slot_][g.index * warps + lane][i] : identity, op);
      slot_ ^= 1;
    }
  }
  __device__ __forceinline__ A sum(const Group<kWarp>& g, A v) {
    static_assert(N == 1, "one value a call");
    A a[1] = {v};
    (*this)(g, a, SumOp{}, A(0));
    return a[0];
  }
  __device__ __forceinline__ A max(const Group<kWarp>& g, A v) {
    static_assert(N == 1, "one value a call");
    A a[1] = {v};
    (*this)(g, a, MaxOp{}, minus_inf<A>());
    return a[0];
  }

 private:
  Scratch& s_;
  int slot_ = 0;
};

/// Pack p of a (len) parameter vector such as a norm's weight; `dflt` everywhere when w is null.
template <class T, int V>
__device__ __forceinline__ void load_param(const T* w, int64_t p, acc_t<T> (&out)[V], acc_t<T> dflt) {
  if (!w) {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = dflt;
    return;
  }
  const Vec<T, V> raw = reinterpret_cast<const Vec<T, V>*>(w)[p];
#pragma unroll
  for (int e = 0; e < V; ++e) out[e] = load(raw.v[e]);
}

/// V arithmetic values as one pack of T; 16-bit floats are converted two at a time (one
/// instruction a pair).
template <class T, int V, class A>
__device__ __forceinline__ Vec<T, V> to_pack(const A (&o)[V]) {
  Vec<T, V> raw;
  if constexpr (std::is_same_v<T, BFloat16> && V % 2 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 2) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(o[e], o[e + 1]);
      raw.v[e].bits = __bfloat16_as_ushort(h.x);
      raw.v[e + 1].bits = __bfloat16_as_ushort(h.y);
    }
  } else if constexpr (std::is_same_v<T, Half> && V % 2 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 2) {
      const __half2 h = __floats2half2_rn(o[e], o[e + 1]);
      raw.v[e].bits = __half_as_ushort(h.x);
      raw.v[e + 1].bits = __half_as_ushort(h.y);
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) raw.v[e] = store<T>(o[e]);
  }
  return raw;
}

/// An unsigned integer (vector) of kBytes bytes: how loaded packs are kept until they are used.
template <int kBytes>
struct Word;
template <>
struct Word<2> {
  using type = unsigned short;
};
template <>
struct Word<4> {
  using type = unsigned int;
};
template <>
struct Word<8> {
  using type = uint2;
};
template <>
struct Word<16> {
  using type = uint4;
};

/// The bits of a pack of V elements of T, as loaded.
template <class T, int V>
using PackBits = typename Word<static_cast<int>(sizeof(T)) * V>::type;

/// A pack's bits in arithmetic values (bf16 pairs straight from their 32-bit word: a shift and a
/// mask).
template <class T, int V>
__device__ __forceinline__ void unpack(const PackBits<T, V>& bits, acc_t<T> (&out)[V]) {
  if constexpr (std::is_same_v<T, BFloat16> && V % 2 == 0) {
    uint32_t w[V / 2];
    __builtin_memcpy(w, &bits, sizeof(w));
#pragma unroll
    for (int j = 0; j < V / 2; ++j) {
      out[2 * j] = __uint_as_float(w[j] << 16);
      out[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  } else {
    Vec<T, V> pk;
    __builtin_memcpy(&pk, &bits, sizeof(pk));
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = load(pk.v[e]);
  }
}

/// A thread's packs of one row of NIn same-shaped inputs as loaded, not yet converted: slot k is
/// pack rank + k * size of the row; slots past the row's end are not loaded. Kept as whole words,
/// so that a load (predicated on the slot) writes its registers directly: packs kept as 16-bit
/// fields are spliced into registers next to the load, which then waits for the data there.
template <class T, int V, int K, int NIn>
struct RawRow {
  using W = PackBits<T, V>;
  W v[K][NIn];

  __device__ __forceinline__ void load(const T* const (&in)[NIn], int64_t offset, int64_t packs, int rank, int size) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int p = rank + k * size;
      if (p < packs) {
#pragma unroll
        for (int i = 0; i < NIn; ++i) v[k][i] = reinterpret_cast<const W*>(in[i] + offset)[p];
      }
    }
  }
};

/// One row of NIn same-shaped inputs as a thread of its group sees it, in packs of V elements
/// (len is a multiple of V). The thread owns packs rank, rank + size, ... With K > 0 it holds
/// them in registers (slot k is pack rank + k * size), converted from a RawRow; with K == 0 each
/// pass reads the row from memory again. A row with no packs is empty: visits do nothing.
template <class T, int V, int K, int NIn, bool kWarp>
class Row {
 public:
  using A = acc_t<T>;
  /// Values of pack p: v[i][e] is element p * V + e of input i.
  using Values = A[NIn][V];

  /// A held row (K > 0).
  __device__ __forceinline__ Row(const Group<kWarp>& g, const RawRow<T, V, (K > 0 ? K : 1), NIn>& raw, int64_t packs)
      : rank_(g.rank), size_(g.size), packs_(packs) {
    static_assert(K > 0, "streamed rows are built from pointers");
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int i = 0; i < NIn; ++i) {
        unpack<T, V>(raw.v[k][i], cache_[k][i]);
      }
    }
  }
  /// A streamed row (K == 0): input i starts at in[i] + offset.
  __device__ __forceinline__ Row(const Group<kWarp>& g, const T* const (&in)[NIn], int64_t offset, int64_t packs)
      : rank_(g.rank), size_(g.size), packs_(packs) {
    static_assert(K == 0, "held rows are built from loaded packs");
#pragma unroll
    for (int i = 0; i < NIn; ++i) in_[i] = in[i] + offset;
  }

  /// Calls f(k, p, v) for each pack p of the thread; k is its register slot (0 when streaming).
  template <class F>
  __device__ __forceinline__ void visit(F&& f) const {
    if constexpr (K > 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (pack_of(k) < packs_) f(k, int64_t(pack_of(k)), cache_[k]);
      }
    } else {
      for (int64_t p = rank_; p < packs_; p += size_) {
        Values v;
#pragma unroll
        for (int i = 0; i < NIn; ++i) {
          const Vec<T, V> raw = reinterpret_cast<const Vec<T, V>*>(in_[i])[p];
#pragma unroll
          for (int e = 0; e < V; ++e) v[i][e] = load(raw.v[e]);
        }
        f(0, p, v);
      }
    }
  }

  /// Calls f(k, p, v) for each pack p of a held row with the thread's values, which f may
  /// overwrite (later visits see the new values).
  template <class F>
  __device__ __forceinline__ void update(F&& f) {
    static_assert(K > 0, "only held rows can be updated");
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (pack_of(k) < packs_) f(k, int64_t(pack_of(k)), cache_[k]);
    }
  }

  /// Writes out[p * V + e] = o[e] for each pack p of the thread, where f(k, p, v, o) fills o;
  /// `out` points at the row's first element.
  template <class F>
  __device__ __forceinline__ void emit(T* out, F&& f) const {
    visit([&](int k, int64_t p, const Values& v) {
      A o[V];
      f(k, p, v, o);
      reinterpret_cast<Vec<T, V>*>(out)[p] = to_pack<T, V>(o);
    });
  }

 private:
  // 32-bit: held rows are short, and 64-bit offsets kept live across passes would cost registers.
  __device__ __forceinline__ int pack_of(int k) const { return rank_ + k * size_; }

  int rank_, size_;
  int64_t packs_;
  const T* in_[NIn];
  A cache_[K > 0 ? K : 1][NIn][V];
};

/// Runs body(r, row, extra) for each row r of group g, with extra = fetch(r): a few values of the
/// row kept elsewhere (saved statistics). Block groups holding rows (K > 0) load their next
/// kAhead rows (1 to 4) and extras before body runs on the current one, so that those loads are
/// in flight through body's reductions and stores (warp groups, 64 registers a thread, have none
/// to spare for it; the many independent warps of a multiprocessor cover their latency). Every
/// group runs through its own rows: body's reductions meet at barriers of the group alone, so the
/// groups of a block drift apart freely (a group waiting on a late load holds up only itself).
template <class T, int V, int K, int NIn, int kAhead = 1, bool kWarp, class Fetch, class Body>
__device__ __forceinline__ void for_each_row(const Group<kWarp>& g, const T* const (&in)[NIn], int64_t rows,
                                             int64_t len, Fetch&& fetch, Body&& body) {
  static_assert(kAhead >= 1 && kAhead <= 4, "one to four rows ahead");
  using Extra = decltype(fetch(int64_t{0}));
  const int64_t packs = len / V, step = g.count();
  int64_t r = g.first();
  if constexpr (K > 0 && !kWarp) {
    // Buffer b holds rows r + b * step, ... (every kAhead-th row); the loop is unrolled kAhead
    // times so that each buffer keeps its registers (a copy would wait for the loads).
    RawRow<T, V, K, NIn> buf[kAhead];
    Extra extra[kAhead] = {};
#pragma unroll
    for (int b = 0; b < kAhead; ++b) {
      const int64_t q = r + b * step;
      if (q < rows) {
        buf[b].load(in, q * len, packs, g.rank, g.size);
        extra[b] = fetch(q);
      }
    }
    // One row from buffer b; false past the group's last row.
    const auto one = [&](int b) {
      if (r >= rows) return false;
      Row<T, V, K, NIn, kWarp> row(g, buf[b], packs);
      const Extra here = extra[b];
      const int64_t q = r + kAhead * step;
      if (q < rows) {
        buf[b].load(in, q * len, packs, g.rank, g.size);
        extra[b] = fetch(q);
      }
      body(r, row, here);
      r += step;
      return true;
    };
    // One step per buffer, each with its index a constant, stopping at the first row past the end.
    const auto steps = [&]<int... b>(std::integer_sequence<int, b...>) { return (one(b) && ...); };
    while (steps(std::make_integer_sequence<int, kAhead>{})) {
    }
  } else {
    for (; r < rows; r += step) {
      if constexpr (K > 0) {
        RawRow<T, V, K, NIn> raw;
        raw.load(in, r * len, packs, g.rank, g.size);
        Row<T, V, K, NIn, kWarp> row(g, raw, packs);
        body(r, row, fetch(r));
      } else {
        Row<T, V, K, NIn, kWarp> row(g, in, r * len, packs);
        body(r, row, fetch(r));
      }
    }
  }
}

/// No per-row extra values.
struct NoExtra {};
struct FetchNothing {
  __device__ __forceinline__ NoExtra operator()(int64_t) const { return {}; }
};

/// How a row kernel is launched for one problem.
struct RowConfig {
  bool vec = false;   // 16-byte packs (else packs of one element)
  int values = 0;     // elements of each input a thread holds in registers; 0 streams the row
  bool warp = false;  // warp groups, kWarpsPerBlock a block
  int group = 0;      // threads of a group
  int threads = 0;    // threads of a block: a whole number of groups
};

/// Per-thread register budget of rows read one element at a time: each element needs its own
/// address and register, so fewer fit than with 16-byte packs (16 spill with two inputs).
inline constexpr int kMaxScalarValues = 8;

/// Block groups hold 8 values a thread up to this many threads; longer rows take `big` values a
/// thread: more loads in flight per thread and fewer warps meeting at each barrier.
inline constexpr int kSmallGroup = 128;

/// Most threads of a block group that holds its row: kernels holding rows are built for this
/// block size, which leaves them up to 128 registers a thread for the row and the next one.
inline constexpr int kMaxHoldThreads = 512;

/// The largest block a row kernel of this shape is launched with (its __launch_bounds__): warp
/// groups kWarpsPerBlock warps, block groups holding rows kMaxHoldThreads, others max_threads.
constexpr int max_block_threads(bool warp, int values_per_thread, int max_threads) {
  if (warp) return 32 * kWarpsPerBlock;
  return values_per_thread > 0 && max_threads > kMaxHoldThreads ? kMaxHoldThreads : max_threads;
}

/// Blocks of a row kernel of this shape that must fit on a multiprocessor at once (the second
/// argument of __launch_bounds__): warp groups at least 8 blocks (32 rows), which holds their
/// registers to 64 a thread.
constexpr int min_resident_blocks(bool warp) { return warp ? 8 : 1; }

/// Chooses the groups of a row kernel: a warp per row while a warp can hold the row (8 values a
/// thread, or `big`); else a block group holding the row with 8 values a thread (rows up to
/// kSmallGroup * 8) or `big` (up to max_block_threads threads); else a block group of
/// max_threads that streams the row. One group a block, kWarpsPerBlock for warps. `vec`: the row
/// length is a multiple of the pack and every pointer is 16-byte aligned.
inline RowConfig plan_rows(int64_t len, bool vec, int big, int max_threads) {
  RowConfig c;
  c.vec = vec;
  if (!vec) big = std::min(big, kMaxScalarValues);
  if (len <= 32 * int64_t(big)) {
    c.warp = true;
    c.values = len <= 32 * 8 ? 8 : big;
    c.group = 32;
    c.threads = 32 * kWarpsPerBlock;
    return c;
  }
  if (len <= int64_t(kSmallGroup) * 8) {
    c.values = 8;
  } else if (len <= int64_t(max_block_threads(false, big, max_threads)) * big) {
    c.values = big;
  }
  c.group = c.values > 0 ? static_cast<int>(((len + c.values - 1) / c.values + 31) / 32 * 32) : max_threads;
  c.threads = c.group;
  return c;
}

/// Grids are capped (kernels loop over rows); far above what a device keeps resident.
inline constexpr int64_t kMaxGrid = int64_t{1} << 20;

/// Blocks of `kernel` that one multiprocessor of the current device runs at once with `threads`
/// threads and `smem` dynamic shared bytes a block (at least 1). Cached: the answer for a kernel
/// never changes, and row ops ask on every call.
inline int blocks_per_multiprocessor(const void* kernel, int threads, size_t smem) {
  struct Key {
    const void* kernel;
    int device, threads;
    size_t smem;
    bool operator==(const Key&) const = default;
  };
  static std::mutex mutex;
  static std::vector<std::pair<Key, int>> cache;
  int device = 0;
  LN_CUDA_CHECK(cudaGetDevice(&device));
  const Key key{kernel, device, threads, smem};
  std::lock_guard<std::mutex> lock(mutex);
  for (const auto& [k, n] : cache) {
    if (k == key) return n;
  }
  int n = 0;
  LN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  n = std::max(n, 1);
  cache.emplace_back(key, n);
  return n;
}

/// Blocks for `rows` rows: one group a row, but no more blocks than `kernel` runs at once on the
/// device at c.threads threads and `smem` dynamic shared bytes a block, so that every block is
/// running from the start and loops over its rows (its next row's loads in flight).
template <class Kernel>
unsigned grid_for_rows(int device, Kernel* kernel, const RowConfig& c, int64_t rows, size_t smem = 0) {
  const int64_t resident = int64_t(blocks_per_multiprocessor(reinterpret_cast<const void*>(kernel), c.threads, smem)) *
                           properties(device).multiProcessorCount;
  const int64_t per_block = c.threads / c.group;
  return static_cast<unsigned>(std::clamp<int64_t>(std::min((rows + per_block - 1) / per_block, resident), 1, kMaxGrid));
}

namespace detail {

template <int V, int kBig, class F>
void dispatch_values(const RowConfig& c, F& f) {
  if (c.values == 0) return f.template operator()<V, 0, false>();
  if (c.values == 8) {
    return c.warp ? f.template operator()<V, 8 / V, true>() : f.template operator()<V, 8 / V, false>();
  }
  if constexpr (kBig != 8) {
    if (c.values == kBig) {
      return c.warp ? f.template operator()<V, kBig / V, true>() : f.template operator()<V, kBig / V, false>();
    }
  }
  LN_FAIL("[cuda] row kernel with ", c.values, " values a thread is not instantiated");
}

}  // namespace detail

/// Calls f.template operator()<V, K, kWarp>() for the configuration c: V elements a pack, K packs
/// a thread in registers (0: streamed). `kBig` is the `big` given to plan_rows.
template <class T, int kBig, class F>
void dispatch_rows(const RowConfig& c, F&& f) {
  static_assert(kBig % kVecWidth<T> == 0 && kBig >= 8, "per-thread counts must be whole packs");
  if (c.vec) {
    detail::dispatch_values<kVecWidth<T>, kBig>(c, f);
  } else {
    detail::dispatch_values<1, std::min(kBig, kMaxScalarValues)>(c, f);
  }
}

/// True when p is 16-byte aligned or null (a missing optional operand).
inline bool aligned_or_null(const void* p) { return p == nullptr || aligned16(p); }

}  // namespace longnet::cuda::rowwise
