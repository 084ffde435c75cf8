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

/// The LM head and its loss in one op: cross_entropy(linear(x, weight), targets, ignore_index),
/// computed over chunks of `chunk_rows` rows so that no (rows, V) tensor outlives its chunk, in
/// the forward or in the backward (which recomputes each chunk's logits). x (..., D) in a float
/// compute dtype, weight (V, D) in the same dtype, targets (...) i32/i64 with x's leading shape.
/// Returns the same () loss as the composite (f32, f64 for f64 x; 0 when every target is
/// ignored), with the same treatment of bad targets. Each chunk's logits are computed as linear()
/// computes them, in the compute dtype; per-row log-sum-exps (f32, f64 for f64) are all that is
/// kept of them. The weight gradient is accumulated over chunks in f32 for 16-bit dtypes.
/// The products use the weight padded with zero rows to V rounded up to a multiple of 8 (one
/// (V', D) copy per forward and per backward when V is not such a multiple), so that rows of
/// logits and of the weight gradient are 16-byte aligned for the GEMMs; the results are those of
/// the unpadded maths, and each chunk's block is (rows, V') with its pad columns 0.
/// chunk_rows 0 picks chunks of about 2^27 logits (256 MiB in bf16), a multiple of 64 rows.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index = -100,
                            int64_t chunk_rows = 0);

}  // namespace longnet
