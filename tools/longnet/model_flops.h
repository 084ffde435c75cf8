#pragma once
// Model FLOPs of a training step, counted the standard way: 6 x parameters x tokens for the
// matrix products, plus attention (forward 4 D per attended (query, key) pair, causal; backward
// 2.5x forward), where each core counts only the pairs it computes. Shared by `bench model` and
// the trainer's MFU.
#include <cstdint>
#include <string>

#include "layers/attention/core.h"
#include "models/config.h"

namespace longnet::tools {

/// Dense bf16 peak of an H100 SXM, the denominator of MFU.
inline constexpr double kPeakBf16Tflops = 989.0;
/// Backward FLOPs per forward FLOP of attention.
inline constexpr double kAttentionBackwardFactor = 2.5;

/// The (query, key) pairs, over all heads, that one causal call of `core` on n rows computes:
/// dense, dilated (per branch and head), block_sparse (its layout) and adaptive (kept blocks);
/// any other core counts as dense.
double attended_pairs(const std::string& core, const AttentionConfig& config, int64_t n, int64_t heads);

/// Attention FLOPs (forward and backward) of one training step over (batch, n) tokens.
double attention_training_flops(const longnet::ModelConfig& config, int64_t batch, int64_t n);

/// Model FLOPs of one training step: 6 x parameters x tokens + attention_training_flops.
double training_step_flops(const longnet::ModelConfig& config, int64_t parameters, int64_t batch, int64_t n);

}  // namespace longnet::tools
