#pragma once
// Attention with materialised scores, built from framework ops: the GPU path for f32 and f64
// operands, which the fused kernels (bf16/f16 tensor-core code and cuDNN) do not take. Query rows
// go in chunks so that a chunk's scores stay within a fixed budget; every mask of AttentionParams
// (causal with offset, key padding, block layout, block bias) is honoured. Internal to
// framework/ops/attention.cpp, which has already checked the operands.
#include "framework/ops/attention.h"

namespace longnet::detail {

/// Score elements per chunk of query rows (all batches and heads): 2^25 f32 values, 128 MiB.
inline constexpr int64_t kMathChunkElements = int64_t{1} << 25;

/// out (batch..., N, H, D) and lse (batch..., H, N) written (caller-owned, possibly strided views).
void math_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params,
                            const Tensor& out, const Tensor& lse, int64_t chunk_elements = kMathChunkElements);

/// The exact backward from the final out and lse, into `into` (overwritten, or added to when
/// `accumulate`); dblock_bias is always added to.
void math_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, const Tensor& dlse, const AttentionParams& params,
                             const AttentionGrads& into, bool accumulate,
                             int64_t chunk_elements = kMathChunkElements);

}  // namespace longnet::detail
