#pragma once
// Losses.
#include "framework/core/tensor.h"

namespace longnet {

/// Fused log-softmax + negative log-likelihood. logits (N, C) or (..., C) with targets (N) or (...)
/// of i32/i64 class ids; targets equal to `ignore_index` contribute nothing. Returns the mean over
/// non-ignored targets as a () tensor in f32 (f64 for f64 logits); 0 when every target is ignored.
///
/// A target outside [0, C) that is not ignore_index: on the CPU an immediate error naming it. On
/// a GPU the check runs on the device and the host does not wait for it: the loss is NaN and the
/// gradient rows of the bad targets are NaN (the error shows at the next read of the loss or in
/// the parameters). Setting LONGNET_CHECK_TARGETS=1 in the environment makes GPU calls read the
/// check back and raise the CPU's error (a host synchronisation per call: for debugging).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

}  // namespace longnet
