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
/// computed over chunks of `chunk_rows` rows so that no (rows, V) tensor outlives its chunk. x
/// (..., D) in a float compute dtype, weight (V, D) in the same dtype, targets (...) i32/i64 with
/// x's leading shape. Returns the same () loss as the composite (f32, f64 for f64 x; 0 when every
/// target is ignored), with the same treatment of bad targets. Each chunk's logits are computed
/// as linear() computes them, in the compute dtype; per-row log-sum-exps (f32, f64 for f64) are
/// all that is kept of them while the loss is summed.
///
/// Gradients are formed in the forward. When grad mode is on and x or weight requires grad, each
/// chunk's logits, once computed, become dlogits = (softmax - onehot) / count in place, and the
/// chunk's products follow at once: its rows of dx = dlogits @ W (in the compute dtype) and
/// dW += dlogits^T @ x (summed over chunks in f32, f64 for f64), so the logits are computed once
/// per step and the backward recomputes nothing. The recorded node keeps, instead of x, dx (x's
/// size and dtype, when x requires grad) and dW in f32 (V' x D x 4 bytes, V' below; x 8 for f64,
/// when weight requires grad), and its backward scales them by the upstream gradient g: for
/// g == 1 (loss.backward()) the gradients are handed out as formed (no pass over them, no host
/// read of g on a GPU; dW is only narrowed to V rows and cast to weight's dtype); for any other g
/// they are those of g = 1 times g, one more rounding than the composite's (exact in f64 up to
/// that product's rounding). If the loss is never differentiated, that work is wasted: compute an
/// evaluation loss under NoGradGuard, where no gradient work is done and nothing is recorded.
///
/// The products use the weight padded with zero rows to V' = V rounded up to a multiple of 8 (one
/// (V', D) copy per forward when V is not such a multiple), so that rows of logits and of the
/// weight gradient are 16-byte aligned for the GEMMs; the results are those of the unpadded
/// maths, and each chunk's block is (rows, V') with its pad columns 0.
/// chunk_rows 0 picks chunks of about 2^27 logits (256 MiB in bf16), a multiple of 64 rows.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index = -100,
                            int64_t chunk_rows = 0);

}  // namespace longnet
