#include "framework/cuda/embedding.h"

#include <cub/device/device_radix_sort.cuh>

#include <limits>

#include "framework/core/tensor.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

// One 16-byte pack of a row per thread: pack k of output row r comes from pack k of the table
// row ids[r]. row_packs = D / pack size; table_row_packs = the table's row stride in packs.
template <class T, class I>
__global__ void embedding_packed_kernel(const Pack<T>* weight, int64_t table_row_packs, const I* ids,
                                        Pack<T>* out, int64_t n, int64_t row_packs) {
  const int64_t total = n * row_packs;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_packs, k = i - r * row_packs;
    out[i] = weight[static_cast<int64_t>(ids[r]) * table_row_packs + k];
  }
}

template <class T, class I>
__global__ void embedding_kernel(const T* weight, int64_t row_stride, int64_t col_stride, const I* ids,
                                 T* out, int64_t n, int64_t dim) {
  const int64_t total = n * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / dim, d = i - r * dim;
    out[i] = weight[static_cast<int64_t>(ids[r]) * row_stride + d * col_stride];
  }
}

// Sort input: keys are the ids, values their positions.
template <class I>
__global__ void sort_input_kernel(const I* ids, int64_t n, uint32_t* keys, int32_t* positions) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = static_cast<uint32_t>(ids[i]);
    positions[i] = static_cast<int32_t>(i);
  }
}

// For each id v present, its run [first[v], end[v]) of the sorted keys; ids absent keep the
// zeros the caller filled in, an empty run.
__global__ void run_bounds_kernel(const uint32_t* keys, int64_t n, int32_t* first, int32_t* end) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t k = keys[i];
    if (i == 0 || keys[i - 1] != k) first[k] = static_cast<int32_t>(i);
    if (i == n - 1 || keys[i + 1] != k) end[k] = static_cast<int32_t>(i + 1);
  }
}

// Rows a thread loads before adding any: the adds stay in position order (bitwise the CPU's
// sums) while a hot id's rows come from memory several at a time.
constexpr int kAhead = 4;

// Block (x, y) owns rows v = x, x + gridDim.x, ... of grad_weight and columns
// [y * blockDim.x, (y + 1) * blockDim.x); each thread sums one column over the rows of id v in
// sorted (= increasing position) order. The run bounds replace a search of the sorted keys per
// row, which cost more than the sums themselves.
template <class T>
__global__ void embedding_backward_kernel(T* grad_weight, const T* grad_out, const int32_t* positions,
                                          const int32_t* first, const int32_t* end, int64_t vocab,
                                          int64_t dim) {
  const int64_t d = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (d >= dim) return;
  for (int64_t v = blockIdx.x; v < vocab; v += gridDim.x) {
    int64_t k = first[v];
    const int64_t last = end[v];
    acc_t<T> acc = 0;
    for (; k + kAhead <= last; k += kAhead) {
      acc_t<T> x[kAhead];
#pragma unroll
      for (int j = 0; j < kAhead; ++j) x[j] = load(grad_out[static_cast<int64_t>(positions[k + j]) * dim + d]);
#pragma unroll
      for (int j = 0; j < kAhead; ++j) acc += x[j];
    }
    for (; k < last; ++k) acc += load(grad_out[static_cast<int64_t>(positions[k]) * dim + d]);
    grad_weight[v * dim + d] = store<T>(acc);
  }
}

// Bits that hold every id below `vocab` (at least 1), so the sort skips the always-zero ones.
int key_bits(int64_t vocab) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) < vocab) ++bits;
  return bits;
}

}  // namespace

void embedding(int device, const cpu::EmbeddingParams& p) {
  if (p.n == 0 || p.dim == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  dispatch_index(p.id_dtype, "embedding", [&]<class I>() {
    dispatch_all(p.dtype, "embedding", [&]<class T>() {
      constexpr int64_t kVec = Pack<T>::kSize;
      const I* ids = static_cast<const I*>(p.ids);
      const bool packed = p.col_stride == 1 && p.dim % kVec == 0 && p.row_stride % kVec == 0 &&
                          aligned16(p.weight) && aligned16(p.out);
      if (packed) {
        const int64_t row_packs = p.dim / kVec;
        embedding_packed_kernel<T, I><<<grid_for(p.n * row_packs), kBlock, 0, s>>>(
            static_cast<const Pack<T>*>(p.weight), p.row_stride / kVec, ids, static_cast<Pack<T>*>(p.out),
            p.n, row_packs);
      } else {
        embedding_kernel<T, I><<<grid_for(p.n * p.dim), kBlock, 0, s>>>(
            static_cast<const T*>(p.weight), p.row_stride, p.col_stride, ids, static_cast<T*>(p.out), p.n,
            p.dim);
      }
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void embedding_backward(int device, const cpu::EmbeddingBackwardParams& p) {
  if (p.vocab == 0 || p.dim == 0) return;
  LN_CHECK(p.n <= std::numeric_limits<int32_t>::max() && p.vocab <= std::numeric_limits<int32_t>::max(),
           "[embedding] the CUDA backward needs fewer than 2^31 ids and rows, got ", p.n, " ids and V = ",
           p.vocab);
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  const Device dev = Device::cuda(device);
  const int n = static_cast<int>(p.n);
  // Sorted (id, position) pairs; with no ids every row is simply zero.
  const Tensor keys = Tensor::empty({2, p.n}, DType::I32, dev);
  const Tensor positions = Tensor::empty({2, p.n}, DType::I32, dev);
  auto* keys_in = static_cast<uint32_t*>(keys.raw_data());
  auto* keys_out = keys_in + p.n;
  auto* pos_in = static_cast<int32_t*>(positions.raw_data());
  auto* pos_out = pos_in + p.n;
  if (n > 0) {
    dispatch_index(p.id_dtype, "embedding", [&]<class I>() {
      sort_input_kernel<I>
          <<<grid_for(p.n), kBlock, 0, s>>>(static_cast<const I*>(p.ids), p.n, keys_in, pos_in);
    });
    LN_CUDA_CHECK_LAUNCH();
    const int bits = key_bits(p.vocab);
    size_t scratch_bytes = 0;
    LN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, scratch_bytes, keys_in, keys_out, pos_in, pos_out,
                                                  n, 0, bits, s));
    const Tensor scratch =
        Tensor::empty({static_cast<int64_t>(scratch_bytes > 0 ? scratch_bytes : 1)}, DType::U8, dev);
    LN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch.raw_data(), scratch_bytes, keys_in, keys_out,
                                                  pos_in, pos_out, n, 0, bits, s));
  }
  // Run bounds per id, zero (an empty run) for ids that do not occur.
  const Tensor bounds = Tensor::empty({2, p.vocab}, DType::I32, dev);
  auto* first = static_cast<int32_t*>(bounds.raw_data());
  auto* end = first + p.vocab;
  LN_CUDA_CHECK(cudaMemsetAsync(first, 0, static_cast<size_t>(2 * p.vocab) * sizeof(int32_t), s));
  if (n > 0) {
    run_bounds_kernel<<<grid_for(p.n), kBlock, 0, s>>>(keys_out, p.n, first, end);
    LN_CUDA_CHECK_LAUNCH();
  }
  constexpr int kThreads = 128;
  // A few vocabulary rows per block: most rows are empty, and a block per row costs more in
  // scheduling than its loads of two bounds and one store.
  constexpr int64_t kRowsPerBlock = 8;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((p.vocab + kRowsPerBlock - 1) / kRowsPerBlock,
                                                          std::numeric_limits<int32_t>::max())),
                  static_cast<unsigned>((p.dim + kThreads - 1) / kThreads));
  LN_CHECK(grid.y <= 65535, "[embedding] D = ", p.dim, " is too wide for the CUDA backward");
  auto run = [&]<class T>() {
    embedding_backward_kernel<T><<<grid, kThreads, 0, s>>>(static_cast<T*>(p.grad_weight),
                                                           static_cast<const T*>(p.grad_out), pos_out,
                                                           first, end, p.vocab, p.dim);
  };
  switch (p.dtype) {
    case DType::F32: run.template operator()<float>(); break;
    case DType::F64: run.template operator()<double>(); break;
    case DType::BF16: run.template operator()<BFloat16>(); break;
    case DType::F16: run.template operator()<Half>(); break;
    default: LN_FAIL("[embedding] backward expects a float gradient, got ", dtype_name(p.dtype));
  }
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
