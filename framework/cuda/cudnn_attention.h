#pragma once
// Dense attention parts through cuDNN's fused flash attention (the SDPA graphs of its backend
// API). cuDNN expresses plain and causal attention over strided bf16/f16 operands; masks by key
// padding, block layouts, block biases, shifted causal diagonals and lse gradients stay with our
// own kernels, which the caller runs whenever these return false.
#include <cuda_runtime.h>

#include "framework/cpu/attention.h"

namespace longnet::cuda {

/// Runs the forward through cuDNN when it can express it; false when it cannot (nothing written).
bool cudnn_attention_forward(int device, const cpu::AttentionForwardParams& p);
/// Runs the backward through cuDNN when it can express it; false when it cannot.
bool cudnn_attention_backward(int device, const cpu::AttentionBackwardParams& p);

/// Strided helpers for the cuDNN path (cudnn_attention_kernels.cu).
namespace detail {
/// A (batch, rows, heads) f32 statistics view: element at data + b*batch + r*row + h*head.
struct Strided4 {
  void* data = nullptr;
  int64_t batch = 0, row = 0, head = 0;
};
/// dst = src over (batch, heads, rows) of f32 statistics.
void copy_stats(int64_t batch, int64_t heads, int64_t rows, Strided4 dst, Strided4 src, cudaStream_t stream);
/// dst (+)= src over (batch..., rows, heads, head_dim) operands of `dtype` (bf16/f16) shaped as
/// `s` says, `rows` long; adds when `accumulate` (in f32), else copies.
void scatter_rows(DType dtype, const cpu::AttentionShape& s, int64_t rows, const cpu::AttentionView& dst,
                  const cpu::AttentionView& src, bool accumulate, cudaStream_t stream);
}  // namespace detail

}  // namespace longnet::cuda
