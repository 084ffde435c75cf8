#pragma once
// Device-side helpers shared by the CUDA kernels: numeric conversions of the storage types,
// strided geometry of elementwise loops, and launch sizes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "framework/core/dtype.h"
#include "framework/core/shape.h"

namespace longnet::cuda {

/// The type arithmetic on T is done in: float for all float types but f64, T itself otherwise.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double,
                                 std::conditional_t<std::is_floating_point_v<T> ||
                                                        std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>,
                                                    float, T>>;

/// Storage value -> arithmetic value.
template <class T>
__device__ __forceinline__ acc_t<T> load(T v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return __uint_as_float(static_cast<uint32_t>(v.bits) << 16);
  } else if constexpr (std::is_same_v<T, Half>) {
    return __half2float(__ushort_as_half(v.bits));
  } else {
    return v;
  }
}

/// Arithmetic value -> storage value (round to nearest even for 16-bit floats).
template <class T, class A>
__device__ __forceinline__ T store(A v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    T r;
    r.bits = __bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)));
    return r;
  } else if constexpr (std::is_same_v<T, Half>) {
    T r;
    r.bits = __half_as_ushort(__float2half_rn(static_cast<float>(v)));
    return r;
  } else if constexpr (std::is_same_v<T, bool>) {
    return v != A(0);
  } else {
    return static_cast<T>(v);
  }
}

/// Conversion between any two storage types on the device.
template <class To, class From>
__device__ __forceinline__ To convert_on_device(From v) {
  return store<To>(load<From>(v));
}

/// Calls f.template operator()<T>() with T the storage type of a float dtype (f32, f64, bf16, f16).
template <class F>
void dispatch_float_types(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::BF16: return f.template operator()<BFloat16>();
    case DType::F16: return f.template operator()<Half>();
    default: LN_FAIL("[", op, "] expected a float tensor, got ", dtype_name(t));
  }
}

/// Most dims an elementwise loop handles after merging contiguous dims.
inline constexpr int kMaxDims = 10;

/// Sizes and per-operand strides of an elementwise loop, passed to kernels by value.
template <int N>
struct Geometry {
  int ndim = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];

  /// Element offsets of every operand for linear index i (row-major over sizes).
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t idx = i % sizes[d];
      i /= sizes[d];
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
    }
  }
};

/// Builds the geometry of a loop over `shape`, merging dims that are contiguous for all operands.
template <int N>
Geometry<N> make_geometry(const Shape& shape, const std::array<const int64_t*, N>& strides) {
  Geometry<N> g;
  g.numel = numel_of(shape);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool fuse = g.ndim > 0;
    for (int k = 0; k < N && fuse; ++k) fuse = g.strides[k][g.ndim - 1] == strides[k][d] * shape[d];
    if (fuse) {
      g.sizes[g.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim - 1] = strides[k][d];
    } else {
      LN_CHECK(g.ndim < kMaxDims, "[cuda] tensors with more than ", kMaxDims, " non-mergeable dims");
      g.sizes[g.ndim] = shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim] = strides[k][d];
      ++g.ndim;
    }
  }
  return g;
}

/// True when every operand is contiguous over the merged loop (one dim of stride 1, or none).
template <int N>
bool is_flat(const Geometry<N>& g) {
  if (g.ndim > 1) return false;
  for (int k = 0; k < N && g.ndim == 1; ++k) {
    if (g.strides[k][0] != 1) return false;
  }
  return true;
}

/// Threads per block of the elementwise kernels.
inline constexpr int kBlock = 256;

/// Blocks for a grid-stride loop over n items with `per_thread` items each (capped; the loop
/// covers the rest).
inline unsigned grid_for(int64_t n, int per_thread = 1) {
  const int64_t blocks = (n + static_cast<int64_t>(kBlock) * per_thread - 1) / (kBlock * per_thread);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

}  // namespace longnet::cuda

namespace longnet::cuda {

/// Runs fn(offsets) for every index of a strided loop (grid-stride; offsets per operand).
template <int N, class Fn>
__global__ void strided_kernel(Geometry<N> g, Fn fn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[N];
    g.offsets(i, off);
    fn(off);
  }
}

/// Sixteen bytes of T, loaded and stored as one vector access.
template <class T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T) > 0 ? 16 / sizeof(T) : 1;
  T v[kSize];
};

/// True when p is 16-byte aligned (vector accesses allowed).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Runs fn.pack(i) for each whole 16-byte pack i of n contiguous elements and fn.one(j) for the
/// tail, so memory-bound kernels move 16 bytes per access.
template <class T, class Fn>
__global__ void packed_kernel(int64_t n, Fn fn) {
  constexpr int kVec = Pack<T>::kSize;
  const int64_t packs = n / kVec;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < packs; i += stride) fn.pack(i);
  for (int64_t j = packs * kVec + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += stride) {
    fn.one(j);
  }
}

}  // namespace longnet::cuda
