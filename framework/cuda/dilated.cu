#include "framework/cuda/dilated.h"

#include <cmath>

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
struct Slot {
  bool covered;
  int64_t row;  // (segment, t) flattened as segment-major rows of the compact tensor
  int64_t t, segment_index;
};

__device__ __forceinline__ Slot slot(const DilatedPart& p, int64_t b, int64_t n, int64_t h, int64_t seq) {
  const int64_t u = n % p.segment, segs = seq / p.segment;
  const int64_t bs = b * segs + n / p.segment;
  return {u % p.rate == h % p.rate, bs * p.length + u / p.rate, u / p.rate, bs};
}

template <class T>
__global__ void gather_kernel(DilatedShape s, int64_t w, int64_t r, int64_t length, const T* src, T* dst) {
  const int64_t packs = s.head_dim / kPack;
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t segs = s.n / w, total = s.batch * segs * length * s.heads * packs;
  if (e >= total) return;
  const int64_t pk = e % packs, h = (e / packs) % s.heads, t = (e / (packs * s.heads)) % length;
  const int64_t bs = e / (packs * s.heads * length), b = bs / segs, seg = bs % segs;
  const int64_t u = h % r + r * t;
  T* d = dst + e * kPack;
  if (u >= w) {
    const float zero[kPack] = {};
    store_floats(d, zero);
    return;
  }
  store_vec(d, load_vec(src + (((b * s.n + seg * w + u) * s.heads + h) * s.head_dim + pk * kPack)));
}

__global__ void gather_stats_kernel(DilatedShape s, int64_t w, int64_t r, int64_t length, const float* src,
                                    float* dst) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t segs = s.n / w, total = s.batch * segs * s.heads * length;
  if (e >= total) return;
  const int64_t t = e % length, h = (e / length) % s.heads, bs = e / (length * s.heads);
  const int64_t b = bs / segs, seg = bs % segs, u = h % r + r * t;
  dst[e] = u < w ? src[(b * s.heads + h) * s.n + seg * w + u] : 0.f;
}

// One thread per (b, n, h, pack): the branches' weights are recomputed by each pack of a row.
template <class T>
__global__ void merge_kernel(DilatedShape s, Parts parts, T* out, float* lse) {
  const int64_t packs = s.head_dim / kPack;
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.n * s.heads * packs) return;
  const int64_t pk = e % packs, h = (e / packs) % s.heads, n = (e / (packs * s.heads)) % s.n;
  const int64_t b = e / (packs * s.heads * s.n);
  float l[kMaxDilatedBranches];
  int64_t rows[kMaxDilatedBranches];
  float m = -INFINITY;
  for (int i = 0; i < parts.count; ++i) {
    const DilatedPart& p = parts.p[i];
    const Slot sl = slot(p, b, n, h, s.n);
    l[i] = sl.covered ? p.lse[(sl.segment_index * s.heads + h) * p.length + sl.t] : -INFINITY;
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
      const Vec<T> o = load_vec(static_cast<const T*>(parts.p[i].rows) + (rows[i] * s.heads + h) * s.head_dim + pk * kPack);
#pragma unroll
      for (int j = 0; j < kPack; ++j) acc[j] += wgt * static_cast<float>(load(o.v[j]));
    }
  }
  store_floats(out + e * kPack, acc);
  if (pk == 0) lse[(b * s.heads + h) * s.n + n] = total;
}

template <class T>
__global__ void sum_kernel(DilatedShape s, Parts parts, T* dst) {
  const int64_t packs = s.head_dim / kPack;
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= s.batch * s.n * s.heads * packs) return;
  const int64_t pk = e % packs, h = (e / packs) % s.heads, n = (e / (packs * s.heads)) % s.n;
  const int64_t b = e / (packs * s.heads * s.n);
  float acc[kPack] = {};
  for (int i = 0; i < parts.count; ++i) {
    const Slot sl = slot(parts.p[i], b, n, h, s.n);
    if (!sl.covered) continue;
    const Vec<T> x = load_vec(static_cast<const T*>(parts.p[i].rows) + (sl.row * s.heads + h) * s.head_dim + pk * kPack);
#pragma unroll
    for (int j = 0; j < kPack; ++j) acc[j] += static_cast<float>(load(x.v[j]));
  }
  store_floats(dst + e * kPack, acc);
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
    gather_kernel<T><<<blocks(total), kThreads, 0, stream(device)>>>(s, w, r, length, static_cast<const T*>(src),
                                                                     static_cast<T*>(dst));
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_gather_stats(int device, const DilatedShape& s, int64_t w, int64_t r, const float* src, float* dst) {
  const int64_t length = (w + r - 1) / r, total = s.batch * (s.n / w) * s.heads * length;
  if (total == 0) return;
  DeviceGuard guard(device);
  gather_stats_kernel<<<blocks(total), kThreads, 0, stream(device)>>>(s, w, r, length, src, dst);
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_merge(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* out,
                   float* lse) {
  const Parts p = pack_parts(parts, count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    merge_kernel<T><<<blocks(row_threads(s)), kThreads, 0, stream(device)>>>(s, p, static_cast<T*>(out), lse);
  });
  LN_CUDA_CHECK_LAUNCH();
}

void dilated_sum(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* dst) {
  const Parts p = pack_parts(parts, count);
  if (row_threads(s) == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(dtype, "dilated", [&]<class T>() {
    sum_kernel<T><<<blocks(row_threads(s)), kThreads, 0, stream(device)>>>(s, p, static_cast<T*>(dst));
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
