#include "framework/cuda/reduce.h"

#include <limits>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"
#include "framework/cuda/device/reduce.cuh"

namespace longnet::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row (grid-stride over rows). Sums accumulate in double for f64, else f32 (int64
// for integers); max/argmax keep the first maximum, NaN winning like on the CPU.
template <class T, class A>
__global__ void reduce_rows_kernel(cpu::RowReduce op, const T* in, void* out, int64_t rows, int64_t len) {
  __shared__ A scratch[32];
  __shared__ int64_t at_scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * len;
    if (op == cpu::RowReduce::Sum) {
      A acc = 0;
      for (int64_t j = threadIdx.x; j < len; j += blockDim.x) acc += static_cast<A>(load(row[j]));
      acc = block_sum(acc, scratch);
      if (threadIdx.x == 0) static_cast<T*>(out)[r] = store<T>(acc);
      continue;
    }
    // Max / argmax / logsumexp: first find the maximum and its first index.
    A best = 0;
    int64_t at = -1;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
      const A v = static_cast<A>(load(row[j]));
      const bool v_nan = v != v, best_nan = best != best;
      if (at < 0 || (!best_nan && (v > best || v_nan))) {
        best = v;
        at = j;
      }
    }
    // Reduce (value, index) pairs: a thread-0-led tree over shared memory keeps the tie rule.
    for (int o = 16; o > 0; o >>= 1) {
      const A ov = __shfl_down_sync(0xffffffffu, best, o);
      const int64_t oat = __shfl_down_sync(0xffffffffu, at, o);
      const bool take = oat >= 0 && (at < 0 || (best == best && (ov > best || ov != ov)) ||
                                     (ov == best && oat < at));
      if (take) {
        best = ov;
        at = oat;
      }
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) {
      scratch[warp] = best;
      at_scratch[warp] = at;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < (blockDim.x + 31) / 32; ++w) {
        const A ov = scratch[w];
        const int64_t oat = at_scratch[w];
        const bool take = oat >= 0 && (at < 0 || (best == best && (ov > best || ov != ov)) ||
                                       (ov == best && oat < at));
        if (take) {
          best = ov;
          at = oat;
        }
      }
      scratch[0] = best;
      at_scratch[0] = at;
    }
    __syncthreads();
    best = scratch[0];
    at = at_scratch[0];
    if (op == cpu::RowReduce::Max) {
      if (threadIdx.x == 0) static_cast<T*>(out)[r] = store<T>(best);
    } else if (op == cpu::RowReduce::ArgMax) {
      if (threadIdx.x == 0) static_cast<int64_t*>(out)[r] = at < 0 ? 0 : at;
    } else if constexpr (!std::is_integral_v<A>) {
      A lse = best;
      if (isfinite(best)) {
        A acc = 0;
        for (int64_t j = threadIdx.x; j < len; j += blockDim.x) acc += exp(static_cast<A>(load(row[j])) - best);
        acc = block_sum(acc, scratch);
        lse = best + log(acc);
      }
      if (threadIdx.x == 0) static_cast<T*>(out)[r] = store<T>(lse);
    }
  }
}

}  // namespace

void reduce_rows(int device, cpu::RowReduce op, const cpu::RowReduceParams& p) {
  if (p.rows == 0) return;
  DeviceGuard guard(device);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(p.rows, 65535 * 4));
  auto run = [&]<class T, class A>() {
    reduce_rows_kernel<T, A><<<blocks, kThreads, 0, stream(device)>>>(op, static_cast<const T*>(p.in), p.out,
                                                                      p.rows, p.len);
  };
  switch (p.dtype) {
    case DType::F32: run.template operator()<float, float>(); break;
    case DType::F64: run.template operator()<double, double>(); break;
    case DType::BF16: run.template operator()<BFloat16, float>(); break;
    case DType::F16: run.template operator()<Half, float>(); break;
    case DType::I32: run.template operator()<int32_t, int64_t>(); break;
    case DType::I64: run.template operator()<int64_t, int64_t>(); break;
    default: LN_FAIL("[reduce] unsupported dtype ", dtype_name(p.dtype));
  }
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
