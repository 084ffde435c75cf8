#pragma once
// Losses.
#include "framework/core/tensor.h"

namespace longnet {

/// Fused log-softmax + negative log-likelihood. logits (N, C) or (..., C) with targets (N) or (...)
/// of i32/i64 class ids; targets equal to `ignore_index` contribute nothing. Returns the mean over
/// non-ignored targets as a () tensor in f32 (f64 for f64 logits); 0 when every target is ignored.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

}  // namespace longnet
