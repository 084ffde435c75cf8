#include "framework/cuda/dilated.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPack = 8;  // elements per thread along the head dim

struct Parts {
  DilatedPart p[kMaxDilatedBranches];
  int count = 0;
};

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

// Where position n of head h sits in a branch, if the branch covers it.
template <class I>
struct Slot {
  bool covered;
  I row;  // (segment, t) flattened as segment-major rows of the compact tensor
  I t, segment_index;
};

template <class I>
__device__ __forceinline__ Slot<I> slot(const DilatedPart& p, I b, I n, I h, I seq) {
  const I w = static_cast<I>(p.segment), r = static_cast<I>(p.rate), length = static_cast<I>(p.length);
  const I u = n % w, bs = b * (seq / w) + n / w;
  return {u % r == h % r, bs * length + u / r, u / r, bs};
}

// The kernels index with I = int32_t whenever every offset fits (index32 below): 64-bit division
// and modulo cost several times more instructions, and these kernels do several per element.
template <class T, class I>
__global__ void gather_kernel(DilatedShape shape, I w, I r, I length, const T* src, T* dst) {
  const I packs = static_cast<I>(shape.head_dim) / kPack, heads = static_cast<I>(shape.heads);
  const I n = static_cast<I>(shape.n), segs = n / w;
  const I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (e >= static_cast<I>(shape.batch) * segs * length * heads * packs) return;
  const I pk = e % packs, h = (e / packs) % heads, t = (e / (packs * heads)) % length;
  const I bs = e / (packs * heads * length), b = bs / segs, seg = bs % segs;
  const I u = h % r + r * t;
  T* d = dst + e * kPack;
  if (u >= w) {
    const float zero[kPack] = {};
    store_floats(d, zero);
    return;
  }
  store_vec(d, load_vec(src + (((b * n + seg * w + u) * heads + h) * packs + pk) * kPack));
}

template <class I>
__global__ void gather_stats_kernel(DilatedShape shape, I w, I r, I length, const float* src, float* dst) {
  const I heads = static_cast<I>(shape.heads), n = static_cast<I>(shape.n), segs = n / w;
  const I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (e >= static_cast<I>(shape.batch) * segs * heads * length) return;
  const I t = e % length, h = (e / length) % heads, bs = e / (length * heads);
  const I b = bs / segs, seg = bs % segs, u = h % r + r * t;
  dst[e] = u < w ? src[(b * heads + h) * n + seg * w + u] : 0.f;
}

// One thread per (b, n, h, pack): the branches' weights are recomputed by each pack of a row.
template <class T, class I>
__global__ void merge_kernel(DilatedShape shape, Parts parts, T* out, float* lse) {
  const I packs = static_cast<I>(shape.head_dim) / kPack, heads = static_cast<I>(shape.heads);
  const I seq = static_cast<I>(shape.n), dim = static_cast<I>(shape.head_dim);
  const I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (e >= static_cast<I>(shape.batch) * seq * heads * packs) return;
  const I pk = e % packs, h = (e / packs) % heads, n = (e / (packs * heads)) % seq;
  const I b = e / (packs * heads * seq);
  float l[kMaxDilatedBranches];
  I rows[kMaxDilatedBranches];
  float m = -INFINITY;
  for (int i = 0; i < parts.count; ++i) {
    const DilatedPart& p = parts.p[i];
    const Slot<I> sl = slot<I>(p, b, n, h, seq);
    l[i] = sl.covered ? p.lse[(sl.segment_index * heads + h) * static_cast<I>(p.length) + sl.t] : -INFINITY;
    rows[i] = sl.row;
    m = fmaxf(m, l[i]);
  }
  float acc[kPack] = {};
  float total = -INFINITY;
  if (m != -INFINITY) {
    float sum = 0.f;
    for (int i = 0; i < parts.count; ++i) sum += expf(l[i] - m);
    total = m + logf(sum);
    for (int i = 0; i < parts.count; ++i) {
      if (l[i] == -INFINITY) continue;
      const float wgt = expf(l[i] - total);
      const Vec<T> o = load_vec(static_cast<const T*>(parts.p[i].rows) + (rows[i] * heads + h) * dim + pk * kPack);
#pragma unroll
      for (int j = 0; j < kPack; ++j) acc[j] += wgt * static_cast<float>(load(o.v[j]));
    }
  }
  store_floats(out + e * kPack, acc);
  if (pk == 0) lse[(b * heads + h) * seq + n] = total;
}

template <class T, class I>
__global__ void sum_kernel(DilatedShape shape, Parts parts, T* dst) {
  const I packs = static_cast<I>(shape.head_dim) / kPack, heads = static_cast<I>(shape.heads);
  const I seq = static_cast<I>(shape.n), dim = static_cast<I>(shape.head_dim);
  const I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  if (e >= static_cast<I>(shape.batch) * seq * heads * packs) return;
  const I pk = e % packs, h = (e / packs) % heads, n = (e / (packs * heads)) % seq;
  const I b = e / (packs * heads * seq);
  float acc[kPack] = {};
  for (int i = 0; i < parts.count; ++i) {
    const Slot<I> sl = slot<I>(parts.p[i], b, n, h, seq);
    if (!sl.covered) continue;
    const Vec<T> x = load_vec(static_cast<const T*>(parts.p[i].rows) + (sl.row * heads + h) * dim + pk * kPack);
#pragma unroll
    for (int j = 0; j < kPack; ++j) acc[j] += static_cast<float>(load(x.v[j]));
  }
  store_floats(dst + e * kPack, acc);
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

Parts pack_parts(const DilatedPart* parts, int count) {
  LN_CHECK(count >= 1 && count <= kMaxDilatedBranches, "[dilated] the gathered path takes 1 to ",
           kMaxDilatedBranches, " branches, got ", count);
  Parts p;
  p.count = count;
  for (int i = 0; i < count; ++i) p.p[i] = parts[i];
  return p;
}

int64_t row_threads(const DilatedShape& s) { return s.batch * s.n * s.heads * (s.head_dim / kPack); }

}  // namespace

void dilated_gather(int device, DType dtype, const DilatedShape& s, int64_t w, int64_t r, const void* src, void* dst) {
  const int64_t length = (w + r - 1) / r, total = s.batch * (s.n / w) * length * s.heads * (s.head_dim / kPack);
  if (total == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    with_index_type(s, [&]<class I>() {
      gather_kernel<T, I><<<blocks(total), kThreads, 0, stream(device)>>>(
          s, static_cast<I>(w), static_cast<I>(r), static_cast<I>(length), static_cast<const T*>(src),
          static_cast<T*>(dst));
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
  const Parts p = pack_parts(parts, count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    with_index_type(s, [&]<class I>() {
      merge_kernel<T, I><<<blocks(row_threads(s)), kThreads, 0, stream(device)>>>(s, p, static_cast<T*>(out), lse);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_sum(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* dst) {
  const Parts p = pack_parts(parts, count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    with_index_type(s, [&]<class I>() {
      sum_kernel<T, I><<<blocks(row_threads(s)), kThreads, 0, stream(device)>>>(s, p, static_cast<T*>(dst));
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
