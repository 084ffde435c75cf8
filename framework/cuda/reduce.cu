#include "framework/cuda/reduce.h"

#include <algorithm>
#include <limits>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"
#include "framework/cuda/device/reduce.cuh"
#include "framework/cuda/scoped_buffer.h"

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

// Column sums: a block of kColLanes x kRowLanes threads covers kColLanes * VEC adjacent columns
// of one chunk of rows; each thread adds every kRowLanes-th row of the chunk (VEC columns per
// load), then the block adds its row lanes through shared memory. Writes, per (outer, chunk),
// the chunk's sums: the final result when there is one chunk, partials otherwise.
constexpr int kColLanes = 32, kRowLanes = 8;

template <class Tin, class Tout, class A, int VEC>
__global__ void __launch_bounds__(kColLanes* kRowLanes)
    sum_columns_kernel(const Tin* in, Tout* out, int64_t outer, int64_t len, int64_t inner, int64_t chunk_rows) {
  __shared__ A partial[kRowLanes][kColLanes * VEC];
  const int64_t c0 = (int64_t(blockIdx.x) * kColLanes + threadIdx.x) * VEC;
  const int64_t chunks = gridDim.y;
  const int64_t j0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t j1 = j0 + chunk_rows < len ? j0 + chunk_rows : len;
  for (int64_t o = blockIdx.z; o < outer; o += gridDim.z) {
    A acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = A(0);
    if (c0 < inner) {
      const Tin* base = in + o * len * inner + c0;
#pragma unroll 4
      for (int64_t j = j0 + threadIdx.y; j < j1; j += kRowLanes) {
        if constexpr (VEC == 1) {
          acc[0] += static_cast<A>(load(base[j * inner]));
        } else {
          const Pack<Tin> v = *reinterpret_cast<const Pack<Tin>*>(base + j * inner);
#pragma unroll
          for (int k = 0; k < VEC; ++k) acc[k] += static_cast<A>(load(v.v[k]));
        }
      }
    }
    __syncthreads();  // the previous outer slice's partials have been read
#pragma unroll
    for (int k = 0; k < VEC; ++k) partial[threadIdx.y][threadIdx.x * VEC + k] = acc[k];
    __syncthreads();
    for (int t = threadIdx.y * kColLanes + threadIdx.x; t < kColLanes * VEC; t += kColLanes * kRowLanes) {
      const int64_t c = int64_t(blockIdx.x) * kColLanes * VEC + t;
      if (c >= inner) continue;
      A sum = partial[0][t];
#pragma unroll
      for (int r = 1; r < kRowLanes; ++r) sum += partial[r][t];
      out[(o * chunks + blockIdx.y) * inner + c] = store<Tout>(sum);
    }
  }
}

// Columns one thread loads at once: a 16-byte pack when every row starts 16-byte aligned.
template <class T>
int column_vec(const T* in, int64_t inner) {
  constexpr int kVec = Pack<T>::kSize;
  return kVec > 1 && inner % kVec == 0 && aligned16(in) ? kVec : 1;
}

// Column blocks of a pass over `inner` columns loading `vec` columns per thread.
int64_t column_blocks(int64_t inner, int vec) {
  const int64_t cols = int64_t(kColLanes) * vec;
  return (inner + cols - 1) / cols;
}

// One pass of sum_columns_kernel over (outer, len, inner) with `chunks` chunks of rows.
template <class Tin, class Tout, class A>
void launch_sum_columns(int device, const Tin* in, Tout* out, int64_t outer, int64_t len, int64_t inner,
                        int64_t chunks) {
  const int vec = column_vec(in, inner);
  const dim3 grid(static_cast<unsigned>(column_blocks(inner, vec)), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
  const dim3 block(kColLanes, kRowLanes);
  const int64_t chunk_rows = (len + chunks - 1) / chunks;
  if (vec > 1) {
    sum_columns_kernel<Tin, Tout, A, Pack<Tin>::kSize>
        <<<grid, block, 0, stream(device)>>>(in, out, outer, len, inner, chunk_rows);
  } else {
    sum_columns_kernel<Tin, Tout, A, 1><<<grid, block, 0, stream(device)>>>(in, out, outer, len, inner, chunk_rows);
  }
  LN_CUDA_CHECK_LAUNCH();
}

// Chunks of rows per column: enough blocks to fill the GPU about once, each thread still adding
// at least 16 rows (fewer chunks also keep the second pass short); no chunk is left empty.
int64_t column_chunks(int device, int64_t outer, int64_t len, int64_t col_blocks) {
  constexpr int64_t kMinChunkRows = 16 * kRowLanes, kMaxChunks = 256;
  const int64_t target = 8 * int64_t(properties(device).multiProcessorCount);
  const int64_t have = col_blocks * std::min<int64_t>(outer, 65535);
  const int64_t chunks = std::min((target + have - 1) / have, std::min(kMaxChunks, len / kMinChunkRows));
  if (chunks <= 1) return 1;
  const int64_t chunk_rows = (len + chunks - 1) / chunks;
  return (len + chunk_rows - 1) / chunk_rows;
}

}  // namespace

void sum_columns(int device, const cpu::ColumnSumParams& p) {
  if (p.outer == 0 || p.inner == 0) return;
  DeviceGuard guard(device);
  auto run = [&]<class T, class A>() {
    const T* in = static_cast<const T*>(p.in);
    T* out = static_cast<T*>(p.out);
    const int64_t chunks =
        column_chunks(device, p.outer, p.len, column_blocks(p.inner, column_vec(in, p.inner)));
    if (chunks == 1) {
      launch_sum_columns<T, T, A>(device, in, out, p.outer, p.len, p.inner, 1);
      return;
    }
    // Partials (outer, chunks, inner) in the accumulation type, then their column sums.
    const ScopedBuffer partials(static_cast<size_t>(p.outer * chunks * p.inner) * sizeof(A), stream(device));
    A* ws = static_cast<A*>(partials.get());
    launch_sum_columns<T, A, A>(device, in, ws, p.outer, p.len, p.inner, chunks);
    launch_sum_columns<A, T, A>(device, ws, out, p.outer, chunks, p.inner, 1);
  };
  switch (p.dtype) {
    case DType::F32: return run.template operator()<float, float>();
    case DType::F64: return run.template operator()<double, double>();
    case DType::BF16: return run.template operator()<BFloat16, float>();
    case DType::F16: return run.template operator()<Half, float>();
    case DType::I32: return run.template operator()<int32_t, int64_t>();
    case DType::I64: return run.template operator()<int64_t, int64_t>();
    default: LN_FAIL("[reduce] unsupported dtype ", dtype_name(p.dtype));
  }
}

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
