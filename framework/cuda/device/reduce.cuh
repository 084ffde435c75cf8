#pragma once
// Block-wide reductions for kernels that give one block (or one warp) to each row.
#include <cuda_runtime.h>

#include <cmath>

namespace longnet::cuda {

/// Sum over a warp (every lane gets the result).
template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Max over a warp (every lane gets the result).
template <class A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

/// Sum over the block; `scratch` holds 32 values. Every thread gets the result.
template <class A>
__device__ __forceinline__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = lane < warps ? scratch[lane] : A(0);
  return warp_sum(v);
}

/// Max over the block; `scratch` holds 32 values. Every thread gets the result.
template <class A>
__device__ __forceinline__ A block_max(A v, A* scratch, A lowest) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = lane < warps ? scratch[lane] : lowest;
  return warp_max(v);
}

}  // namespace longnet::cuda
