#include "framework/cuda/rotary.h"

#include <algorithm>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

// V consecutive values moved as one access when kAlign is their size.
template <class T, int V, size_t kAlign>
struct alignas(kAlign) Pack {
  T v[V];
};

// a / b through 32-bit division when both fit (64-bit division is a long software routine and
// runs once per row here).
__device__ __forceinline__ int64_t quotient(int64_t a, int64_t b) {
  return ((a | b) >> 31) == 0 ? static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b)) : a / b;
}

// Rows (B * N * H) of 2 * half values; row r reads table row (r / heads) mod seq. Thread
// (tx, ty) takes rows ty, ty + blockDim.y, ... of its block's share (grid-stride) and in each the
// packs tx, tx + blockDim.x, ... of V values (V / 2 pairs). kVector: packs and their V / 2 table
// values are aligned to their size (one access each); otherwise values are read one by one.
template <class T, int V, bool kVector>
__global__ void rotary_kernel(const T* x, const acc_t<T>* cos, const acc_t<T>* sin, T* out, int64_t rows, int64_t seq,
                              int64_t heads, int64_t half, acc_t<T> sign) {
  using A = acc_t<T>;
  constexpr int kPairs = V / 2;
  using XPack = Pack<T, V, kVector ? V * sizeof(T) : alignof(T)>;
  using TPack = Pack<A, kPairs, kVector ? kPairs * sizeof(A) : alignof(A)>;
  const int64_t packs = 2 * half / V;
  for (int64_t r = blockIdx.x * int64_t(blockDim.y) + threadIdx.y; r < rows; r += int64_t(gridDim.x) * blockDim.y) {
    const int64_t token = quotient(r, heads);
    const int64_t n = token - quotient(token, seq) * seq;
    const auto* xr = reinterpret_cast<const XPack*>(x + r * 2 * half);
    auto* outr = reinterpret_cast<XPack*>(out + r * 2 * half);
    const auto* cr = reinterpret_cast<const TPack*>(cos + n * half);
    const auto* sr = reinterpret_cast<const TPack*>(sin + n * half);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const XPack xv = xr[j];
      const TPack c = cr[j], s = sr[j];
      XPack o;
#pragma unroll
      for (int e = 0; e < kPairs; ++e) {
        const A x0 = load(xv.v[2 * e]), x1 = load(xv.v[2 * e + 1]), se = sign * s.v[e];
        o.v[2 * e] = store<T>(x0 * c.v[e] - x1 * se);
        o.v[2 * e + 1] = store<T>(x1 * c.v[e] + x0 * se);
      }
      outr[j] = o;
    }
  }
}

bool aligned_to(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

}  // namespace

void rotate_pairs(int device, const cpu::RotaryParams& p) {
  const int64_t rows = p.batch * p.seq * p.heads, len = 2 * p.half;
  if (rows == 0 || len == 0) return;
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, "rotate_pairs", [&]<class T>() {
    using A = acc_t<T>;
    constexpr int kV = static_cast<int>(16 / sizeof(T));
    const bool vector = len % kV == 0 && aligned_to(p.x, 16) && aligned_to(p.out, 16) &&
                        aligned_to(p.cos, kV / 2 * sizeof(A)) && aligned_to(p.sin, kV / 2 * sizeof(A));
    const auto launch = [&]<int V, bool kVector>() {
      // A row's packs across x (up to a block), rows across y: short rows (D = 64 in bf16: 8
      // packs) still fill whole blocks.
      const int64_t packs = len / V;
      const unsigned tx = static_cast<unsigned>(std::min<int64_t>(packs, kBlock));
      const unsigned ty = std::max(1u, kBlock / tx);
      const int64_t blocks = std::min<int64_t>((rows + ty - 1) / ty, int64_t{1} << 30);
      rotary_kernel<T, V, kVector><<<static_cast<unsigned>(blocks), dim3(tx, ty), 0, stream(device)>>>(
          static_cast<const T*>(p.x), static_cast<const A*>(p.cos), static_cast<const A*>(p.sin),
          static_cast<T*>(p.out), rows, p.seq, p.heads, p.half, p.inverse ? A(-1) : A(1));
    };
    if (vector) {
      launch.template operator()<kV, true>();
    } else {
      launch.template operator()<2, false>();
    }
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
