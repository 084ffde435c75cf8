#pragma once
// Row kernels over a contiguous (rows, len) block: each row belongs to one warp (short rows) or
// one thread block. A row is read into registers once and every later pass (reductions, the
// output) works on the registers; rows too long for registers are streamed from memory on every
// pass instead. Elements move in 16-byte packs when the row length and all pointers allow it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "framework/core/error.h"
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

/// Rows a block holds in warp-per-row mode.
inline constexpr int kWarpsPerBlock = 4;

template <class A>
__device__ __forceinline__ A minus_inf() {
  return static_cast<A>(-INFINITY);
}

/// Maximum that lets a NaN win (fmax would drop it and let a NaN row pass for a masked one).
template <class A>
__device__ __forceinline__ A nan_max(A a, A b) {
  return a > b || a != a ? a : b;
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

/// The threads that share a row: one warp (kWarp) or the whole block. Rows are dealt to groups
/// round-robin: first(), first() + count(), ...
template <bool kWarp>
struct Group {
  static __device__ __forceinline__ int rank() { return kWarp ? threadIdx.x % 32 : threadIdx.x; }
  static __device__ __forceinline__ int size() { return kWarp ? 32 : blockDim.x; }
  static __device__ __forceinline__ int64_t first() {
    return kWarp ? blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32 : int64_t(blockIdx.x);
  }
  static __device__ __forceinline__ int64_t count() {
    return kWarp ? int64_t(gridDim.x) * (blockDim.x / 32) : int64_t(gridDim.x);
  }
  template <class A>
  static __device__ __forceinline__ A sum(A v, A* scratch) {
    if constexpr (kWarp) {
      return warp_reduce(v, SumOp{});
    } else {
      return block_reduce(v, scratch, SumOp{}, A(0));
    }
  }
  template <class A>
  static __device__ __forceinline__ A max(A v, A* scratch) {
    if constexpr (kWarp) {
      return warp_reduce(v, MaxOp{});
    } else {
      return block_reduce(v, scratch, MaxOp{}, minus_inf<A>());
    }
  }
};

/// Pack p of a (len) parameter vector such as a norm's weight; `dflt` everywhere when p is null.
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

/// One row of NIn same-shaped inputs as its group sees it, in packs of V elements (len is a
/// multiple of V). Thread `rank` owns packs rank, rank + size, ... With K > 0 it holds them in
/// registers (slot k is pack rank + k * size), loaded once at construction; with K == 0 each
/// pass reads the row from memory again.
template <class T, int V, int K, int NIn, bool kWarp>
class Row {
 public:
  using A = acc_t<T>;
  /// Values of pack p: v[i][e] is element p * V + e of input i.
  using Values = A[NIn][V];

  __device__ __forceinline__ Row(const T* const (&in)[NIn], int64_t offset, int64_t len) : packs_(len / V) {
#pragma unroll
    for (int i = 0; i < NIn; ++i) in_[i] = in[i] + offset;
    if constexpr (K > 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (pack_of(k) < packs_) load_pack(pack_of(k), cache_[k]);
      }
    }
  }

  /// Calls f(k, p, v) for each pack p of the thread; k is its register slot (0 when streaming).
  template <class F>
  __device__ __forceinline__ void visit(F&& f) const {
    if constexpr (K > 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (pack_of(k) < packs_) f(k, pack_of(k), cache_[k]);
      }
    } else {
      const int64_t step = Group<kWarp>::size();
      for (int64_t p = Group<kWarp>::rank(); p < packs_; p += step) {
        Values v;
        load_pack(p, v);
        f(0, p, v);
      }
    }
  }

  /// Writes out[p * V + e] = o[e] for each pack p of the thread, where f(k, p, v, o) fills o;
  /// `out` points at the row's first element.
  template <class F>
  __device__ __forceinline__ void emit(T* out, F&& f) const {
    visit([&](int k, int64_t p, const Values& v) {
      A o[V];
      f(k, p, v, o);
      Vec<T, V> raw;
#pragma unroll
      for (int e = 0; e < V; ++e) raw.v[e] = store<T>(o[e]);
      reinterpret_cast<Vec<T, V>*>(out)[p] = raw;
    });
  }

 private:
  // 32-bit: cached rows are short, and 32 64-bit offsets kept live across passes would spill.
  static __device__ __forceinline__ int pack_of(int k) { return Group<kWarp>::rank() + k * Group<kWarp>::size(); }
  __device__ __forceinline__ void load_pack(int64_t p, Values& dst) const {
#pragma unroll
    for (int i = 0; i < NIn; ++i) {
      const Vec<T, V> raw = reinterpret_cast<const Vec<T, V>*>(in_[i])[p];
#pragma unroll
      for (int e = 0; e < V; ++e) dst[i][e] = load(raw.v[e]);
    }
  }

  const T* in_[NIn];
  int64_t packs_;
  A cache_[K > 0 ? K : 1][NIn][V];
};

/// How a row kernel is launched for one problem.
struct RowConfig {
  bool vec = false;   // 16-byte packs (else packs of one element)
  int values = 0;     // elements of each input a thread holds in registers; 0 streams the row
  bool warp = false;  // one warp per row, kWarpsPerBlock rows per block
  int threads = 0;
  unsigned blocks = 0;
};

/// Per-thread register budget of rows read one element at a time: each element needs its own
/// address, so fewer fit than with 16-byte packs.
inline constexpr int kMaxScalarValues = 16;

/// Grids are capped (kernels loop over rows); far above what a device keeps resident.
inline constexpr int64_t kMaxGrid = int64_t{1} << 20;

/// Chooses the launch of a row kernel: a warp per row while a warp can hold the row (8 values a
/// thread, or `big`), else a block of up to max_threads (8 values a thread, or `big`), else a
/// block that streams the row. `vec`: the row length is a multiple of the pack and every pointer
/// is 16-byte aligned.
inline RowConfig plan_rows(int64_t rows, int64_t len, bool vec, int big, int max_threads) {
  RowConfig c;
  c.vec = vec;
  if (!vec) big = std::min(big, kMaxScalarValues);
  if (len <= 32 * int64_t(big)) {
    c.warp = true;
    c.values = len <= 32 * 8 ? 8 : big;
    c.threads = 32 * kWarpsPerBlock;
    c.blocks = static_cast<unsigned>(std::min((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxGrid));
    return c;
  }
  c.blocks = static_cast<unsigned>(std::min(rows, kMaxGrid));
  if (len <= int64_t(max_threads) * big) {
    c.values = len <= int64_t(max_threads) * 8 ? 8 : big;
    const int64_t threads = (len + c.values - 1) / c.values;
    c.threads = static_cast<int>((threads + 31) / 32 * 32);
  } else {
    c.values = 0;
    c.threads = max_threads;
  }
  return c;
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

/// Calls f.template operator()<T>() for the float dtypes the row kernels take.
template <class F>
void dispatch_types(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::BF16: return f.template operator()<BFloat16>();
    case DType::F16: return f.template operator()<Half>();
    default: LN_FAIL("[", op, "] expected a float tensor, got ", dtype_name(t));
  }
}

/// True when p is 16-byte aligned or null (a missing optional operand).
inline bool aligned_or_null(const void* p) { return p == nullptr || aligned16(p); }

}  // namespace longnet::cuda::rowwise
