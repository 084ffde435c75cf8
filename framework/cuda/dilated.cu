#include "framework/cuda/dilated.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPack = 8;  // elements per aligned unit along the head dim

unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// kPack consecutive elements moved as one aligned unit (16-byte accesses for 16-bit types).
template <class T>
struct alignas(16) Vec {
  T v[kPack];
};

template <class T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}

template <class T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& x) {
  *reinterpret_cast<Vec<T>*>(p) = x;
}

template <class T>
__device__ __forceinline__ void store_floats(T* p, const float (&acc)[kPack]) {
  Vec<T> x;
#pragma unroll
  for (int j = 0; j < kPack; ++j) x.v[j] = store<T>(acc[j]);
  store_vec(p, x);
}

// Division by a divisor fixed per launch. GPUs have no integer divide instruction (a 32-bit
// division is a ~20-instruction sequence); the int32 path, what runs at every size that fits, takes
// a multiply-high, an add and a shift instead (Granlund & Montgomery's round-up method).
template <class I>
struct Divisor {
  I d = 1;
  Divisor() = default;
  explicit Divisor(int64_t divisor) : d(static_cast<I>(divisor)) {}
  __host__ __device__ __forceinline__ I div(I n) const { return n / d; }
};

template <>
struct Divisor<int32_t> {
  int32_t d = 1;
  uint32_t magic = 1, shift = 0;
  Divisor() = default;
  // With s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1, n / d = (mulhi(n, m) + n) >> s
  // for every n < 2^32; n < 2^31 here (index32), so the sum cannot overflow 32 bits.
  explicit Divisor(int64_t divisor) : d(static_cast<int32_t>(divisor)) {
    while ((int64_t{1} << shift) < divisor) ++shift;
    magic = static_cast<uint32_t>((((uint64_t{1} << shift) - static_cast<uint64_t>(divisor)) << 32) /
                                      static_cast<uint64_t>(divisor) +
                                  1);
  }
  __host__ __device__ __forceinline__ int32_t div(int32_t n) const {
    const auto u = static_cast<uint32_t>(n);
    const auto hi = static_cast<uint32_t>((static_cast<uint64_t>(u) * magic) >> 32);
    return static_cast<int32_t>((hi + u) >> shift);
  }
};

// One branch as the merge and sum kernels see it: its segment length w and rate r as divisors,
// and its compact tensors' row count per segment.
template <class I>
struct Branch {
  const void* rows;
  const float* lse;
  Divisor<I> w, r;
  I length;
};

template <class I, int C>
struct Branches {
  Branch<I> b[C];
};

// Rows of H heads of `packs` packs as threads owning P packs each: packs pk + k * packs / P (k < P)
// of one (position, head), so that a warp's k-th accesses still cover whole 32-byte sectors.
template <class I>
struct Rows {
  I threads;            // positions * H * packs / P
  Divisor<I> per_row;   // threads per position: H * packs / P
  Divisor<I> per_head;  // threads per (position, head): packs / P
  Divisor<I> seq;       // N, to split a flat position b * N + n (merge)
  I heads, packs;
};

template <class I>
struct Coord {
  I q, h, pk;  // flat position b * N + n, head, first pack
};

template <class I>
__device__ __forceinline__ I thread_index() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}

template <class I>
__device__ __forceinline__ Coord<I> coord(const Rows<I>& g, I e) {
  const I q = g.per_row.div(e), c = e - q * g.per_row.d;
  const I h = g.per_head.div(c);
  return {q, h, c - h * g.per_head.d};
}

// Where (position q, head h) sits in a branch: N is a multiple of w, so q / w is the flat segment
// b * (N / w) + n / w and q mod w the offset u in it; the branch covers the row when
// u mod r = h mod r, as row t = u / r of that segment.
template <class I>
struct Slot {
  bool covered;
  I segment, t;
};

template <class I>
__device__ __forceinline__ I mod(I n, const Divisor<I>& d) {
  return n - d.div(n) * d.d;
}

template <class I>
__device__ __forceinline__ Slot<I> slot(const Branch<I>& p, I q, I h) {
  const I segment = p.w.div(q), u = q - segment * p.w.d;
  const I t = p.r.div(u);
  return {u - t * p.r.d == mod(h, p.r), segment, t};
}

// Element offset of pack pk of head h in row t of a compact segment.
template <class I>
__device__ __forceinline__ I row_offset(const Branch<I>& p, const Slot<I>& s, I h, I heads, I packs, I pk) {
  return (((s.segment * p.length + s.t) * heads + h) * packs + pk) * kPack;
}

// x = *p when `on` (left unset otherwise: consumers test the same condition). On the device it is
// one predicated load per 16 bytes rather than a branch: behind a branch the compiler put the
// conversions of the loaded values inside it, so each load waited for the previous branch's.
template <class T>
__device__ __forceinline__ void load_vec_if(Vec<T>& x, bool on, const T* p) {
#ifdef __CUDA_ARCH__
  static_assert(sizeof(Vec<T>) % 16 == 0);
  uint4 raw[sizeof(Vec<T>) / 16];
#pragma unroll
  for (int c = 0; c < static_cast<int>(sizeof(Vec<T>) / 16); ++c) {
    asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\t@q ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
        : "=r"(raw[c].x), "=r"(raw[c].y), "=r"(raw[c].z), "=r"(raw[c].w)
        : "l"(reinterpret_cast<const uint4*>(p) + c), "r"(static_cast<int>(on)));
  }
  memcpy(&x, raw, sizeof(Vec<T>));
#else
  if (on) x = load_vec(p);
#endif
}

// Branch p's slot for the thread's position and, when the branch covers it, the thread's pack of
// its row loaded into x (predicated: the caller's other loads stay in flight with it).
template <class T, class I>
__device__ __forceinline__ Slot<I> load_branch(const Branch<I>& p, const Rows<I>& g, const Coord<I>& c, Vec<T>& x) {
  const Slot<I> s = slot(p, c.q, c.h);
  load_vec_if(x, s.covered, static_cast<const T*>(p.rows) + row_offset(p, s, c.h, g.heads, g.packs, c.pk));
  return s;
}

// The kernels index with I = int32_t whenever every offset fits (index32 below). Each issues all
// of a thread's loads before it consumes any, so that their latencies overlap.

// Threads run over the compact layout (B * N / w, L, H, packs / P) as "positions" (segment, t);
// each owns P packs of its row: the same index maths and one predicate serve them all.
template <class T, class I, int P>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(Rows<I> g, Divisor<I> length, Divisor<I> r, I w, const T* src, T* dst) {
  const I e = thread_index<I>();
  if (e >= g.threads) return;
  const Coord<I> c = coord(g, e);
  const I segment = length.div(c.q), t = c.q - segment * length.d;
  const I u = mod(c.h, r) + r.d * t;  // rows past the segment's end (u >= w) are zero
  const I stride = g.packs / P * kPack;
  const T* from = src + (((segment * w + u) * g.heads + c.h) * g.packs + c.pk) * kPack;
  T* to = dst + ((c.q * g.heads + c.h) * g.packs + c.pk) * kPack;
  Vec<T> x[P];
#pragma unroll
  for (int k = 0; k < P; ++k) load_vec_if(x[k], u < w, from + k * stride);
  const float zero[kPack] = {};
#pragma unroll
  for (int k = 0; k < P; ++k) {
    if (u < w) {
      store_vec(to + k * stride, x[k]);
    } else {
      store_floats(to + k * stride, zero);
    }
  }
}

template <class I>
__global__ void gather_stats_kernel(DilatedShape shape, I w, I r, I length, const float* src, float* dst) {
  const I heads = static_cast<I>(shape.heads), n = static_cast<I>(shape.n), segs = n / w;
  const I e = thread_index<I>();
  if (e >= static_cast<I>(shape.batch) * segs * heads * length) return;
  const I t = e % length, h = (e / length) % heads, bs = e / (length * heads);
  const I b = bs / segs, seg = bs % segs, u = h % r + r * t;
  dst[e] = u < w ? src[(b * heads + h) * n + seg * w + u] : 0.f;
}

// One thread per (b, n, h, pack): the branches' weights are recomputed by each pack of a row.
// Loads first (every covered branch's lse and pack), then the merge in branch order. One pack per
// thread, unlike the gather: at C = 5 (bf16) that is 48 registers against 80 for two packs.
template <class T, class I, int C>
__global__ void __launch_bounds__(kThreads) merge_kernel(Rows<I> g, Branches<I, C> parts, T* out, float* lse) {
  const I e = thread_index<I>();
  if (e >= g.threads) return;
  const Coord<I> c = coord(g, e);
  float l[C];
  Vec<T> x[C];
#pragma unroll
  for (int i = 0; i < C; ++i) {
    const Branch<I>& p = parts.b[i];
    // A covered row's pack is loaded even if its lse turns out -inf (rare padding), so that it
    // need not wait for the lse.
    const Slot<I> s = load_branch(p, g, c, x[i]);
    l[i] = s.covered ? p.lse[(s.segment * g.heads + c.h) * p.length + s.t] : -INFINITY;
  }
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < C; ++i) m = fmaxf(m, l[i]);
  float acc[kPack] = {};
  float total = -INFINITY;
  if (m != -INFINITY) {
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < C; ++i) sum += expf(l[i] - m);
    total = m + logf(sum);
#pragma unroll
    for (int i = 0; i < C; ++i) {
      if (l[i] == -INFINITY) continue;
      const float wgt = expf(l[i] - total);
#pragma unroll
      for (int j = 0; j < kPack; ++j) acc[j] += wgt * static_cast<float>(load(x[i].v[j]));
    }
  }
  store_floats(out + ((c.q * g.heads + c.h) * g.packs + c.pk) * kPack, acc);
  if (c.pk == 0) {
    const I b = g.seq.div(c.q), n = c.q - b * g.seq.d;
    lse[(b * g.heads + c.h) * g.seq.d + n] = total;
  }
}

// The sum in branch order i = 0..C-1 over the branches that cover the row (loads first).
template <class T, class I, int C>
__global__ void __launch_bounds__(kThreads) sum_kernel(Rows<I> g, Branches<I, C> parts, T* dst) {
  const I e = thread_index<I>();
  if (e >= g.threads) return;
  const Coord<I> c = coord(g, e);
  bool covered[C];
  Vec<T> x[C];
#pragma unroll
  for (int i = 0; i < C; ++i) {
    covered[i] = load_branch(parts.b[i], g, c, x[i]).covered;
  }
  float acc[kPack] = {};
#pragma unroll
  for (int i = 0; i < C; ++i) {
    if (!covered[i]) continue;
#pragma unroll
    for (int j = 0; j < kPack; ++j) acc[j] += static_cast<float>(load(x[i].v[j]));
  }
  store_floats(dst + ((c.q * g.heads + c.h) * g.packs + c.pk) * kPack, acc);
}

// True when every element offset of the sequence-side tensors and of the branches' compact
// tensors (at most one segment's padding more per segment, so under twice as many) fits in int32.
bool index32(const DilatedShape& s) {
  return 2 * s.batch * s.n * s.heads * std::max<int64_t>(s.head_dim, 1) < int64_t{INT32_MAX};
}

// Calls f.template operator()<I>() with the index type the shape allows.
template <class F>
void with_index_type(const DilatedShape& s, F&& f) {
  if (index32(s)) {
    f.template operator()<int32_t>();
  } else {
    f.template operator()<int64_t>();
  }
}

// Calls f.template operator()<P>() with the packs a thread owns: two for 16-bit types whose head
// splits into an even number of packs (wider types already hold twice the registers per pack).
template <class T, class F>
void with_packs_per_thread(int64_t packs, F&& f) {
  if constexpr (sizeof(T) != 2) {
    f.template operator()<1>();
  } else if (packs % 2 == 0) {
    f.template operator()<2>();
  } else {
    f.template operator()<1>();
  }
}

template <class F, int... Cs>
void with_branch_count(int count, F& f, std::integer_sequence<int, Cs...>) {
  (void)((count == Cs + 1 && (f.template operator()<Cs + 1>(), true)) || ...);
}

// Calls f.template operator()<T, I, C>() with the merge and sum kernels' template arguments: the
// branch count C is a compile-time constant so that a thread's per-branch values stay in
// registers (a runtime loop over them put them on the stack).
template <class F>
void dispatch_rows(DType dtype, const DilatedShape& s, int count, F&& f) {
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    with_index_type(s, [&]<class I>() {
      auto launch = [&]<int C>() { f.template operator()<T, I, C>(); };
      with_branch_count(count, launch, std::make_integer_sequence<int, kMaxDilatedBranches>{});
    });
  });
}

// The thread geometry over `positions` rows of H heads (s.head_dim / kPack packs each); N is the
// sequence side's length (positions > 0).
template <class I, int P>
Rows<I> rows_of(int64_t positions, const DilatedShape& s) {
  const int64_t packs = s.head_dim / kPack;
  Rows<I> g;
  g.threads = static_cast<I>(positions * s.heads * (packs / P));
  g.per_row = Divisor<I>(s.heads * (packs / P));
  g.per_head = Divisor<I>(packs / P);
  g.seq = Divisor<I>(s.n);
  g.heads = static_cast<I>(s.heads);
  g.packs = static_cast<I>(packs);
  return g;
}

template <class I, int C>
Branches<I, C> branches_of(const DilatedPart* parts) {
  Branches<I, C> b;
  for (int i = 0; i < C; ++i) {
    b.b[i] = {parts[i].rows, parts[i].lse, Divisor<I>(parts[i].segment), Divisor<I>(parts[i].rate),
              static_cast<I>(parts[i].length)};
  }
  return b;
}

void check_count(int count) {
  LN_CHECK(count >= 1 && count <= kMaxDilatedBranches, "[dilated] the gathered path takes 1 to ",
           kMaxDilatedBranches, " branches, got ", count);
}

int64_t row_threads(const DilatedShape& s) { return s.batch * s.n * s.heads * (s.head_dim / kPack); }

}  // namespace

void dilated_gather(int device, DType dtype, const DilatedShape& s, int64_t w, int64_t r, const void* src, void* dst) {
  const int64_t length = (w + r - 1) / r, total = s.batch * (s.n / w) * length * s.heads * (s.head_dim / kPack);
  if (total == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    with_index_type(s, [&]<class I>() {
      with_packs_per_thread<T>(s.head_dim / kPack, [&]<int P>() {
        const Rows<I> g = rows_of<I, P>(s.batch * (s.n / w) * length, s);
        gather_kernel<T, I, P><<<blocks(g.threads), kThreads, 0, stream(device)>>>(
            g, Divisor<I>(length), Divisor<I>(r), static_cast<I>(w), static_cast<const T*>(src),
            static_cast<T*>(dst));
      });
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_gather_stats(int device, const DilatedShape& s, int64_t w, int64_t r, const float* src, float* dst) {
  const int64_t length = (w + r - 1) / r, total = s.batch * (s.n / w) * s.heads * length;
  if (total == 0) return;
  DeviceGuard guard(device);
  with_index_type(s, [&]<class I>() {
    gather_stats_kernel<I><<<blocks(total), kThreads, 0, stream(device)>>>(s, static_cast<I>(w), static_cast<I>(r),
                                                                           static_cast<I>(length), src, dst);
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_merge(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* out,
                   float* lse) {
  check_count(count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_rows(dtype, s, count, [&]<class T, class I, int C>() {
    const Rows<I> g = rows_of<I, 1>(s.batch * s.n, s);
    merge_kernel<T, I, C><<<blocks(g.threads), kThreads, 0, stream(device)>>>(g, branches_of<I, C>(parts),
                                                                              static_cast<T*>(out), lse);
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_sum(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* dst) {
  check_count(count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_rows(dtype, s, count, [&]<class T, class I, int C>() {
    const Rows<I> g = rows_of<I, 1>(s.batch * s.n, s);
    sum_kernel<T, I, C><<<blocks(g.threads), kThreads, 0, stream(device)>>>(g, branches_of<I, C>(parts),
                                                                            static_cast<T*>(dst));
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
