#include "framework/cuda/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <vector>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/scoped_buffer.h"

// Tensor cores through WMMA (16 x 16 x 16 fragments, f32 accumulators). A warp owns 16 rows of
// every tile it computes; score tiles go through shared memory between the two products, where
// each lane pair applies the masks and the softmax to one row (the fragment layout stays opaque).
namespace longnet::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using cpu::AttentionShape;
using cpu::AttentionView;

constexpr float kNegInf = -INFINITY;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxTile = 64;

// A layout as the kernels read it: device arrays; col_* is the transpose (per group and key
// block, the query blocks listing it) for the dk/dv pass, or null.
struct DeviceLayout {
  int64_t block = 0;
  int64_t batch = 1, heads = 1, q_blocks = 0, k_blocks = 0;
  const int64_t* row_offsets = nullptr;
  const int64_t* key_blocks = nullptr;
  const int64_t* col_offsets = nullptr;
  const int64_t* col_rows = nullptr;
  const int64_t* col_entries = nullptr;
};

// What every attention kernel needs besides its operands.
struct Geometry {
  AttentionShape shape;
  int tile = kMaxTile;  // query rows per CTA tile and keys per key tile; divides the layout block
  float scale = 1.f;
  bool causal = false;
  int64_t causal_offset = 0;
  AttentionView padding;  // u8 (batch..., k_len); data null when none
  DeviceLayout layout;
  const void* bias = nullptr;  // (layout entries) in the operand dtype, or null
  bool vec = false;            // every operand row can be read as 16-byte packs
};

__host__ __device__ constexpr size_t round_region(size_t bytes) { return (bytes + 127) / 128 * 128; }

// Carves consecutive 128-byte aligned regions out of dynamic shared memory (or, with a null base,
// only counts their size).
struct Carver {
  unsigned char* base;
  size_t used = 0;
  template <class U>
  __host__ __device__ U* take(size_t count) {
    U* p = base ? reinterpret_cast<U*>(base + used) : nullptr;
    used += round_region(count * sizeof(U));
    return p;
  }
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(x);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half(x);
  } else {
    return x;
  }
}

__device__ int64_t batch_offset(const AttentionShape& s, const AttentionView& v, int64_t bt) {
  int64_t off = 0;
  for (int i = s.batch_dims - 1; i >= 0; --i) {
    off += bt % s.batch_sizes[i] * v.batch[i];
    bt /= s.batch_sizes[i];
  }
  return off;
}

// Operand `v` of slice (bt, h) at row 0, or null.
template <class U>
__device__ U* slice(const Geometry& g, const AttentionView& v, int64_t bt, int64_t h) {
  return v.data ? static_cast<U*>(v.data) + batch_offset(g.shape, v, bt) + h * v.head : nullptr;
}

// Whether query i sees key j (rows and keys past the ends see nothing).
__device__ __forceinline__ bool visible(const Geometry& g, const uint8_t* pad, int64_t i, int64_t j) {
  if (i >= g.shape.q_len || j >= g.shape.k_len) return false;
  if (g.causal && j > i + g.causal_offset) return false;
  return !(pad && pad[j * g.padding.row]);
}

__device__ int64_t layout_group(const Geometry& g, int64_t bt, int64_t h) {
  return (g.layout.batch == 1 ? 0 : bt) * g.layout.heads + (g.layout.heads == 1 ? 0 : h);
}

// The block bias of layout entry e (0 without a bias or a layout).
template <class T>
__device__ __forceinline__ float bias_of(const Geometry& g, int64_t e) {
  return g.bias && e >= 0 ? to_float(static_cast<const T*>(g.bias)[e]) : 0.f;
}

// Calls f(j0, entry) for each key tile the query tile at row i0 visits (tiles the causal mask
// hides entirely are skipped); entry is the layout entry of the tile's key block, -1 without one.
template <class F>
__device__ void for_key_tiles(const Geometry& g, int64_t bt, int64_t h, int64_t i0, F&& f) {
  const int64_t last_query = min(g.shape.q_len, i0 + g.tile) - 1;
  const int64_t key_end = g.causal ? min(g.shape.k_len, last_query + g.causal_offset + 1) : g.shape.k_len;
  if (g.layout.block == 0) {
    for (int64_t j0 = 0; j0 < key_end; j0 += g.tile) f(j0, int64_t{-1});
    return;
  }
  const int64_t b = g.layout.block;
  const int64_t r = layout_group(g, bt, h) * g.layout.q_blocks + i0 / b;
  for (int64_t e = g.layout.row_offsets[r]; e < g.layout.row_offsets[r + 1]; ++e) {
    const int64_t kb = g.layout.key_blocks[e];
    for (int64_t j0 = kb * b; j0 < min((kb + 1) * b, key_end); j0 += g.tile) f(j0, e);
  }
}

// Calls f(i0, entry) for each query tile that visits the key tile at key j0.
template <class F>
__device__ void for_query_tiles(const Geometry& g, int64_t bt, int64_t h, int64_t j0, F&& f) {
  const int64_t first_query = g.causal ? max(int64_t{0}, j0 - g.causal_offset) : 0;  // first row seeing key j0
  if (g.layout.block == 0) {
    for (int64_t i0 = first_query / g.tile * g.tile; i0 < g.shape.q_len; i0 += g.tile) f(i0, int64_t{-1});
    return;
  }
  const int64_t b = g.layout.block;
  const int64_t c = layout_group(g, bt, h) * g.layout.k_blocks + j0 / b;
  for (int64_t e = g.layout.col_offsets[c]; e < g.layout.col_offsets[c + 1]; ++e) {
    const int64_t qb = g.layout.col_rows[e];
    for (int64_t i0 = qb * b; i0 < min((qb + 1) * b, g.shape.q_len); i0 += g.tile) {
      if (i0 + g.tile > first_query) f(i0, g.layout.col_entries[e]);
    }
  }
}

// Copies `rows` rows of D elements (the first `valid` from src, the rest zero) into a shared
// tile with row pitch D + 8.
template <class T, int D>
__device__ void load_tile(T* dst, const T* src, int64_t stride, int64_t valid, int rows, bool vec) {
  constexpr int kPacks = D / 8;
  for (int idx = threadIdx.x; idx < rows * kPacks; idx += blockDim.x) {
    const int r = idx / kPacks, c = idx % kPacks * 8;
    T* d = dst + r * (D + 8) + c;
    if (r < valid) {
      const T* s = src + r * stride + c;
      if (vec) {
        *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) d[e] = s[e];
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Loads the lse and Delta of query rows [i0, i0 + tile) (past the end: -inf and 0).
__device__ void load_row_stats(const Geometry& g, const float* lse, int64_t lse_row, const float* delta, int64_t i0,
                               float* s_lse, float* s_delta) {
  for (int t = threadIdx.x; t < g.tile; t += blockDim.x) {
    const int64_t i = i0 + t;
    s_lse[t] = i < g.shape.q_len ? lse[i * lse_row] : kNegInf;
    s_delta[t] = i < g.shape.q_len ? delta[i] : 0.f;
  }
}

template <class T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <class T, class L>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, L>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// c (16 x n) = a (16 x D, pitch D + 8) @ b^T where b is (n x D, pitch D + 8); c has pitch ldc.
template <class T, int D>
__device__ void rows_times_rows_t(const T* a, const T* b, int n, float* c, int ldc) {
  for (int nt = 0; nt < n / 16; ++nt) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
      FragA<T> fa;
      FragB<T, wmma::col_major> fb;
      wmma::load_matrix_sync(fa, a + k * 16, D + 8);
      wmma::load_matrix_sync(fb, b + nt * 16 * (D + 8) + k * 16, D + 8);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + nt * 16, acc, ldc, wmma::mem_row_major);
  }
}

// c (16 x D, f32, pitch D + 4) += a (16 x n, pitch lda) @ b (n x D, pitch D + 8).
template <class T, int D>
__device__ void add_rows_times(const T* a, int lda, const T* b, int n, float* c) {
#pragma unroll
  for (int nt = 0; nt < D / 16; ++nt) {
    FragC acc;
    wmma::load_matrix_sync(acc, c + nt * 16, D + 4, wmma::mem_row_major);
    for (int k = 0; k < n / 16; ++k) {
      FragA<T> fa;
      FragB<T, wmma::row_major> fb;
      wmma::load_matrix_sync(fa, a + k * 16, lda);
      wmma::load_matrix_sync(fb, b + k * 16 * (D + 8) + nt * 16, D + 8);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + nt * 16, acc, D + 4, wmma::mem_row_major);
  }
}

// Writes (or adds) scale * src (rows x D, f32 pitch D + 4) into the first `valid` rows of dst.
template <class T, int D>
__device__ void store_tile(T* dst, int64_t stride, const float* src, int64_t valid, int rows, float scale,
                           bool accumulate) {
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, c = idx % D;
    if (r >= valid) continue;
    T* d = dst + r * stride + c;
    const float x = scale * src[r * (D + 4) + c];
    *d = from_float<T>(accumulate ? to_float(*d) + x : x);
  }
}

struct ForwardArgs {
  Geometry g;
  AttentionView q, k, v, out, lse;
};

template <class T, int D>
struct ForwardSmem {
  T *q, *k, *v, *p;
  float *s, *o, *alpha;
  __host__ __device__ static size_t carve(unsigned char* base, int tile, ForwardSmem* m) {
    Carver c{base};
    ForwardSmem x;
    x.q = c.take<T>(tile * (D + 8));
    x.k = c.take<T>(tile * (D + 8));
    x.v = c.take<T>(tile * (D + 8));
    x.p = c.take<T>(tile * (tile + 8));
    x.s = c.take<float>(tile * (tile + 4));
    x.o = c.take<float>(tile * (D + 4));
    x.alpha = c.take<float>(tile);
    if (m) *m = x;
    return c.used;
  }
};

// One CTA per (query tile, head, batch); warp w owns query rows [16 w, 16 w + 16) of the tile and
// each lane pair one of them (running max and sum in registers, half of the columns each).
template <class T, int D>
__global__ void __launch_bounds__(128) forward_kernel(ForwardArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Geometry& g = a.g;
  const int tile = g.tile, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  ForwardSmem<T, D> sm;
  ForwardSmem<T, D>::carve(smem, tile, &sm);
  const int64_t i0 = blockIdx.x * int64_t{tile}, h = blockIdx.y, bt = blockIdx.z;
  const T* q = slice<const T>(g, a.q, bt, h);
  const T* k = slice<const T>(g, a.k, bt, h);
  const T* v = slice<const T>(g, a.v, bt, h);
  const uint8_t* pad = g.padding.data ? slice<const uint8_t>(g, g.padding, bt, 0) : nullptr;
  load_tile<T, D>(sm.q, q + i0 * a.q.row, a.q.row, g.shape.q_len - i0, tile, g.vec);
  for (int idx = threadIdx.x; idx < tile * (D + 4); idx += blockDim.x) sm.o[idx] = 0.f;
  const int r0 = warp * 16, rr = r0 + lane / 2, half = lane % 2;
  const int lds = tile + 4, ldp = tile + 8;
  const int64_t i = i0 + rr;
  float m = kNegInf, l = 0.f;
  for_key_tiles(g, bt, h, i0, [&](int64_t j0, int64_t entry) {
    __syncthreads();  // the previous tile's K, V are no longer read
    load_tile<T, D>(sm.k, k + j0 * a.k.row, a.k.row, g.shape.k_len - j0, tile, g.vec);
    load_tile<T, D>(sm.v, v + j0 * a.v.row, a.v.row, g.shape.k_len - j0, tile, g.vec);
    __syncthreads();
    rows_times_rows_t<T, D>(sm.q + r0 * (D + 8), sm.k, tile, sm.s + r0 * lds, lds);
    __syncwarp();
    float* srow = sm.s + rr * lds;
    const int c0 = half * (tile / 2), c1 = c0 + tile / 2;
    const float bias = bias_of<T>(g, entry);
    float mx = kNegInf;
    for (int c = c0; c < c1; ++c) {
      const float s = visible(g, pad, i, j0 + c) ? srow[c] * g.scale + bias : kNegInf;
      srow[c] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float alpha = m_new == kNegInf ? 1.f : __expf(m - m_new);
    float sum = 0.f;
    for (int c = c0; c < c1; ++c) {
      const float p = srow[c] == kNegInf ? 0.f : __expf(srow[c] - m_new);
      sum += p;
      sm.p[rr * ldp + c] = from_float<T>(p);
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    if (half == 0) sm.alpha[rr] = alpha;
    __syncwarp();
    for (int idx = lane; idx < 16 * D; idx += 32) sm.o[(r0 + idx / D) * (D + 4) + idx % D] *= sm.alpha[r0 + idx / D];
    __syncwarp();
    add_rows_times<T, D>(sm.p + r0 * ldp, ldp, sm.v, tile, sm.o + r0 * (D + 4));
  });
  __syncthreads();  // with no key tile, rows of O were zeroed by other warps
  if (i >= g.shape.q_len) return;
  T* out = slice<T>(g, a.out, bt, h) + i * a.out.row;
  const float inv = l == 0.f ? 0.f : 1.f / l;
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) out[c] = from_float<T>(sm.o[rr * (D + 4) + c] * inv);
  if (half == 0) slice<float>(g, a.lse, bt, h)[i * a.lse.row] = l == 0.f ? kNegInf : m + logf(l);
}

struct BackwardArgs {
  Geometry g;
  AttentionView q, k, v, out, lse, dout, dlse, dq, dk, dv;
  const float* delta;  // (batch, heads, q_len)
  bool accumulate;
  float* bias_grad;  // (layout entries) f32 sums of the score gradients, or null
};

// Delta = rowsum(dO o O) - dL per (batch, head, query row); one warp per row.
template <class T>
__global__ void delta_kernel(BackwardArgs a, float* delta, int64_t rows) {
  const Geometry& g = a.g;
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t n = g.shape.q_len, heads = g.shape.heads;
  if (r >= rows) return;
  const int64_t i = r % n, h = r / n % heads, bt = r / n / heads;
  const T* o = slice<const T>(g, a.out, bt, h) + i * a.out.row;
  const T* go = slice<const T>(g, a.dout, bt, h) + i * a.dout.row;
  float acc = 0.f;
  for (int64_t c = lane; c < g.shape.head_dim; c += 32) acc += to_float(o[c]) * to_float(go[c]);
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(kFullMask, acc, off);
  if (lane == 0) {
    const float* gl = slice<const float>(g, a.dlse, bt, h);
    delta[r] = acc - (gl ? gl[i * a.dlse.row] : 0.f);
  }
}

template <class T, int D>
struct BackwardSmem {
  T *a0, *a1, *b0, *b1, *p, *ds;  // a: the CTA's own rows (K, V or Q, dO); b: the streamed ones
  float *s, *dp, *acc0, *acc1, *lse, *delta;
  __host__ __device__ static size_t carve(unsigned char* base, int tile, BackwardSmem* m) {
    Carver c{base};
    BackwardSmem x;
    x.a0 = c.take<T>(tile * (D + 8));
    x.a1 = c.take<T>(tile * (D + 8));
    x.b0 = c.take<T>(tile * (D + 8));
    x.b1 = c.take<T>(tile * (D + 8));
    x.p = c.take<T>(tile * (tile + 8));
    x.ds = c.take<T>(tile * (tile + 8));
    x.s = c.take<float>(tile * (tile + 4));
    x.dp = c.take<float>(tile * (tile + 4));
    x.acc0 = c.take<float>(tile * (D + 4));
    x.acc1 = c.take<float>(tile * (D + 4));
    x.lse = c.take<float>(tile);
    x.delta = c.take<float>(tile);
    if (m) *m = x;
    return c.used;
  }
};

// dK, dV of one key tile: one CTA per (key tile, head, batch); warp w owns keys [16 w, 16 w + 16)
// and works on the transposed scores S^T = K Q^T, so its rows of dK and dV need no other warp.
template <class T, int D>
__global__ void __launch_bounds__(128) dkdv_kernel(BackwardArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Geometry& g = a.g;
  const int tile = g.tile, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  BackwardSmem<T, D> sm;
  BackwardSmem<T, D>::carve(smem, tile, &sm);
  const int64_t j0 = blockIdx.x * int64_t{tile}, h = blockIdx.y, bt = blockIdx.z;
  const T* q = slice<const T>(g, a.q, bt, h);
  const T* dout = slice<const T>(g, a.dout, bt, h);
  const float* lse = slice<const float>(g, a.lse, bt, h);
  const float* delta = a.delta + (bt * g.shape.heads + h) * g.shape.q_len;
  const uint8_t* pad = g.padding.data ? slice<const uint8_t>(g, g.padding, bt, 0) : nullptr;
  load_tile<T, D>(sm.a0, slice<const T>(g, a.k, bt, h) + j0 * a.k.row, a.k.row, g.shape.k_len - j0, tile, g.vec);
  load_tile<T, D>(sm.a1, slice<const T>(g, a.v, bt, h) + j0 * a.v.row, a.v.row, g.shape.k_len - j0, tile, g.vec);
  for (int idx = threadIdx.x; idx < tile * (D + 4); idx += blockDim.x) sm.acc0[idx] = sm.acc1[idx] = 0.f;
  const int r0 = warp * 16, lds = tile + 4, ldp = tile + 8;
  for_query_tiles(g, bt, h, j0, [&](int64_t i0, int64_t entry) {
    __syncthreads();
    load_tile<T, D>(sm.b0, q + i0 * a.q.row, a.q.row, g.shape.q_len - i0, tile, g.vec);
    load_tile<T, D>(sm.b1, dout + i0 * a.dout.row, a.dout.row, g.shape.q_len - i0, tile, g.vec);
    load_row_stats(g, lse, a.lse.row, delta, i0, sm.lse, sm.delta);
    __syncthreads();
    rows_times_rows_t<T, D>(sm.a0 + r0 * (D + 8), sm.b0, tile, sm.s + r0 * lds, lds);   // S^T
    rows_times_rows_t<T, D>(sm.a1 + r0 * (D + 8), sm.b1, tile, sm.dp + r0 * lds, lds);  // dP^T = V dO^T
    __syncwarp();
    const float bias = bias_of<T>(g, entry);
    for (int idx = lane; idx < 16 * tile; idx += 32) {
      const int jr = r0 + idx / tile, ic = idx % tile;
      const float li = sm.lse[ic];
      const bool on = li != kNegInf && visible(g, pad, i0 + ic, j0 + jr);
      const float p = on ? __expf(sm.s[jr * lds + ic] * g.scale + bias - li) : 0.f;
      sm.p[jr * ldp + ic] = from_float<T>(p);
      sm.ds[jr * ldp + ic] = from_float<T>(p * (sm.dp[jr * lds + ic] - sm.delta[ic]));
    }
    __syncwarp();
    add_rows_times<T, D>(sm.p + r0 * ldp, ldp, sm.b1, tile, sm.acc1 + r0 * (D + 4));   // dV += P^T dO
    add_rows_times<T, D>(sm.ds + r0 * ldp, ldp, sm.b0, tile, sm.acc0 + r0 * (D + 4));  // dK += dS^T Q
  });
  __syncthreads();
  const int64_t valid = g.shape.k_len - j0;
  if (T* dk = slice<T>(g, a.dk, bt, h)) {
    store_tile<T, D>(dk + j0 * a.dk.row, a.dk.row, sm.acc0, valid, tile, g.scale, a.accumulate);
  }
  if (T* dv = slice<T>(g, a.dv, bt, h)) {
    store_tile<T, D>(dv + j0 * a.dv.row, a.dv.row, sm.acc1, valid, tile, 1.f, a.accumulate);
  }
}

// dQ of one query tile: one CTA per (query tile, head, batch); warp w owns query rows
// [16 w, 16 w + 16).
template <class T, int D>
__global__ void __launch_bounds__(128) dq_kernel(BackwardArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Geometry& g = a.g;
  const int tile = g.tile, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  BackwardSmem<T, D> sm;
  BackwardSmem<T, D>::carve(smem, tile, &sm);
  const int64_t i0 = blockIdx.x * int64_t{tile}, h = blockIdx.y, bt = blockIdx.z;
  const T* k = slice<const T>(g, a.k, bt, h);
  const T* v = slice<const T>(g, a.v, bt, h);
  const uint8_t* pad = g.padding.data ? slice<const uint8_t>(g, g.padding, bt, 0) : nullptr;
  load_tile<T, D>(sm.a0, slice<const T>(g, a.q, bt, h) + i0 * a.q.row, a.q.row, g.shape.q_len - i0, tile, g.vec);
  load_tile<T, D>(sm.a1, slice<const T>(g, a.dout, bt, h) + i0 * a.dout.row, a.dout.row, g.shape.q_len - i0, tile,
                  g.vec);
  load_row_stats(g, slice<const float>(g, a.lse, bt, h), a.lse.row,
                 a.delta + (bt * g.shape.heads + h) * g.shape.q_len, i0, sm.lse, sm.delta);
  for (int idx = threadIdx.x; idx < tile * (D + 4); idx += blockDim.x) sm.acc0[idx] = 0.f;
  const int r0 = warp * 16, lds = tile + 4, ldp = tile + 8;
  for_key_tiles(g, bt, h, i0, [&](int64_t j0, int64_t entry) {
    __syncthreads();
    load_tile<T, D>(sm.b0, k + j0 * a.k.row, a.k.row, g.shape.k_len - j0, tile, g.vec);
    load_tile<T, D>(sm.b1, v + j0 * a.v.row, a.v.row, g.shape.k_len - j0, tile, g.vec);
    __syncthreads();
    rows_times_rows_t<T, D>(sm.a0 + r0 * (D + 8), sm.b0, tile, sm.s + r0 * lds, lds);   // S = Q K^T
    rows_times_rows_t<T, D>(sm.a1 + r0 * (D + 8), sm.b1, tile, sm.dp + r0 * lds, lds);  // dP = dO V^T
    __syncwarp();
    const float bias = bias_of<T>(g, entry);
    float ds_sum = 0.f;
    for (int idx = lane; idx < 16 * tile; idx += 32) {
      const int ir = r0 + idx / tile, jc = idx % tile;
      const float li = sm.lse[ir];
      const bool on = li != kNegInf && visible(g, pad, i0 + ir, j0 + jc);
      const float p = on ? __expf(sm.s[ir * lds + jc] * g.scale + bias - li) : 0.f;
      const float ds = p * (sm.dp[ir * lds + jc] - sm.delta[ir]);
      ds_sum += ds;
      sm.ds[ir * ldp + jc] = from_float<T>(ds);
    }
    if (a.bias_grad) {
      // One atomic per warp and tile: the sum's order over tiles is not fixed.
      for (int off = 16; off > 0; off /= 2) ds_sum += __shfl_xor_sync(kFullMask, ds_sum, off);
      if (lane == 0) atomicAdd(a.bias_grad + entry, ds_sum);
    }
    __syncwarp();
    add_rows_times<T, D>(sm.ds + r0 * ldp, ldp, sm.b0, tile, sm.acc0 + r0 * (D + 4));  // dQ += dS K
  });
  __syncthreads();
  if (T* dq = slice<T>(g, a.dq, bt, h)) {
    store_tile<T, D>(dq + i0 * a.dq.row, a.dq.row, sm.acc0, g.shape.q_len - i0, tile, g.scale, a.accumulate);
  }
}

// dblock_bias (operand dtype) += the f32 sums.
template <class T>
__global__ void add_bias_grad_kernel(T* dst, const float* sums, int64_t n) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e < n) dst[e] = from_float<T>(to_float(dst[e]) + sums[e]);
}

// ---- host side ----

// Uploads a layout (and its transpose when asked) for one call.
class LayoutUpload {
 public:
  LayoutUpload(const cpu::AttentionLayoutView& l, bool transpose, cudaStream_t stream) {
    if (l.block == 0) return;
    const int64_t groups = l.batch * l.heads, rows = groups * l.q_blocks, entries = l.row_offsets[rows];
    std::vector<int64_t> host(l.row_offsets, l.row_offsets + rows + 1);
    host.insert(host.end(), l.key_blocks, l.key_blocks + entries);
    if (transpose) {
      // Counting sort of the entries by (group, key block); query blocks stay ascending.
      std::vector<int64_t> offsets(static_cast<size_t>(groups * l.k_blocks + 1), 0), cols(static_cast<size_t>(entries));
      std::vector<int64_t> col_entries(cols.size());
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t e = l.row_offsets[g * l.q_blocks]; e < l.row_offsets[(g + 1) * l.q_blocks]; ++e) {
          ++offsets[static_cast<size_t>(g * l.k_blocks + l.key_blocks[e] + 1)];
        }
      }
      for (size_t c = 1; c < offsets.size(); ++c) offsets[c] += offsets[c - 1];
      std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t qb = 0; qb < l.q_blocks; ++qb) {
          for (int64_t e = l.row_offsets[g * l.q_blocks + qb]; e < l.row_offsets[g * l.q_blocks + qb + 1]; ++e) {
            const auto at = static_cast<size_t>(fill[static_cast<size_t>(g * l.k_blocks + l.key_blocks[e])]++);
            cols[at] = qb;
            col_entries[at] = e;
          }
        }
      }
      host.insert(host.end(), offsets.begin(), offsets.end());
      host.insert(host.end(), cols.begin(), cols.end());
      host.insert(host.end(), col_entries.begin(), col_entries.end());
    }
    buffer_ = std::make_unique<ScopedBuffer>(host.size() * sizeof(int64_t), stream);
    auto* d = static_cast<int64_t*>(buffer_->get());
    // From pageable memory: staged before the call returns, so `host` may go.
    LN_CUDA_CHECK(cudaMemcpyAsync(d, host.data(), host.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream));
    view_ = {l.block, l.batch, l.heads, l.q_blocks, l.k_blocks, d, d + rows + 1};
    if (transpose) {
      view_.col_offsets = d + rows + 1 + entries;
      view_.col_rows = view_.col_offsets + groups * l.k_blocks + 1;
      view_.col_entries = view_.col_rows + entries;
    }
  }
  const DeviceLayout& view() const { return view_; }

 private:
  std::unique_ptr<ScopedBuffer> buffer_;
  DeviceLayout view_;
};

bool aligned_view(const AttentionShape& s, const AttentionView& v) {
  if (!v.data) return true;
  bool ok = reinterpret_cast<uintptr_t>(v.data) % 16 == 0 && v.row % 8 == 0 && v.head % 8 == 0;
  for (int i = 0; i < s.batch_dims; ++i) ok = ok && v.batch[i] % 8 == 0;
  return ok;
}

Geometry make_geometry(const char* op, const AttentionShape& s, const cpu::AttentionMask& m, const DeviceLayout& l,
                       std::initializer_list<AttentionView> operands) {
  Geometry g;
  g.bias = m.block_bias;
  g.shape = s;
  g.scale = static_cast<float>(m.scale);
  g.causal = m.causal;
  g.causal_offset = m.causal_offset;
  g.padding = m.key_padding;
  g.layout = l;
  g.tile = 0;
  if (l.block == 0) {
    g.tile = kMaxTile;
  } else {
    for (int t : {64, 48, 32, 16}) {
      if (l.block % t == 0) {
        g.tile = t;
        break;
      }
    }
  }
  LN_CHECK(g.tile > 0, "[", op, "] GPU layouts need a block size that is a multiple of 16, got ", l.block);
  g.vec = true;
  for (const AttentionView& v : operands) g.vec = g.vec && aligned_view(s, v);
  LN_CHECK(s.batch() <= 65535 && s.heads <= 65535, "[", op, "] GPU kernels take at most 65535 batch elements and heads, got ",
           s.batch(), " x ", s.heads);
  return g;
}

// Runs f.template operator()<T, D>() for the dtype and head dim.
template <class F>
void dispatch(const char* op, DType dtype, int64_t head_dim, F&& f) {
  auto by_dim = [&]<class T>() {
    switch (head_dim) {
      case 32: f.template operator()<T, 32>(); break;
      case 64: f.template operator()<T, 64>(); break;
      case 128: f.template operator()<T, 128>(); break;
      default: LN_CHECK(false, "[", op, "] GPU kernels take head dims 32, 64 or 128, got ", head_dim);
    }
  };
  if (dtype == DType::BF16) {
    by_dim.template operator()<__nv_bfloat16>();
  } else if (dtype == DType::F16) {
    by_dim.template operator()<__half>();
  } else {
    LN_CHECK(false, "[", op, "] GPU kernels take bf16 or f16 operands, got ", dtype_name(dtype));
  }
}

template <class Kernel, class Args>
void launch(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream, const Args& args) {
  LN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, threads, smem, stream>>>(args);
  LN_CUDA_CHECK_LAUNCH();
}

dim3 tile_grid(int64_t rows, const Geometry& g) {
  return dim3(static_cast<unsigned>((rows + g.tile - 1) / g.tile), static_cast<unsigned>(g.shape.heads),
              static_cast<unsigned>(g.shape.batch()));
}

}  // namespace

void attention_forward(int device, const cpu::AttentionForwardParams& p) {
  if (cudnn_attention_forward(device, p)) return;
  const char* op = "attention";
  const AttentionShape& s = p.shape;
  if (s.batch() == 0 || s.heads == 0 || s.q_len == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = stream(device);
  const LayoutUpload layout(p.mask.layout, false, st);
  ForwardArgs a{make_geometry(op, s, p.mask, layout.view(), {p.q, p.k, p.v}), p.q, p.k, p.v, p.out, p.lse};
  dispatch(op, p.dtype, s.head_dim, [&]<class T, int D>() {
    const size_t smem = ForwardSmem<T, D>::carve(nullptr, a.g.tile, nullptr);
    launch(forward_kernel<T, D>, tile_grid(s.q_len, a.g), a.g.tile / 16 * 32, smem, st, a);
  });
}

void attention_backward(int device, const cpu::AttentionBackwardParams& p) {
  if (cudnn_attention_backward(device, p)) return;
  const char* op = "attention_backward";
  const AttentionShape& s = p.shape;
  const bool need_kv = p.dk.data || p.dv.data, need_q = p.dq.data || p.block_bias_grad;
  if (s.batch() == 0 || s.heads == 0 || (s.q_len == 0 && !need_kv)) return;
  DeviceGuard guard(device);
  cudaStream_t st = stream(device);
  const LayoutUpload layout(p.mask.layout, need_kv, st);
  const ScopedBuffer delta(static_cast<size_t>(s.batch() * s.heads * s.q_len) * sizeof(float), st);
  BackwardArgs a{make_geometry(op, s, p.mask, layout.view(), {p.q, p.k, p.v, p.dout, p.dq, p.dk, p.dv}),
                 p.q, p.k, p.v, p.out, p.lse, p.dout, p.dlse, p.dq, p.dk, p.dv,
                 static_cast<const float*>(delta.get()), p.accumulate, nullptr};
  const int64_t entries = p.mask.layout.block ? p.mask.layout.row_offsets[p.mask.layout.batch * p.mask.layout.heads *
                                                                          p.mask.layout.q_blocks]
                                              : 0;
  const ScopedBuffer bias_grad(p.block_bias_grad ? static_cast<size_t>(entries) * sizeof(float) : 0, st);
  if (p.block_bias_grad && entries > 0) {
    a.bias_grad = static_cast<float*>(bias_grad.get());
    LN_CUDA_CHECK(cudaMemsetAsync(a.bias_grad, 0, static_cast<size_t>(entries) * sizeof(float), st));
  }
  dispatch(op, p.dtype, s.head_dim, [&]<class T, int D>() {
    const int threads = a.g.tile / 16 * 32;
    const size_t smem = BackwardSmem<T, D>::carve(nullptr, a.g.tile, nullptr);
    const int64_t rows = s.batch() * s.heads * s.q_len;
    if (rows > 0) {
      delta_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, st>>>(a, static_cast<float*>(delta.get()), rows);
      LN_CUDA_CHECK_LAUNCH();
    }
    if (need_kv && s.k_len > 0) launch(dkdv_kernel<T, D>, tile_grid(s.k_len, a.g), threads, smem, st, a);
    if (need_q && s.q_len > 0) launch(dq_kernel<T, D>, tile_grid(s.q_len, a.g), threads, smem, st, a);
    if (a.bias_grad) {
      add_bias_grad_kernel<T><<<static_cast<unsigned>((entries + 255) / 256), 256, 0, st>>>(
          static_cast<T*>(p.block_bias_grad), a.bias_grad, entries);
      LN_CUDA_CHECK_LAUNCH();
    }
  });
}

namespace {

constexpr int kMaxMergeParts = 32;  // one part per lane holds its weight

struct MergeArgs {
  int parts;
  int64_t rows, q_len, heads, head_dim;
  const void* o[kMaxMergeParts];
  const float* lse[kMaxMergeParts];
  void* out;
  float* lse_out;
  const void* dout;
  const float* dlse_out;
  void* do_parts[kMaxMergeParts];
  float* dlse_parts[kMaxMergeParts];
};

__device__ __forceinline__ float warp_sum(float x) {
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(kFullMask, x, off);
  return x;
}

// One warp per (batch, query, head) row: lane i < parts holds part i's lse and weight, so every
// lse is read before the merged one is written (lse_out may alias part 0).
struct MergeRow {
  int64_t r, at;
  float lse, w;
  __device__ MergeRow(const MergeArgs& a, int64_t row, int lane) : r(row) {
    const int64_t h = r % a.heads, n = r / a.heads % a.q_len, b = r / a.heads / a.q_len;
    at = (b * a.heads + h) * a.q_len + n;
    const float mine = lane < a.parts ? a.lse[lane][at] : kNegInf;
    float mx = mine;
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, off));
    lse = kNegInf;
    if (mx != kNegInf) lse = mx + logf(warp_sum(mine == kNegInf ? 0.f : expf(mine - mx)));
    w = lse == kNegInf || mine == kNegInf ? 0.f : expf(mine - lse);
  }
  __device__ float weight(int part) const { return __shfl_sync(kFullMask, w, part); }
};

template <class T>
__global__ void merge_kernel(MergeArgs a) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const MergeRow row(a, r, lane);
  const int64_t d = a.head_dim;
  for (int64_t c0 = 0; c0 < d; c0 += 32) {
    const int64_t c = c0 + lane;
    float acc = 0.f;
    for (int i = 0; i < a.parts; ++i) {
      const float wi = row.weight(i);
      if (c < d) acc += wi * to_float(static_cast<const T*>(a.o[i])[r * d + c]);
    }
    if (c < d) static_cast<T*>(a.out)[r * d + c] = from_float<T>(acc);
  }
  if (lane == 0) a.lse_out[row.at] = row.lse;
}

template <class T>
__global__ void merge_backward_kernel(MergeArgs a) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const MergeRow row(a, r, lane);
  const int64_t d = a.head_dim;
  const T* go = static_cast<const T*>(a.dout) + r * d;
  const T* o = static_cast<const T*>(a.out) + r * d;
  float go_o = 0.f;
  for (int64_t c = lane; c < d; c += 32) go_o += to_float(go[c]) * to_float(o[c]);
  go_o = warp_sum(go_o);
  const float dl = a.dlse_out && row.lse != kNegInf ? a.dlse_out[row.at] : 0.f;
  for (int i = 0; i < a.parts; ++i) {
    const float wi = row.weight(i);
    const T* oi = static_cast<const T*>(a.o[i]) + r * d;
    T* goi = static_cast<T*>(a.do_parts[i]) + r * d;
    float go_oi = 0.f;
    for (int64_t c = lane; c < d; c += 32) {
      const float g = to_float(go[c]);
      goi[c] = from_float<T>(wi * g);
      go_oi += g * to_float(oi[c]);
    }
    go_oi = warp_sum(go_oi);
    if (lane == 0) a.dlse_parts[i][row.at] = wi * (go_oi - go_o + dl);
  }
}

MergeArgs merge_args(const cpu::AttentionMergeParams& p) {
  LN_CHECK(p.parts >= 1 && p.parts <= kMaxMergeParts, "[merge_attention] GPU merge takes 1 to ", kMaxMergeParts,
           " parts, got ", p.parts);
  MergeArgs a{};
  a.parts = static_cast<int>(p.parts);
  a.rows = p.batch * p.q_len * p.heads;
  a.q_len = p.q_len;
  a.heads = p.heads;
  a.head_dim = p.head_dim;
  for (int i = 0; i < a.parts; ++i) {
    a.o[i] = p.o[i];
    a.lse[i] = static_cast<const float*>(p.lse[i]);
  }
  a.out = p.out;
  a.lse_out = static_cast<float*>(p.lse_out);
  return a;
}

template <class F>
void dispatch_merge(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F32: f.template operator()<float>(); break;
    case DType::BF16: f.template operator()<__nv_bfloat16>(); break;
    case DType::F16: f.template operator()<__half>(); break;
    default: LN_CHECK(false, "[merge_attention] GPU merge takes f32, bf16 or f16 outputs, got ", dtype_name(dtype));
  }
}

constexpr int kMergeWarps = 8;

}  // namespace

void attention_merge(int device, const cpu::AttentionMergeParams& p) {
  MergeArgs a = merge_args(p);
  if (a.rows == 0) return;
  DeviceGuard guard(device);
  const auto blocks = static_cast<unsigned>((a.rows + kMergeWarps - 1) / kMergeWarps);
  dispatch_merge(p.dtype, [&]<class T>() { merge_kernel<T><<<blocks, kMergeWarps * 32, 0, stream(device)>>>(a); });
  LN_CUDA_CHECK_LAUNCH();
}

void attention_merge_backward(int device, const cpu::AttentionMergeBackwardParams& p) {
  MergeArgs a = merge_args(p.fwd);
  if (a.rows == 0) return;
  a.dout = p.dout;
  a.dlse_out = static_cast<const float*>(p.dlse_out);
  for (int i = 0; i < a.parts; ++i) {
    a.do_parts[i] = p.do_parts[i];
    a.dlse_parts[i] = static_cast<float*>(p.dlse_parts[i]);
  }
  DeviceGuard guard(device);
  const auto blocks = static_cast<unsigned>((a.rows + kMergeWarps - 1) / kMergeWarps);
  dispatch_merge(p.fwd.dtype,
                 [&]<class T>() { merge_backward_kernel<T><<<blocks, kMergeWarps * 32, 0, stream(device)>>>(a); });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
