#include "framework/cuda/check.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda::detail {
namespace {

constexpr int kThreads = 256;

__global__ void copy_stats_kernel(int64_t batch, int64_t heads, int64_t rows, Strided4 dst, Strided4 src) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= batch * heads * rows) return;
  const int64_t r = e % rows, h = (e / rows) % heads, b = e / (rows * heads);
  static_cast<float*>(dst.data)[b * dst.batch + h * dst.head + r * dst.row] =
      static_cast<const float*>(src.data)[b * src.batch + h * src.head + r * src.row];
}

// Offsets of a flat batch index into the leading dims of two views.
struct BatchIndex {
  int dims = 0;
  int64_t sizes[cpu::kAttentionMaxBatchDims] = {};
  int64_t dst[cpu::kAttentionMaxBatchDims] = {};
  int64_t src[cpu::kAttentionMaxBatchDims] = {};
};

// One thread per 8 consecutive head-dim values (head_dim is a multiple of 8 on this path).
template <class T>
__global__ void scatter_rows_kernel(BatchIndex bi, int64_t total, int64_t rows, int64_t heads, int64_t packs,
                                    cpu::AttentionView dst, cpu::AttentionView src, bool accumulate) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= total) return;
  const int64_t pk = e % packs, h = (e / packs) % heads, r = (e / (packs * heads)) % rows;
  int64_t flat = e / (packs * heads * rows), od = 0, os = 0;
  for (int i = bi.dims - 1; i >= 0; --i) {
    const int64_t idx = flat % bi.sizes[i];
    flat /= bi.sizes[i];
    od += idx * bi.dst[i];
    os += idx * bi.src[i];
  }
  T* d = static_cast<T*>(dst.data) + od + r * dst.row + h * dst.head + pk * 8;
  const T* s = static_cast<const T*>(src.data) + os + r * src.row + h * src.head + pk * 8;
#pragma unroll
  for (int i = 0; i < 8; ++i) d[i] = accumulate ? store<T>(load(d[i]) + load(s[i])) : s[i];
}

unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void copy_stats(int64_t batch, int64_t heads, int64_t rows, Strided4 dst, Strided4 src, cudaStream_t stream) {
  const int64_t n = batch * heads * rows;
  if (n == 0) return;
  copy_stats_kernel<<<blocks(n), kThreads, 0, stream>>>(batch, heads, rows, dst, src);
  LN_CUDA_CHECK_LAUNCH();
}

void scatter_rows(DType dtype, const cpu::AttentionShape& s, int64_t rows, const cpu::AttentionView& dst,
                  const cpu::AttentionView& src, bool accumulate, cudaStream_t stream) {
  BatchIndex bi;
  bi.dims = s.batch_dims;
  for (int i = 0; i < s.batch_dims; ++i) {
    bi.sizes[i] = s.batch_sizes[i];
    bi.dst[i] = dst.batch[i];
    bi.src[i] = src.batch[i];
  }
  const int64_t packs = s.head_dim / 8, total = s.batch() * rows * s.heads * packs;
  if (total == 0) return;
  dispatch_float_types(dtype, "attention_backward", [&]<class T>() {
    scatter_rows_kernel<T><<<blocks(total), kThreads, 0, stream>>>(bi, total, rows, s.heads, packs, dst, src,
                                                                   accumulate);
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda::detail
